# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Secrets encrypted at rest (display passwords, later LUKS keys) with AES-256-GCM.

A token is one line of text that fits a TEXT column of SQLite or PostgreSQL::

    iv1:<key id>:<base64 nonce>:<base64 ciphertext+tag>

``iv1`` is the format version; the key id is the first 16 hex digits of
sha256(b"infinivirt-key-id" + key), so a token says which key sealed it without saying
anything about the key. The associated data binds the version, the key id and a caller
``context`` (e.g. ``"<vm uuid>/graphic_password"``): a token copied to another row or
field, or edited anywhere, fails to decrypt. Messages never carry plaintext or key bytes.

The key is 32 random bytes, read from ``INFINIVIRT_SECRET_KEY`` (base64) or from a 0600
key file that the first use creates.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import os
import stat
from typing import Iterable, List, Mapping, Optional, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError

DEFAULT_KEY_FILE = "/var/lib/infinivirt/secret.key"
KEY_ENV = "INFINIVIRT_SECRET_KEY"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
TOKEN_VERSION = "iv1"
MASK = "********"

_KEY_ID_SALT = b"infinivirt-key-id"
_AAD_PREFIX = b"infinivirt-secret\x00"
# Refuse absurd inputs before base64-decoding them (a display password or a LUKS key
# is a few hundred bytes at most).
_MAX_TOKEN_CHARS = 1 << 20
# The most plaintext a token that decrypt accepts can hold: base64 makes a token about 4/3 of
# it. Options sealed whole (cloud_init, unattend) are checked against it before anything is
# stored, and encrypt refuses more, so no sealed value can be stored that never opens.
MAX_PLAINTEXT_BYTES = 760_000


class SecretError(InfinivirtError):
    """A secret or the key that protects it is missing, malformed, wrong or tampered with.

    The message names the key id, file, variable or context at fault, never a secret.
    """


def key_id(key: bytes) -> str:
    """The public name of a key: 16 hex digits of a salted SHA-256, never the key."""
    return hashlib.sha256(_KEY_ID_SALT + bytes(key)).hexdigest()[:16]


def generate_key() -> bytes:
    """A fresh random 32-byte key."""
    return os.urandom(KEY_BYTES)


