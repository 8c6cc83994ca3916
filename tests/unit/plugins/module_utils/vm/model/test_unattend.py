# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The unattend option's pure part: the answer file is checked (well-formed, Microsoft's root,
no DOCTYPE) and kept byte for byte, names pass Joliet's and Windows' rules, sizes are
bounded, errors name the field and never quote the text, and the digest is keyed."""

from __future__ import annotations

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model import unattend
from ansible_collections.infinivirt.core.plugins.module_utils.vm.model.spec import VmSpec, validate

PASSWORD = "Adm1n-Pa55-never-echoed"
XML = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<unattend xmlns="urn:schemas-microsoft-com:unattend">\n'
    '  <settings pass="oobeSystem"><component name="Microsoft-Windows-Shell-Setup">\n'
    "    <UserAccounts><AdministratorPassword><Value>%s</Value><PlainText>true</PlainText>"
    "</AdministratorPassword></UserAccounts>\n"
    "  </component></settings>\n"
    "</unattend>\n" % PASSWORD
)


def test_the_answer_file_is_kept_byte_for_byte_and_files_are_checked():
    answer, files = unattend.check_option(
        {"autounattend": XML, "files": [{"path": "$OEM$/$1/Setup Scripts/first.ps1", "content": "Write-Host hi"}]}
    )
    assert answer == XML.encode()  # not re-serialized: what the user wrote
    assert files == [{"path": "$OEM$/$1/Setup Scripts/first.ps1", "content": "Write-Host hi"}]
    _answer, files = unattend.check_option({"autounattend": XML, "files": [{"path": "drv/a.inf", "src": "/srv/a.inf"}]})
    assert files == [{"path": "drv/a.inf", "src": "/srv/a.inf"}]
    media = unattend.media_files(answer, [("x/y.txt", b"1")])
    assert media == {"Autounattend.xml": XML.encode(), "x/y.txt": b"1"}


@pytest.mark.parametrize(
    "xml, phrase",
    [
        ("", "non-empty"),
        ("   \n", "non-empty"),
        ("<unattend xmlns='urn:schemas-microsoft-com:unattend'><a></unattend>", "not well-formed XML: mismatched tag"),
        ("<unattend xmlns='urn:schemas-microsoft-com:unattend'>%s" % PASSWORD, "not well-formed XML"),
        ("<settings xmlns='urn:schemas-microsoft-com:unattend'/>", "root element unattend"),
        ("<unattend/>", "namespace urn:schemas-microsoft-com:unattend"),
        (
            '<!DOCTYPE u [<!ENTITY a "%s">]><unattend xmlns="urn:schemas-microsoft-com:unattend">&a;</unattend>'
            % PASSWORD,
            "DOCTYPE",
        ),
        ('<?xml version="1.0" encoding="utf-16"?><unattend/>', "not well-formed XML"),  # bytes are UTF-8
    ],
)
def test_a_bad_answer_file_names_autounattend_and_never_quotes_it(xml, phrase):
    with pytest.raises(SpecError) as err:
        unattend.check_option({"autounattend": xml})
    assert err.value.field == "unattend.autounattend" and phrase in str(err.value)
    assert PASSWORD not in str(err.value)


def test_the_answer_file_is_required_and_bounded():
    with pytest.raises(SpecError) as err:
        unattend.check_option({"files": [{"path": "a.txt", "content": "x"}]})
    assert err.value.field == "unattend.autounattend" and "required" in str(err.value)
    big = XML.replace("</unattend>", "<!-- %s --></unattend>" % ("x" * unattend.MAX_XML))
    with pytest.raises(SpecError) as err:
        unattend.check_option({"autounattend": big})
    assert err.value.field == "unattend.autounattend" and "at most %d" % unattend.MAX_XML in str(err.value)
    with pytest.raises(SpecError) as err:
        unattend.check_option({"autounattend": XML, "colour": "blue"})
    assert err.value.field == "unattend.colour"


@pytest.mark.parametrize(
    "entry, field, phrase",
    [
        ({"path": "/abs.txt", "content": "x"}, "unattend.files[0].path", "not absolute"),
        ({"path": "../up.txt", "content": "x"}, "unattend.files[0].path", "'..'"),
        ({"path": "a/./b.txt", "content": "x"}, "unattend.files[0].path", "'.'"),
        ({"path": "a//b.txt", "content": "x"}, "unattend.files[0].path", "empty"),
        ({"path": "", "content": "x"}, "unattend.files[0].path", "relative path"),
        ({"path": "a" * 65, "content": "x"}, "unattend.files[0].path", "longer than 64 bytes"),
        ({"path": "\u20ac" * 22, "content": "x"}, "unattend.files[0].path", "longer than 64 bytes"),  # 66 bytes
        ({"path": "/".join("d" * 9), "content": "x"}, "unattend.files[0].path", "8 levels"),
        ({"path": "/".join(["d" * 60] * 4) + "/f", "content": "x"}, "unattend.files[0].path", "240 characters"),
        ({"path": "what?.txt", "content": "x"}, "unattend.files[0].path", "must not hold"),
        ({"path": "a:b", "content": "x"}, "unattend.files[0].path", "must not hold"),
        ({"path": "tab\there", "content": "x"}, "unattend.files[0].path", "control characters"),
        ({"path": "trailing.", "content": "x"}, "unattend.files[0].path", "ending in '.'"),
        ({"path": "AUTOUNATTEND.XML", "content": "x"}, "unattend.files[0].path", "same file as autounattend"),
        ({"path": "a.txt"}, "unattend.files[0]", "exactly one of content"),
        ({"path": "a.txt", "content": "x", "src": "/etc/hostname"}, "unattend.files[0]", "exactly one of content"),
        ({"path": "a.txt", "src": "relative/file"}, "unattend.files[0].src", "absolute path"),
        ({"path": "a.txt", "content": "x" * (unattend.MAX_FILE + 1)}, "unattend.files[0].content", "longer than"),
        ({"path": "a.txt", "content": "x", "mode": "0644"}, "unattend.files[0].mode", "not an option"),
        ("a.txt", "unattend.files[0]", "must be a dict"),
    ],
)
def test_a_bad_file_names_its_field(entry, field, phrase):
    with pytest.raises(SpecError) as err:
        unattend.check_option({"autounattend": XML, "files": [entry]})
    assert err.value.field == field and phrase in str(err.value)


def test_two_paths_equal_but_for_case_are_one_file_for_windows():
    files = [{"path": "Scripts/Setup.ps1", "content": "a"}, {"path": "scripts/setup.PS1", "content": "b"}]
    with pytest.raises(SpecError) as err:
        unattend.check_option({"autounattend": XML, "files": files})
    assert err.value.field == "unattend.files[1].path" and "unattend.files[0].path" in str(err.value)


def test_names_windows_allows_pass():
    for path in ("$OEM$/$$/Setup/Scripts/SetupComplete.cmd", "Ünïcode ñame (1).txt", "a/b/c/d/e/f/g/h.txt"):
        assert unattend.check_path("f", path) == path


def test_the_iso_is_bounded_in_all():
    half = b"x" * (unattend.MAX_TOTAL // 2)
    with pytest.raises(SpecError) as err:
        unattend.media_files(b"<a/>", [("a", half), ("b", half)])
    assert err.value.field == "unattend.files[1]" and "%d bytes in all" % unattend.MAX_TOTAL in str(err.value)
    with pytest.raises(SpecError) as err:
        unattend.check_option({"autounattend": XML, "files": [{"path": "f%d" % i, "content": ""} for i in range(257)]})
    assert err.value.field == "unattend.files"


def test_the_cdrom_needs_a_free_sata_or_ide_slot():
    digest = "hmac-sha256:" + "0" * 64
    disks = [{"path": "/i/d%d.qcow2" % n, "bus": "sata"} for n in range(6)]
    full = VmSpec.from_dict({"name": "w", "unattend_digest": digest, "disks": disks})
    with pytest.raises(SpecError) as err:
        validate(full)
    assert err.value.field == "unattend" and "machine_type q35 has 6 and the disks take 6" in str(err.value)
    assert validate(VmSpec.from_dict({"name": "w", "unattend_digest": digest, "disks": disks[:5]}))
    ide = [dict(d, bus="ide") for d in disks]
    pc = VmSpec.from_dict({"name": "w", "machine_type": "pc", "unattend_digest": digest, "disks": ide[:4]})
    with pytest.raises(SpecError) as err:
        validate(pc)
    assert err.value.field == "unattend" and "machine_type pc has 4 and the disks take 4" in str(err.value)
    assert validate(VmSpec.from_dict({"name": "w", "machine_type": "pc", "unattend_digest": digest, "disks": ide[:3]}))
    assert validate(VmSpec.from_dict({"name": "w", "disks": disks}))  # without unattend all six are the disks'
