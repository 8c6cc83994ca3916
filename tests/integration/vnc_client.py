# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A tiny RFB (VNC) client that only authenticates: enough to prove who a display lets in.

``vnc_auth(host, port, password)`` returns:

- ``"none"``: the server asks for no password (security type 1) and the client got its
  ServerInit;
- ``"password-required"``: the server offers VNC Authentication (type 2) and no password
  was given (the client hangs up without answering);
- ``"ok"``: the password was accepted and ServerInit arrived;
- ``"failed"``: the server refused the password.

Anything else (no common security type, a refused connection, a protocol error) raises
VncError. Stdlib + cryptography only (DES through TripleDES with a repeated key).
"""

from __future__ import annotations

import re
import socket
import struct
from typing import List, Optional, Tuple

try:  # cryptography >= 43 keeps TripleDES in "decrepit"
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

SEC_INVALID = 0
SEC_NONE = 1
SEC_VNC_AUTH = 2
_MAX_REASON = 64 * 1024
_VERSION_RE = re.compile(rb"^RFB (\d{3})\.(\d{3})\n$")


class VncError(Exception):
    """The server did something this client cannot or should not go along with."""


def _recv_exact(sock: socket.socket, count: int, what: str) -> bytes:
    buf = b""
    while len(buf) < count:
        try:
            chunk = sock.recv(count - len(buf))
        except socket.timeout:
            raise VncError("timed out waiting for %s" % what) from None
        if not chunk:
            raise VncError(
                "the server closed the connection while the client waited for %s (got %d of %d bytes)"
                % (what, len(buf), count)
            )
        buf += chunk
    return buf


def _recv_u32(sock: socket.socket, what: str) -> int:
    return struct.unpack(">I", _recv_exact(sock, 4, what))[0]


def _recv_reason(sock: socket.socket) -> str:
    length = _recv_u32(sock, "a reason length")
    if length > _MAX_REASON:
        raise VncError("the server announced a %d-byte reason string" % length)
    return _recv_exact(sock, length, "a reason string").decode("latin-1")


def _reverse_bits(byte: int) -> int:
    return int("{:08b}".format(byte)[::-1], 2)


def vnc_des_key(password: str) -> bytes:
    """The 8-byte DES key of VNC Authentication: the password truncated or zero-padded to
    8 bytes, each byte's bits reversed (only the first 8 bytes of a password count)."""
    raw = password.encode("utf-8")[:8].ljust(8, b"\0")
    return bytes(_reverse_bits(b) for b in raw)


def vnc_challenge_response(password: str, challenge: bytes) -> bytes:
    """DES-ECB of the 16-byte challenge (3DES with K1=K2=K3 is single DES)."""
    if len(challenge) != 16:
        raise VncError("the VNC challenge must be 16 bytes, got %d" % len(challenge))
    key = vnc_des_key(password)
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return encryptor.update(challenge) + encryptor.finalize()


def _handshake_version(sock: socket.socket) -> Tuple[int, int]:
    """Read the server version, answer with the highest one both speak (3.3, 3.7 or 3.8)."""
    banner = _recv_exact(sock, 12, "the RFB version banner")
    match = _VERSION_RE.match(banner)
    if not match:
        raise VncError("the server did not send an RFB version banner: %r" % banner)
    server = (int(match.group(1)), int(match.group(2)))
    if server[0] != 3 or server < (3, 3):
        raise VncError("unsupported RFB version %d.%d" % server)
    # 3.5 is announced by some servers and means 3.3; unknown minors above 8 talk 3.8.
    client = (3, 8) if server >= (3, 8) else (3, 7) if server >= (3, 7) else (3, 3)
    sock.sendall(b"RFB %03d.%03d\n" % client)
    return client


def _security_types(sock: socket.socket, version: Tuple[int, int]) -> List[int]:
    if version == (3, 3):  # the server decides alone and sends one u32
        chosen = _recv_u32(sock, "the security type")
        if chosen == SEC_INVALID:
            raise VncError("the server refused the connection: %s" % _recv_reason(sock))
        return [chosen]
    count = _recv_exact(sock, 1, "the number of security types")[0]
    if count == 0:
        raise VncError("the server refused the connection: %s" % _recv_reason(sock))
    return list(_recv_exact(sock, count, "the security types"))


def _security_result(sock: socket.socket, version: Tuple[int, int]) -> bool:
    result = _recv_u32(sock, "the SecurityResult")
    if result != 0 and version >= (3, 8):
        _recv_reason(sock)  # the reason is the server's business; the answer is "failed"
    return result == 0


def _client_init(sock: socket.socket) -> None:
    """Send ClientInit (shared) and read the whole ServerInit: the session is really open."""
    sock.sendall(b"\x01")
    header = _recv_exact(sock, 24, "ServerInit")
    name_len = struct.unpack(">I", header[20:24])[0]
    if name_len > _MAX_REASON:
        raise VncError("the server announced a %d-byte desktop name" % name_len)
    _recv_exact(sock, name_len, "the desktop name")


def vnc_auth(host: str, port: int, password: Optional[str], timeout: float = 10) -> str:
    """Authenticate against an RFB server; see the module docstring for the answers."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise VncError("cannot connect to %s:%d: %s" % (host, port, exc)) from None
    with sock:
        sock.settimeout(timeout)
        try:
            return _authenticate(sock, password)
        except OSError as exc:  # reset, broken pipe: the server hung up mid-handshake
            raise VncError("the connection to %s:%d failed during the handshake: %s" % (host, port, exc)) from None


def _authenticate(sock: socket.socket, password: Optional[str]) -> str:
    version = _handshake_version(sock)
    types = _security_types(sock, version)
    if password is None or SEC_VNC_AUTH not in types:
        if SEC_NONE in types:
            if version != (3, 3):
                sock.sendall(bytes([SEC_NONE]))
            if version >= (3, 8) and not _security_result(sock, version):
                raise VncError("the server offered no authentication, then refused the connection")
            _client_init(sock)
            return "none"
        if SEC_VNC_AUTH in types:
            return "password-required"
        raise VncError(
            "the server offers security types %s; this client speaks only None (1) and VNC Authentication (2)" % types
        )
    if version != (3, 3):
        sock.sendall(bytes([SEC_VNC_AUTH]))
    challenge = _recv_exact(sock, 16, "the VNC Authentication challenge")
    sock.sendall(vnc_challenge_response(password, challenge))
    if not _security_result(sock, version):
        return "failed"
    _client_init(sock)
    return "ok"
