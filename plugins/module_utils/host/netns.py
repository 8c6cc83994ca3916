# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Named network namespaces (``ip netns``): check one exists, and run code or a program in it.

None always means the host's own namespace. A namespace is never created here: a typo must
be an error, not a new empty namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from typing import Callable, Iterator, Optional, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import InfinivirtError, SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.validation import validate_netns_name

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000


class NetnsError(InfinivirtError):
    """A namespace could not be entered."""


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def check_netns(field: str, name: Optional[str]) -> Optional[str]:
    """The name, if it is None or a namespace that exists; SpecError otherwise."""
    if name is None:
        return None
    validate_netns_name(field, name)
    if not os.path.exists(netns_path(name)):
        raise SpecError(field, "network namespace %s does not exist (see ip netns list)" % name)
    return name


def ns_ref(netns: Optional[str], thing: str) -> str:
    """A host object in the resource journal, with its namespace (which may be gone by the
    time the journal is read back): "<netns>/<name>", "/<name>" for the host's."""
    return "%s/%s" % (netns or "", thing)


def parse_ns_ref(ref: str) -> Tuple[Optional[str], str]:
    netns, thing = ref.split("/", 1)
    return netns or None, thing


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError("cannot enter network namespace: %s" % os.strerror(err))


@contextlib.contextmanager
def entered(name: Optional[str]) -> Iterator[None]:
    """Run the block with this thread in namespace ``name`` (sockets and /dev/net/tun
    opened inside belong to it), then come back."""
    if name is None:
        yield
        return
    check_netns("netns", name)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(netns_path(name), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def preexec(name: Optional[str]) -> Optional[Callable[[], None]]:
    """A subprocess ``preexec_fn`` that moves the child into namespace ``name``."""
    if name is None:
        return None
    path = netns_path(check_netns("netns", name))

    def enter() -> None:
        fd = os.open(path, os.O_RDONLY)
        _setns(fd)
        os.close(fd)

    return enter


def run(
    argv: Sequence[str], netns: Optional[str], stdin: Optional[str] = None, timeout: float = 30.0
) -> "subprocess.CompletedProcess[str]":
    """Run a program inside namespace ``netns``; the caller checks returncode."""
    return subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec(netns), check=False
    )  # noqa: PLW1509


def ns_id(name: Optional[str]) -> str:
    """The identity of namespace ``name`` (None: this thread's), as /proc/PID/ns/net reads."""
    if name is None:
        return os.readlink("/proc/thread-self/ns/net")
    return "net:[%d]" % os.stat(netns_path(check_netns("netns", name))).st_ino


def process_ns_id(pid: int, proc_root: str = "/proc") -> Optional[str]:
    """The network namespace of process ``pid``, None if it cannot be read (gone)."""
    try:
        return os.readlink(os.path.join(proc_root, str(pid), "ns", "net"))
    except OSError:
        return None