def encode_key(key: bytes) -> str:
    """The text form used by the key file and ``INFINIVIRT_SECRET_KEY`` (standard base64)."""
    _check_key(key)
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str, source: str) -> bytes:
    """Decode a base64 (standard or urlsafe, padding optional) 32-byte key.

    ``source`` names where the text came from, for the error message; the text itself
    never appears in it.
    """
    compact = "".join(text.split())
    if not compact:
        raise SecretError("%s is empty; it must hold a base64-encoded %d-byte key" % (source, KEY_BYTES))
    compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        key = base64.b64decode(compact.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise SecretError(
            "%s is not valid base64; it must hold a base64-encoded %d-byte key" % (source, KEY_BYTES)
        ) from None
    if len(key) != KEY_BYTES:
        raise SecretError(
            "%s decodes to %d bytes; the key must be exactly %d bytes (base64 of %d random bytes)"
            % (source, len(key), KEY_BYTES, KEY_BYTES)
        )
    return key


def _check_key(key: bytes) -> None:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
        raise SecretError(
            "a secret key must be exactly %d bytes, got %s"
            % (KEY_BYTES, "%d bytes" % len(key) if isinstance(key, (bytes, bytearray)) else type(key).__name__)
        )


def _b64decode_strict(text: str) -> bytes:
    """Standard base64 that has exactly one spelling: re-encoding must give the input back.

    Without that check the unused low bits of the last character would let a changed token
    decrypt to the same secret.
    """
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("non-canonical base64")
    return raw


def _parse_token(token: str) -> Tuple[str, bytes, bytes]:
    """(key id, nonce, ciphertext+tag) of a token, or SecretError saying what is wrong."""
    if not isinstance(token, str):
        raise SecretError("a secret token must be text, got %s" % type(token).__name__)
    if len(token) > _MAX_TOKEN_CHARS:
        raise SecretError("the secret token is malformed: longer than %d characters" % _MAX_TOKEN_CHARS)
    parts = token.split(":")
    if len(parts) != 4:
        raise SecretError(
            "the secret token is malformed: expected %s:<key id>:<nonce>:<ciphertext>, "
            "got %d field(s)" % (TOKEN_VERSION, len(parts))
        )
    version, kid, nonce_b64, ct_b64 = parts
    if version != TOKEN_VERSION:
        # The version is ours to print; anything else may be a pasted plaintext.
        raise SecretError(
            "the secret token is malformed or from an unknown format version (this code reads %s)" % TOKEN_VERSION
        )
    if len(kid) != 16 or any(c not in "0123456789abcdef" for c in kid):
        raise SecretError("the secret token is malformed: the key id is not 16 lowercase hex digits")
    try:
        nonce = _b64decode_strict(nonce_b64)
        sealed = _b64decode_strict(ct_b64)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise SecretError("the secret token is malformed: nonce or ciphertext is not canonical base64") from None
    if len(nonce) != NONCE_BYTES:
        raise SecretError("the secret token is malformed: the nonce is %d bytes, not %d" % (len(nonce), NONCE_BYTES))
    if len(sealed) < TAG_BYTES:
        raise SecretError("the secret token is malformed: the ciphertext is shorter than the %d-byte tag" % TAG_BYTES)
    return kid, nonce, sealed


def token_key_id(token: str) -> str:
    """The id of the key that sealed ``token`` (to find rows a rotation has not reached)."""
    return _parse_token(token)[0]


def _aad(kid: str, context: str) -> bytes:
    if not isinstance(context, str):
        raise SecretError("a secret context must be text, got %s" % type(context).__name__)
    return (
        _AAD_PREFIX + TOKEN_VERSION.encode("ascii") + b"\x00" + kid.encode("ascii") + b"\x00" + context.encode("utf-8")
    )


class SecretBox:
    """Seal and open text secrets with one AES-256-GCM key.

    ``context`` names the place a secret belongs to (``"<vm uuid>/graphic_password"``);
    it is authenticated, not stored, so the caller passes the same context to decrypt.
    """

    def __init__(self, key: bytes):
        # Imported here: only a task that seals or opens a secret pays for cryptography.
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            raise SecretError("the Python library cryptography is required to encrypt secrets") from None
        _check_key(key)
        self._aead = AESGCM(bytes(key))
        self.key_id = key_id(bytes(key))

    def __repr__(self) -> str:
        return "SecretBox(key_id=%s)" % self.key_id

    def encrypt(self, plaintext: str, context: str) -> str:
        if not isinstance(plaintext, str):
            raise SecretError("a secret must be text, got %s" % type(plaintext).__name__)
        data = plaintext.encode("utf-8")
        if len(data) > MAX_PLAINTEXT_BYTES:
            raise SecretError(
                "a secret of %d bytes is more than one token holds (%d)" % (len(data), MAX_PLAINTEXT_BYTES)
            )
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, data, _aad(self.key_id, context))
        return "%s:%s:%s:%s" % (
            TOKEN_VERSION,
            self.key_id,
            base64.b64encode(nonce).decode("ascii"),
            base64.b64encode(sealed).decode("ascii"),
        )

    def decrypt(self, token: str, context: str) -> str:
        kid, nonce, sealed = _parse_token(token)
        if kid != self.key_id:
            raise SecretError(
                "the secret for %r was encrypted with key id %s but the loaded key is %s; "
                "load the key that sealed it (%s or the key file), or rotate the secrets "
                "to the current key" % (context, kid, self.key_id, KEY_ENV)
            )
        from cryptography.exceptions import InvalidTag  # loaded with AESGCM in __init__

        try:
            plain = self._aead.decrypt(nonce, sealed, _aad(kid, context))
        except InvalidTag:
            raise SecretError(
                "the secret for %r failed authentication: the token was altered, or it "
                "belongs to another record or field than %r" % (context, context)
            ) from None
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:  # authenticated, so only a foreign writer gets here
            raise SecretError("the secret for %r is not UTF-8 text" % (context,)) from None


