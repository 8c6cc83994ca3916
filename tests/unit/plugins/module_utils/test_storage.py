# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Sizes and storage-root confinement, on real directories and symlinks."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils.errors import SpecError
from ansible_collections.infinivirt.core.plugins.module_utils.host.paths import resolve_in_roots, resolve_roots
from ansible_collections.infinivirt.core.plugins.module_utils.host.secret_fd import secret_fd
from ansible_collections.infinivirt.core.plugins.module_utils.qemu.img import (
    _json_filename,
    _secret_object,
)
from ansible_collections.infinivirt.core.plugins.module_utils.volume.service import public_info
from ansible_collections.infinivirt.core.plugins.module_utils.volume.size import format_size, parse_size

G = 1 << 30
M = 1 << 20


# -- parse_size ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("10G", 10 * G),
        ("10g", 10 * G),
        ("10GiB", 10 * G),
        ("10gib", 10 * G),
        ("10GB", 10 * G),
        ("512M", 512 * M),
        ("1.5G", 3 * G // 2),
        (" 2 T ", 2 << 40),
        ("4096", 4096),
        ("4096B", 4096),
        ("1K", 1024),
        ("0.5K", 512),
        (".5M", M // 2),
        (512, 512),
        (10 * G, 10 * G),
    ],
)
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "value,phrase",
    [
        ("0", "greater than zero"),
        (0, "greater than zero"),
        (-512, "greater than zero"),
        ("1000", "not a multiple of 512; use 512 or 1024"),
        ("100", "use 512"),
        ("1.3K", "not a whole number"),
        ("0.1G", "not a whole number"),
        ("10X", "must be a size"),
        ("G", "must be a size"),
        ("", "must be a size"),
        ("1e9", "must be a size"),
        ("-1G", "must be a size"),
        ("10 G B", "must be a size"),
        ("10iB", "must be a size"),
        ("1,5G", "must be a size"),
        (True, "must be a size"),
        (None, "must be a size"),
        (1.5, "got float"),
    ],
)
def test_bad_sizes_name_the_option(value, phrase):
    with pytest.raises(SpecError) as err:
        parse_size(value)
    assert err.value.field == "size"
    assert phrase in str(err.value)


def test_format_size():
    assert format_size(10 * G) == "10G"
    assert format_size(512 * M) == "512M"
    assert format_size(2048) == "2K"
    assert format_size(3 * 512) == "1536 bytes"
    assert format_size(None) is None


# -- resolve_in_roots ---------------------------------------------------------------------


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


# -- secrets and qemu-img argument forms --------------------------------------------------


def test_a_secret_fd_has_no_name_and_is_closed_after():
    with secret_fd("passphrase-x") as key:
        target = os.readlink(key.path)
        assert target.startswith(("/memfd:", "pipe:")), target  # nothing on any filesystem
        with open(key.path, "rb") as fh:
            assert fh.read() == b"passphrase-x"  # no newline: QEMU reads the file whole
        # A child process reads it through its own copy of the descriptor.
        done = subprocess.run(["cat", key.path], pass_fds=(key.fd,), capture_output=True, check=True)
        assert done.stdout == b"passphrase-x"
    with pytest.raises(OSError):
        os.fstat(key.fd)


def test_a_secret_fd_is_closed_on_error():
    with pytest.raises(RuntimeError):
        with secret_fd("k") as key:
            raise RuntimeError("boom")
    with pytest.raises(OSError):
        os.fstat(key.fd)


def test_user_paths_are_json_strings():
    path = "/img/a,b'c\"d=e,driver=raw.qcow2"
    name = _json_filename("qcow2", path)
    assert name.startswith("json:")
    assert json.loads(name[5:]) == {
        "driver": "qcow2",
        "file": {"driver": "file", "filename": path},
        "encrypt": {"key-secret": "infinivirt-sec0"},
    }
    assert json.loads(_json_filename("luks", path)[5:])["key-secret"] == "infinivirt-sec0"
    assert json.loads(_secret_object("/dev/shm/k,x/key"))["file"] == "/dev/shm/k,x/key"


def test_public_info_drops_secrets():
    info = {
        "filename": 'json:{"key-secret": "s"}',
        "format": "qcow2",
        "format-specific": {"data": {"encrypt": {"key-secret": "s", "format": "luks"}}},
    }
    assert public_info(info) == {"format": "qcow2", "format-specific": {"data": {"encrypt": {"format": "luks"}}}}
