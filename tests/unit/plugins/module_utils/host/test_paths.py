# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Storage-root confinement, on real directories and symlinks."""

from __future__ import annotations

import os

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host.paths import resolve_in_roots, resolve_roots


@pytest.fixture
def tree(tmp_path):
    """roots/images (the root), roots/images/sub, outside/, and symlinks in and out."""
    root = tmp_path / "roots" / "images"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.img").write_bytes(b"x")
    (root / "in.img").write_bytes(b"x")
    os.symlink(str(outside / "secret.img"), str(root / "escape.img"))
    os.symlink(str(outside / "missing.img"), str(root / "dangling-out.img"))
    os.symlink(str(root / "in.img"), str(root / "alias.img"))
    os.symlink(str(outside), str(root / "outdir"))
    os.symlink(str(root / "sub"), str(root / "subdir-link"))
    # A sibling whose name starts with the root's name: a string-prefix check lets it in.
    (tmp_path / "roots" / "images-evil").mkdir()
    return tmp_path, str(root), str(outside)


def test_inside_paths_resolve(tree):
    _base, root, _outside = tree
    real_root = os.path.realpath(root)
    assert resolve_in_roots(root + "/new.qcow2", [root]) == real_root + "/new.qcow2"
    assert resolve_in_roots(root + "/sub/../new.qcow2", [root]) == real_root + "/new.qcow2"
    assert resolve_in_roots(root + "/subdir-link/x.img", [root]) == real_root + "/sub/x.img"
    assert resolve_in_roots(root + "/alias.img", [root]) == real_root + "/in.img"
    odd = root + "/a,b'c\"d=e f.qcow2"
    assert resolve_in_roots(odd, [root]) == os.path.join(real_root, "a,b'c\"d=e f.qcow2")


@pytest.mark.parametrize(
    "relative,phrase",
    [
        ("/../../outside/x.img", "outside the storage roots"),
        ("/sub/../../../outside/x.img", "outside the storage roots"),
        ("/escape.img", "resolves to"),
        ("/dangling-out.img", "resolves to"),
        ("/outdir/new.img", "resolves to"),
        ("/../images-evil/x.img", "outside the storage roots"),
    ],
)
def test_escapes_are_refused(tree, relative, phrase):
    _base, root, _outside = tree
    with pytest.raises(SpecError) as err:
        resolve_in_roots(root + relative, [root], field="backing_file")
    assert err.value.field == "backing_file"
    assert phrase in str(err.value)


def test_string_prefix_sibling_is_outside(tree):
    base, root, _outside = tree
    with pytest.raises(SpecError, match="outside the storage roots"):
        resolve_in_roots(str(base / "roots" / "images-evil" / "x.img"), [root])


@pytest.mark.parametrize(
    "path,phrase",
    [
        ("images/x.img", "absolute path"),
        ("x.img", "absolute path"),
        ("", "non-empty"),
        (None, "non-empty"),
        ("/a/b\nc.img", "control characters"),
        ("/a/b\x00c", "control characters"),
    ],
)
def test_malformed_paths(tree, path, phrase):
    _base, root, _outside = tree
    with pytest.raises(SpecError) as err:
        resolve_in_roots(path, [root])
    assert err.value.field == "path" and phrase in str(err.value)


@pytest.mark.parametrize("suffix", ["/", "/.", "/..", "/sub/"])
def test_directories_are_not_files(tree, suffix):
    _base, root, _outside = tree
    with pytest.raises(SpecError, match="must name a file"):
        resolve_in_roots(root + suffix, [root])


def test_the_root_itself_is_not_a_volume(tree):
    _base, root, _outside = tree
    with pytest.raises(SpecError, match="outside the storage roots"):
        resolve_in_roots(os.path.dirname(root) + "/images", [root])


def test_several_roots(tree):
    _base, root, outside = tree
    assert resolve_in_roots(outside + "/x.img", [root, outside]) == os.path.realpath(outside) + "/x.img"
    assert resolve_in_roots(root + "/escape.img", [root, outside]) == os.path.realpath(outside) + "/secret.img"


def test_a_symlinked_root_is_resolved(tree):
    base, root, _outside = tree
    link = str(base / "root-link")
    os.symlink(root, link)
    assert resolve_in_roots(link + "/x.img", [link]) == os.path.realpath(root) + "/x.img"
    assert resolve_in_roots(root + "/x.img", [link]) == os.path.realpath(root) + "/x.img"


@pytest.mark.parametrize(
    "roots,phrase",
    [
        ([], "non-empty list"),
        ("/var/lib", "non-empty list"),
        (None, "non-empty list"),
        (["relative/dir"], "not an absolute path"),
        (["/nonexistent/infinivirt-root"], "does not exist"),
        ([""], "non-empty path"),
        (["/tmp/\x01"], "control characters"),
    ],
)
def test_bad_roots(roots, phrase):
    with pytest.raises(SpecError) as err:
        resolve_roots(roots)
    assert err.value.field == "storage_roots" and phrase in str(err.value)


def test_a_file_is_not_a_root(tree):
    _base, root, _outside = tree
    with pytest.raises(SpecError, match="storage_roots: .* not a directory"):
        resolve_in_roots(root + "/x.img", [root + "/in.img"])