def rotate(tokens: Iterable[Tuple[str, str]], old: SecretBox, new: SecretBox) -> List[str]:
    """Re-encrypt (token, context) pairs from ``old`` to ``new``, in order, all or nothing.

    A token already sealed by ``new`` is verified and re-sealed, so a rotation repeated after
    a crash between the database commit and the key swap still succeeds. Any other failure
    raises SecretError (naming the position and context) before anything is returned.
    """
    out: List[str] = []
    for index, pair in enumerate(tokens):
        try:
            token, context = pair
        except (TypeError, ValueError):
            raise SecretError("rotate: item %d is not a (token, context) pair" % index) from None
        box = new if _parse_token_key_id_or_none(token) == new.key_id else old
        try:
            plaintext = box.decrypt(token, context)
        except SecretError as exc:
            raise SecretError(
                "rotate: item %d (%r) cannot be decrypted, nothing was re-encrypted: %s" % (index, context, exc)
            ) from None
        out.append(new.encrypt(plaintext, context))
    return out


def _parse_token_key_id_or_none(token: str) -> Optional[str]:
    try:
        return token_key_id(token)
    except SecretError:
        return None


def mask(value):
    """What a diff or a result shows instead of a secret."""
    return MASK if value else value


# ---------------------------------------------------------------------------- key loading


def load_or_create_key(key_file: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> bytes:
    """The 32-byte key: from ``INFINIVIRT_SECRET_KEY`` if set, else from ``key_file``.

    An existing key file must be a regular file (not a symlink) owned by the current user
    with no permission bits beyond 0600. A missing one is created with a fresh random key;
    when several processes race to create it, all of them return the winner's key.
    """
    env = os.environ if env is None else env
    if KEY_ENV in env:
        return decode_key(env[KEY_ENV], "environment variable %s" % KEY_ENV)
    path = key_file or DEFAULT_KEY_FILE
    for _attempt in range(3):
        try:
            return _read_key_file(path)
        except FileNotFoundError:
            pass
        # Whether this process publishes the file or loses the race to one that does,
        # the next read returns the one key everybody uses.
        _create_key_file(path)
    raise SecretError("key file %s: could not be read or created (it keeps disappearing)" % path)


def _read_key_file(path: str) -> bytes:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SecretError(
                "key file %s is a symlink; refusing to follow it (point key_file at the real file)" % path
            ) from None
        raise SecretError("key file %s cannot be opened: %s" % (path, exc.strerror or exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretError("key file %s is not a regular file" % path)
        euid = os.geteuid()
        if st.st_uid != euid:
            raise SecretError(
                "key file %s is owned by uid %d, not by the current user (uid %d); "
                "chown it or run as its owner" % (path, st.st_uid, euid)
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & ~0o600:
            raise SecretError(
                "key file %s has mode %04o; it must be 0600 (or 0400) so only its owner can "
                "read it: chmod 600 %s" % (path, mode, path)
            )
        data = b""
        while len(data) <= 4096:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > 4096:
        raise SecretError("key file %s is too large to be a key file" % path)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise SecretError("key file %s is not valid base64 text" % path) from None
    return decode_key(text, "key file %s" % path)


def _make_private_dirs(directory: str) -> None:
    """Create missing components of ``directory`` with mode 0700 (existing ones are left)."""
    missing = []
    current = directory
    while current and not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not os.path.isdir(path):
                raise SecretError("cannot create the key directory %s: a non-directory is in the way" % path) from None
        except OSError as exc:
            raise SecretError("cannot create the key directory %s: %s" % (path, exc.strerror or exc)) from None


def _create_key_file(path: str) -> bool:
    """Publish a new key file; False if another process published one first.

    The key is written and fsynced in a private temporary file (O_CREAT|O_EXCL, 0600) that
    is then hard-linked to ``path``: link(2) fails if ``path`` exists, so the file appears
    with its full content or not at all, and a racing reader never sees it empty.
    """
    directory = os.path.dirname(os.path.abspath(path))
    _make_private_dirs(directory)
    key_text = (encode_key(generate_key()) + "\n").encode("ascii")
    tmp = None
    fd = -1
    for _attempt in range(100):
        candidate = os.path.join(directory, ".%s.%s.tmp" % (os.path.basename(path), os.urandom(6).hex()))
        try:
            fd = os.open(
                candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600
            )
        except FileExistsError:
            continue
        except OSError as exc:
            raise SecretError("cannot create the key file %s: %s" % (path, exc.strerror or exc)) from None
        tmp = candidate
        break
    if tmp is None:
        raise SecretError("cannot create a temporary file next to the key file %s" % path)
    try:
        try:
            os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask
            view = memoryview(key_text)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            raise SecretError("cannot create the key file %s: %s" % (path, exc.strerror or exc)) from None
        _fsync_dir(directory)
        return True
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
