# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Typed errors raised by the library; the Ansible binding turns them into fail_json."""

from __future__ import annotations


class InfinivirtError(Exception):
    """Base class: the message is a sentence a user can act on."""


class SpecError(InfinivirtError):
    """A user value is invalid. ``field`` names the option at fault."""

    def __init__(self, field: str, reason: str):
        super().__init__("%s: %s" % (field, reason))
        self.field = field
        self.reason = reason


class QemuError(InfinivirtError):
    """QEMU could not be probed, started or stopped."""


class QmpError(InfinivirtError):
    """A QMP command failed; the message names the VM and the command."""

    def __init__(self, vm: str, command: str, reason: str):
        super().__init__("VM %s: QMP command '%s' failed: %s" % (vm, command, reason))
        self.vm = vm
        self.command = command
        self.reason = reason


class QemuUnresponsive(QmpError):
    """A live QEMU that does not answer QMP (stopped, hung): only force may end it."""


class StoreError(InfinivirtError):
    """The state database could not be opened, migrated or written."""


class LockTimeout(InfinivirtError):
    """A per-VM lock could not be taken in time; the message names the holder."""


class StateError(InfinivirtError):
    """A requested transition is not possible from the VM's current state."""


class MissingLibrary(InfinivirtError):
    """A Python library only some tasks need (pycdlib for cloud_init) is not installed; the
    binding fails with Ansible's missing_required_lib text naming ``library``."""

    def __init__(self, library: str, purpose: str, import_error: str = ""):
        super().__init__(
            "Failed to import the required Python library (%s), needed for %s; install it on the "
            "managed host" % (library, purpose)
        )
        self.library = library
        self.purpose = purpose
        self.import_error = import_error


class ClaimConflict(StateError):
    """A host-scoped claim (store.claims) collides with another owner's: ``values`` of
    ``kind`` on ``host`` are held by ``holder`` (a name), exclusively or not."""

    def __init__(self, kind: str, host: str, values: list, holder: str, holder_exclusive: bool):
        super().__init__(
            "%s %s on host %s %s held by %s%s"
            % (
                kind,
                ", ".join(values),
                host,
                "is" if len(values) == 1 else "are",
                holder,
                " exclusively" if holder_exclusive else "",
            )
        )
        self.kind = kind
        self.host = host
        self.values = values
        self.holder = holder
        self.holder_exclusive = holder_exclusive
