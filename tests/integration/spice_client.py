# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A tiny SPICE client that only links the main channel: enough to prove who a display lets in.

``spice_link(host, port, password)`` returns the server's link result: 0 (SPICE_LINK_ERR_OK)
when the ticket was accepted, 7 (SPICE_LINK_ERR_PERMISSION_DENIED) when not. The steps are
spice-protocol's: SpiceLinkHeader + SpiceLinkMess (main channel, common caps
PROTOCOL_AUTH_SELECTION and AUTH_SPICE) -> SpiceLinkReply with the server's 1024-bit RSA
public key (X.509 SubjectPublicKeyInfo, DER) -> the auth mechanism (SPICE ticket) -> the
password and its NUL encrypted RSA-OAEP (SHA-1) -> a 32-bit result. Anything else raises
SpiceError. Stdlib + cryptography only.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
from typing import Optional

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

MAGIC = b"REDQ"
MAJOR, MINOR = 2, 2
CHANNEL_MAIN = 1
CAP_AUTH_SELECTION, CAP_AUTH_SPICE = 0, 1
AUTH_MECHANISM_SPICE = 1
PUBKEY_BYTES = 162
LINK_OK = 0
LINK_PERMISSION_DENIED = 7


class SpiceError(Exception):
    """The server did something this client does not expect."""


def _recv(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise SpiceError("the server closed the connection after %d of %d bytes" % (len(data), size))
        data += chunk
    return data


def link_message() -> bytes:
    caps = struct.pack("<I", (1 << CAP_AUTH_SELECTION) | (1 << CAP_AUTH_SPICE))
    # connection_id, channel_type, channel_id, num_common_caps, num_channel_caps, caps_offset
    mess = struct.pack("<IBBIII", 0, CHANNEL_MAIN, 0, 1, 0, 18) + caps
    return MAGIC + struct.pack("<III", MAJOR, MINOR, len(mess)) + mess


def server_key(sock: socket.socket):
    """Read the SpiceLinkReply; the server's public key."""
    magic, major, _minor, size = struct.unpack("<4sIII", _recv(sock, 16))
    if magic != MAGIC or major != MAJOR:
        raise SpiceError("not a SPICE %d server: magic %r, major %d" % (MAJOR, magic, major))
    reply = _recv(sock, size)
    (error,) = struct.unpack_from("<I", reply)
    if error != LINK_OK:
        raise SpiceError("the server refused the link message: error %d" % error)
    return serialization.load_der_public_key(reply[4 : 4 + PUBKEY_BYTES])


def spice_link(host: str, port: int, password: str, timeout: float = 10.0, tls: Optional[ssl.SSLContext] = None) -> int:
    """``tls``: link through TLS first (a display with graphics.tls listens on its TLS port only)."""
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection((host, port), timeout=timeout))
        if tls is not None:
            sock = stack.enter_context(tls.wrap_socket(sock, server_hostname=host))
        sock.sendall(link_message())
        key = server_key(sock)
        ticket = key.encrypt(
            password.encode() + b"\0",
            padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
        )
        sock.sendall(struct.pack("<I", AUTH_MECHANISM_SPICE) + ticket)
        (result,) = struct.unpack("<I", _recv(sock, 4))
        return result
