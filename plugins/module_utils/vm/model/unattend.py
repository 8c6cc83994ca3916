# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Windows Setup's answer file on a CD-ROM: from the ``unattend`` option to the ISO's files.

- ``autounattend``: the text of an ``autounattend.xml``, written byte for byte (UTF-8) as
  ``Autounattend.xml`` in the ISO's root, where Windows Setup looks for it on removable and
  CD/DVD media ("implicit answer file search"). It must be well-formed XML whose root is
  ``unattend`` in Microsoft's namespace; a DOCTYPE is refused (an answer file has none, and
  entity tricks stay out of the parser).
- ``files``: more files for the ISO, each ``{path, content}`` (text, UTF-8) or ``{path,
  src}`` (a file on the hypervisor, read by vm/unattend_media.py). ``path`` is relative,
  ``/`` between directories (``$OEM$/$1/setup.ps1``).

Names are checked for Joliet (what Windows reads): at most 64 bytes per name in UTF-8 (64
ASCII characters: pycdlib counts bytes), a path of at most 240 characters and 8 levels, none
of ``* / : ; ? \\ < > " |`` or control characters, no ``.`` or ``..``, no name ending in a
dot or a space (Windows drops those), and no two paths equal when case is ignored (Windows
ignores it). Sizes are bounded, as the files are sealed in the database: MAX_XML for the
answer file, MAX_FILE per file, MAX_TOTAL in all (the answer file included).

The spec keeps only the files' digest (vm/model/sealed_files.py): an HMAC-SHA256 of the
files under a random salt that is sealed with them, so a database reader cannot test guesses
of a password in the XML against it, and rotating the SecretBox key (which re-encrypts the
salt, not changes it) does not change it. Errors name the field and never echo values.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError

OPTION = "unattend"
KEYS = ("autounattend", "files")
FILE_KEYS = ("path", "content", "src")
ANSWER_FILE = "Autounattend.xml"
NAMESPACE = "urn:schemas-microsoft-com:unattend"
LABEL = "UNATTEND"  # any label does: Windows Setup looks at every CD's root
# The files are sealed in one SecretBox token (at most 1 MiB of text: base64 of the
# ciphertext of JSON with the files in base64, about 16/9 of their size). Drivers and
# larger payloads belong on a CD-ROM disk of their own (disks: media cdrom).
KIB = 1024
MAX_XML = 256 * KIB
MAX_FILE = 384 * KIB
MAX_TOTAL = 384 * KIB
MAX_FILES = 256
MAX_NAME = 64  # Joliet's 64 characters; pycdlib counts them as UTF-8 bytes
MAX_PATH = 240
MAX_DEPTH = 8  # ISO 9660's directory levels
_BAD_CHARS = re.compile(r'[*/:;?\\<>"|\x00-\x1f\x7f]')


def given(option: Any) -> bool:
    """Whether an unattend value asks for a CD-ROM: {} (or every key unset) removes it."""
    return isinstance(option, Mapping) and any(v is not None for v in option.values())


def check_option(option: Any) -> Tuple[bytes, List[Dict[str, str]]]:
    """(the answer file's bytes, the files as [{path, content} or {path, src}]), checked."""
    if not isinstance(option, Mapping):
        raise SpecError(OPTION, "must be a dict with autounattend (and files)")
    unknown = sorted(str(k) for k in option if k not in KEYS)
    if unknown:
        raise SpecError(_field(unknown[0]), "is not an option of unattend; known: %s" % ", ".join(KEYS))
    xml = option.get("autounattend")
    if xml is None:
        raise SpecError(_field("autounattend"), "is required: the text of the autounattend.xml")
    if not isinstance(xml, str) or not xml.strip():
        raise SpecError(_field("autounattend"), "must be the non-empty text of an autounattend.xml")
    data = xml.encode("utf-8")
    if len(data) > MAX_XML:
        raise SpecError(_field("autounattend"), "is %d bytes; at most %d" % (len(data), MAX_XML))
    check_xml(data)
    files = option.get("files") or []
    if not isinstance(files, (list, tuple)):
        raise SpecError(_field("files"), "must be a list of {path, content} or {path, src}")
    if len(files) > MAX_FILES:
        raise SpecError(_field("files"), "has %d entries; at most %d" % (len(files), MAX_FILES))
    seen = {ANSWER_FILE.casefold(): "autounattend"}
    return data, [_check_entry(i, entry, seen) for i, entry in enumerate(files)]


