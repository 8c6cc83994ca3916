# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""host.paths.open_confined on real directories and symlinks: check and use the same file."""

from __future__ import annotations

import os

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host.paths import ConfinedDir, open_confined

CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL


def open_fds():
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def tree(tmp_path):
    """root/sub/vol.img inside, outside/decoy outside; the real path of tmp_path."""
    base = os.path.realpath(str(tmp_path))
    root, outside = os.path.join(base, "root"), os.path.join(base, "outside")
    os.makedirs(os.path.join(root, "sub"))
    os.makedirs(outside)
    with open(os.path.join(root, "sub", "vol.img"), "w") as fh:
        fh.write("inside")
    with open(os.path.join(outside, "vol.img"), "w") as fh:
        fh.write("outside")
    return root, outside


def test_a_normal_file_opens_and_everything_is_closed(tree):
    root, _outside = tree
    path = os.path.join(root, "sub", "vol.img")
    before = open_fds()
    with open_confined(path) as vol:
        assert os.read(vol.fd, 100) == b"inside"
        assert vol.path == path and vol.name == "vol.img"
        assert os.path.samestat(os.fstat(vol.dir.fd), os.stat(os.path.join(root, "sub")))
        assert vol.is_entry()
        assert open_fds() - before  # the file and its directory are open inside
    assert open_fds() == before


def test_create_is_exclusive(tree):
    root, _outside = tree
    path = os.path.join(root, "sub", "new.img")
    with open_confined(path, CREATE, 0o600) as vol:
        os.write(vol.fd, b"x")
    assert os.stat(path).st_mode & 0o777 == 0o600
    before = open_fds()
    with pytest.raises(FileExistsError):
        with open_confined(path, CREATE, 0o600):
            pass
    assert open_fds() == before
    assert open(path).read() == "x"


def test_a_symlinked_directory_component_is_refused(tree):
    root, outside = tree
    sub = os.path.join(root, "sub")
    os.rename(sub, sub + ".real")
    os.symlink(outside, sub)  # the swap: root/sub now leads outside
    before = open_fds()
    for flags in (os.O_RDONLY, os.O_RDWR, CREATE):
        with pytest.raises(SpecError) as err:
            with open_confined(os.path.join(sub, "vol.img" if flags != CREATE else "n.img"), flags, 0o600):
                pass
        assert err.value.field == "path"
        assert "changed while in use" in str(err.value) and sub in str(err.value)
    assert open_fds() == before
    assert sorted(os.listdir(outside)) == ["vol.img"]
    assert open(os.path.join(outside, "vol.img")).read() == "outside"


def test_a_symlink_higher_up_is_refused_too(tree):
    root, outside = tree
    link = os.path.join(os.path.dirname(root), "alias")
    os.symlink(root, link)
    with pytest.raises(SpecError, match="changed while in use"):
        with open_confined(os.path.join(link, "sub", "vol.img"), field="backing_file"):
            pass


@pytest.mark.parametrize("flags", [os.O_RDONLY, os.O_RDWR, CREATE])
def test_a_symlinked_final_name_is_refused(tree, flags):
    root, outside = tree
    path = os.path.join(root, "sub", "vol.img")
    os.unlink(path)
    os.symlink(os.path.join(outside, "vol.img"), path)
    before = open_fds()
    expected = FileExistsError if flags & os.O_EXCL else SpecError  # O_EXCL never follows a link
    with pytest.raises(expected):
        with open_confined(path, flags, 0o600):
            pass
    assert open_fds() == before
    assert open(os.path.join(outside, "vol.img")).read() == "outside"


def test_missing_directories_and_files(tree):
    root, _outside = tree
    with pytest.raises(FileNotFoundError):
        with open_confined(os.path.join(root, "sub", "nothing.img")):
            pass
    with pytest.raises(FileNotFoundError):
        with open_confined(os.path.join(root, "nodir", "vol.img"), CREATE):
            pass
    with pytest.raises(NotADirectoryError):
        with open_confined(os.path.join(root, "sub", "vol.img", "x")):
            pass


@pytest.mark.parametrize("path", ["relative/x", "/a/../b", "/a//b", "/a/./b", "//a"])
def test_only_resolved_absolute_paths(path):
    with pytest.raises(SpecError, match="resolved absolute path"):
        ConfinedDir(path)


def test_rename_and_unlink_by_directory(tree):
    root, _outside = tree
    path = os.path.join(root, "sub", "vol.img")
    with open_confined(path, os.O_RDWR) as vol:
        with vol.dir.open_file("tmp", CREATE) as tmp:
            os.write(tmp.fd, b"new")
            vol.dir.rename("tmp", vol.name)
            assert not tmp.unlink()  # gone: renamed over the volume
        assert not vol.is_entry()  # the name is the new file now, not this one
        assert not vol.unlink()  # so it is not removed
        with pytest.raises(SpecError, match="not a file name"):
            vol.dir.unlink("../x")
    assert open(path).read() == "new"
    with open_confined(path) as vol:
        assert vol.unlink()
    assert not os.path.exists(path)
