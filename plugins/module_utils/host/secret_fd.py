# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Hand a secret to a child process (qemu-img, QEMU) without a name on any filesystem.

The secret sits in an anonymous memory file (memfd) or, where the kernel has none, in a
pipe; the child inherits the descriptor (``pass_fds``) and reads ``/proc/self/fd/N``. It is
never in argv, and when the module is killed nothing is left behind to clean up: the
memory goes with the last process that holds the descriptor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Iterator

PIPE_MAX = 65536  # what a pipe holds without a reader (Linux default)


@dataclasses.dataclass(frozen=True)
class SecretFd:
    fd: int

    @property
    def path(self) -> str:
        """Where the child reads it: its own copy of the descriptor, same number."""
        return "/proc/self/fd/%d" % self.fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@contextlib.contextmanager
def secret_fd(secret: str) -> Iterator[SecretFd]:
    """A descriptor holding ``secret`` (no newline: QEMU reads the file whole), closed on exit."""
    data = secret.encode("utf-8")
    memfd_create = getattr(os, "memfd_create", None)
    fd = None
    if memfd_create is not None:
        with contextlib.suppress(OSError):
            fd = memfd_create("infinivirt-secret", getattr(os, "MFD_CLOEXEC", 1))
    if fd is not None:
        try:
            _write_all(fd, data)
            yield SecretFd(fd)  # a new open of /proc/self/fd/N reads from the start
        finally:
            os.close(fd)
        return
    if len(data) > PIPE_MAX:
        raise ValueError("a secret of more than %d bytes needs memfd_create" % PIPE_MAX)
    read_end, write_end = os.pipe()
    try:
        _write_all(write_end, data)
        os.close(write_end)
        write_end = None
        yield SecretFd(read_end)
    finally:
        os.close(read_end)
        if write_end is not None:
            os.close(write_end)