def check_xml(data: bytes) -> None:
    """Well-formed, root ``unattend`` in Microsoft's namespace, no DOCTYPE. The error
    gives expat's reason and position, never the text (it may hold passwords)."""
    from xml.parsers import expat

    field = _field("autounattend")
    root: List[str] = []

    def doctype(*_args):
        raise SpecError(field, "must not have a DOCTYPE (an answer file has none)")

    def start(name, _attrs):
        if not root:
            root.append(name)

    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = doctype
    parser.StartElementHandler = start
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise SpecError(
            field,
            "is not well-formed XML: %s (line %d, column %d)"
            % (expat.ErrorString(exc.code), exc.lineno, exc.offset + 1),
        ) from None
    namespace, _sep, local = root[0].rpartition(" ")
    if local != "unattend" or namespace != NAMESPACE:
        raise SpecError(
            field, "must have the root element unattend in the namespace %s, as Windows Setup reads" % NAMESPACE
        )


def _check_entry(index: int, entry: Any, seen: Dict[str, str]) -> Dict[str, str]:
    field = "%s[%d]" % (_field("files"), index)
    if not isinstance(entry, Mapping):
        raise SpecError(field, "must be a dict {path, content} or {path, src}")
    unknown = sorted(str(k) for k in entry if k not in FILE_KEYS)
    if unknown:
        raise SpecError("%s.%s" % (field, unknown[0]), "is not an option of a file; known: %s" % ", ".join(FILE_KEYS))
    path = check_path(field + ".path", entry.get("path"))
    key = path.casefold()
    if key in seen:
        raise SpecError(field + ".path", "names the same file as %s (Windows ignores case)" % seen[key])
    seen[key] = "%s.path" % field
    content, src = entry.get("content"), entry.get("src")
    if (content is None) == (src is None):
        raise SpecError(field, "needs exactly one of content (the text) and src (a file on the hypervisor)")
    if content is not None:
        if not isinstance(content, str):
            raise SpecError(field + ".content", "must be text (use src for a binary file)")
        if len(content.encode("utf-8")) > MAX_FILE:
            raise SpecError(field + ".content", "is longer than %d bytes" % MAX_FILE)
        return {"path": path, "content": content}
    if not isinstance(src, str) or not src.startswith("/") or "\x00" in src:
        raise SpecError(field + ".src", "must be an absolute path of a file on the hypervisor")
    return {"path": path, "src": src}


def check_path(field: str, path: Any) -> str:
    """A relative path for Joliet and Windows (see the module's docstring)."""
    if not isinstance(path, str) or not path:
        raise SpecError(field, "must be a relative path on the ISO, such as scripts/setup.ps1")
    if path.startswith("/"):
        raise SpecError(field, "must be relative to the ISO's root, not absolute")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise SpecError(field, "must not have empty, '.' or '..' parts")
    if len(path) > MAX_PATH or len(parts) > MAX_DEPTH:
        raise SpecError(field, "is too long for the ISO: at most %d characters and %d levels" % (MAX_PATH, MAX_DEPTH))
    for part in parts:
        if len(part.encode("utf-8")) > MAX_NAME:
            raise SpecError(field, "has a name longer than %d bytes in UTF-8 (Joliet's limit)" % MAX_NAME)
        if _BAD_CHARS.search(part) or any(ord(c) > 0xFFFF for c in part):
            raise SpecError(field, 'must not hold * : ; ? \\ < > " |, control characters or characters beyond UCS-2')
        if part.endswith((".", " ")):
            raise SpecError(field, "must not have a name ending in '.' or ' ' (Windows drops them)")
    return path


def media_files(answer: bytes, contents: Sequence[Tuple[str, bytes]]) -> Dict[str, bytes]:
    """The ISO's files: the answer file and (path, bytes) of each extra file, size-checked."""
    files = {ANSWER_FILE: answer}
    total = len(answer)
    for index, (path, data) in enumerate(contents):
        total += len(data)
        if total > MAX_TOTAL:
            raise SpecError("%s[%d]" % (_field("files"), index), "brings the ISO over %d bytes in all" % MAX_TOTAL)
        files[path] = data
    return files


def check_cdrom_slot(machine_type: str, sata_disks: int) -> None:
    """The answer file's CD-ROM takes the last SATA (q35) or IDE (pc) slot."""
    from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.disks import ide_slots

    slots = len(ide_slots(machine_type))
    if sata_disks >= slots:
        raise SpecError(
            OPTION,
            "needs a free sata/ide slot for its CD-ROM: machine_type %s has %d and the disks take %d"
            % (machine_type, slots, sata_disks),
        )


def _field(name: str) -> str:
    return "%s.%s" % (OPTION, name)
