# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A file fetched over HTTP(S) with urllib: resumed with a Range request (or started again)
after a dropped connection, for a bounded number of attempts, checked against its SHA-256
digest, and only then renamed to its name. A failed download leaves nothing behind.

Messages name the URL as the caller shows it (without credentials or query string)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from typing import Any, Optional

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host.paths import ConfinedDir

ATTEMPTS = 5
TIMEOUT = 60.0  # seconds without a byte before an attempt is given up
_CHUNK = 1 << 20
_PAUSE = 0.5  # seconds, times the attempt number, between attempts
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def sha256_of_fd(fd: int) -> str:
    """The SHA-256 of the whole file open as ``fd`` (read with pread: the offset stays)."""
    digest = hashlib.sha256()
    offset = 0
    while True:
        chunk = os.pread(fd, _CHUNK, offset)
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)
        offset += len(chunk)


class _Restart(Exception):
    """The server did not continue where the file ends: the next attempt starts afresh."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _body_start(resp: Any, offset: int) -> int:
    """Where the body goes in the file: ``offset`` for the answer to a Range request, 0 for
    the whole file (a server may ignore Range)."""
    if resp.status == 206:
        match = _CONTENT_RANGE_RE.fullmatch((resp.headers.get("Content-Range") or "").strip())
        if match is None or int(match.group(1)) != offset:
            raise _Restart()
        return offset
    return 0


def _get(url: str, fd: int, timeout: float) -> bool:
    """One attempt: append to the file what the server sends; True when it is complete (as
    long as Content-Length said, or the server ended the body properly)."""
    # Imported with the first download: a task that fetches nothing pays nothing. Plain
    # urllib, not Ansible's open_url: nothing below ansible_binding.py imports Ansible.
    import urllib.request

    offset = os.fstat(fd).st_size
    headers = {"User-Agent": "infinivirt", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = "bytes=%d-" % offset
    opener = urllib.request.build_opener()  # proxies from the environment, redirects, TLS verified
    with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
        start = _body_start(resp, offset)
        os.ftruncate(fd, start)
        os.lseek(fd, start, os.SEEK_SET)
        length = resp.headers.get("Content-Length")
        expected = start + int(length) if length and length.isdigit() else None
        while True:
            chunk = resp.read(_CHUNK)
            if not chunk:
                break
            _write_all(fd, chunk)
    return expected is None or os.fstat(fd).st_size >= expected


def _fetch_into(url: str, shown: str, fd: int, attempts: int, timeout: float) -> None:
    import http.client
    import urllib.error

    last = "no attempt was made"
    for attempt in range(attempts):
        try:
            if _get(url, fd, timeout):
                return
            last = "the connection closed after %d bytes" % os.fstat(fd).st_size
        except _Restart:
            os.ftruncate(fd, 0)
            last = "the server did not resume where the download stopped"
        except urllib.error.HTTPError as exc:
            if exc.code == 416:  # what we have does not fit the file any more: start afresh
                os.ftruncate(fd, 0)
            elif exc.code < 500 and exc.code not in (408, 429):  # those two are worth another try
                raise SpecError(
                    "source", "%s cannot be downloaded: HTTP %d %s" % (shown, exc.code, exc.reason)
                ) from None
            last = "HTTP %d %s" % (exc.code, exc.reason)
        except urllib.error.URLError as exc:
            last = str(getattr(exc.reason, "strerror", None) or exc.reason)
        except (OSError, http.client.HTTPException) as exc:
            last = "%s: %s" % (type(exc).__name__, getattr(exc, "strerror", None) or exc)
        if attempt + 1 < attempts:
            time.sleep(_PAUSE * (attempt + 1))
    raise SpecError("source", "%s could not be downloaded (%d attempts): %s" % (shown, attempts, last))


def download(
    url: str,
    shown: str,
    directory: ConfinedDir,
    name: str,
    sha256: Optional[str],
    attempts: int = ATTEMPTS,
    timeout: float = TIMEOUT,
) -> None:
    """Fetch ``url`` into ``directory``/``name``. The bytes go to a hidden ``.part`` file
    first, which becomes ``name`` (fsync, rename) only once complete and, with ``sha256``,
    matching it. The caller holds a lock for ``name`` (the ``.part`` name is one per name)."""
    part = ".%s.part" % name
    with contextlib.suppress(FileNotFoundError):
        directory.unlink(part)  # left by a task that was killed
    with directory.open_file(part, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600) as tmp:
        try:
            _fetch_into(url, shown, tmp.fd, attempts, timeout)
            digest = sha256_of_fd(tmp.fd)
            if sha256 is not None and digest != sha256:
                raise SpecError(
                    "checksum",
                    "the download of %s has sha256:%s, not the sha256:%s given; nothing was kept"
                    % (shown, digest, sha256),
                )
            os.fsync(tmp.fd)
            directory.rename(part, name)
            directory.fsync()
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()  # still there only if the rename did not happen
