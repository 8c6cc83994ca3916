# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The bytecode cache for module_utils imported from an AnsiballZ zip: real zips, real
imports, a real cache directory. A package made for each test stands in for the
collection's module_utils (the finder takes the package it serves)."""

from __future__ import annotations

import importlib
import importlib.machinery
import marshal
import os
import sys
import traceback
import uuid
import zipfile

import pytest

from ansible_collections.infinivirt.core.plugins.module_utils import bytecode_cache
from ansible_collections.infinivirt.core.plugins.module_utils.bytecode_cache import (
    CachedZipFinder,
    CodeCache,
    cache_dir,
    private_dir,
)

FIRST = "VALUE = 'first'\n\ndef boom():\n    raise RuntimeError('from the zip')\n"


@pytest.fixture
def package(tmp_path):
    """A zipped package ``<name>`` with module ``mod`` and subpackage ``sub.inner``, and a
    finder for it with a private cache; everything is unimported and removed afterwards."""
    name = "bcache_%s" % uuid.uuid4().hex[:8]
    cache = private_dir(str(tmp_path / "cache"))
    finder = CachedZipFinder(CodeCache(cache), package=name)
    sys.meta_path.insert(0, finder)
    zips = []

    def make(source=FIRST, zip_name="payload.zip"):
        path = str(tmp_path / zip_name)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(name + "/__init__.py", "")
            zf.writestr(name + "/mod.py", source)
            zf.writestr(name + "/sub/__init__.py", "")
            zf.writestr(name + "/sub/inner.py", "from %s.mod import VALUE\n" % name)
        zips.append(path)
        forget()
        sys.path.insert(0, path)
        return path

    def forget():
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[mod]
        sys.path[:] = [p for p in sys.path if p not in zips]
        importlib.invalidate_caches()

    def load(module="mod"):
        return importlib.import_module("%s.%s" % (name, module))

    yield type("Package", (), dict(name=name, cache=cache, make=staticmethod(make), load=staticmethod(load)))
    forget()
    sys.meta_path.remove(finder)


def entries(cache, module):
    return sorted(f for f in os.listdir(cache) if ".%s." % module in f and not f.startswith(".tmp"))


def plant(cache, module, value):
    """Replace the cached code of ``module`` (header kept) with code setting VALUE."""
    (entry,) = entries(cache, module)
    path = os.path.join(cache, entry)
    with open(path, "rb") as fh:
        header = fh.read()[: bytecode_cache.HEADER]
    with open(path, "wb") as fh:
        fh.write(header + marshal.dumps(compile("VALUE = %r\n" % value, "planted", "exec")))
    return path


def test_a_module_from_a_zip_is_compiled_once_then_run_from_the_cache(package):
    package.make()
    assert package.load().VALUE == "first"
    assert package.load("sub.inner").VALUE == "first"
    assert entries(package.cache, "mod") and entries(package.cache, "inner")
    plant(package.cache, "mod", "from the cache")
    package.make()  # a new zip with the same source: the next task
    assert package.load().VALUE == "from the cache"


def test_a_changed_source_is_compiled_again_and_replaces_its_old_entry(package):
    package.make()
    package.load()
    (old,) = entries(package.cache, "mod")
    plant(package.cache, "mod", "stale")
    package.make(FIRST.replace("first", "second"))
    assert package.load().VALUE == "second"
    (new,) = entries(package.cache, "mod")
    assert new != old


@pytest.mark.parametrize("tamper", ["group_writable", "symlink", "torn", "other_magic"])
def test_a_cache_file_that_cannot_be_trusted_is_ignored(package, tamper):
    package.make()
    package.load()
    path = plant(package.cache, "mod", "untrusted")
    if tamper == "group_writable":
        os.chmod(path, 0o664)
    elif tamper == "symlink":
        target = path + ".real"
        os.rename(path, target)
        os.symlink(target, path)
    elif tamper == "torn":
        with open(path, "rb") as fh:
            data = fh.read()
        with open(path, "wb") as fh:
            fh.write(data[: bytecode_cache.HEADER + 3])
    else:
        with open(path, "r+b") as fh:
            fh.write(b"\0\0\0\0")
    package.make()
    assert package.load().VALUE == "first"


def test_tracebacks_name_the_zip_of_this_task(package, tmp_path):
    package.make(zip_name="one.zip")
    package.load()
    second = package.make(zip_name="two.zip")  # same source: code from the cache
    with pytest.raises(RuntimeError) as err:
        package.load().boom()
    frames = traceback.extract_tb(err.value.__traceback__)
    assert frames[-1].filename == os.path.join(second, package.name, "mod.py")


def test_modules_on_a_file_system_are_left_to_python(package, tmp_path):
    root = tmp_path / "fs"
    (root / package.name).mkdir(parents=True)
    (root / package.name / "__init__.py").write_text("")
    (root / package.name / "mod.py").write_text("VALUE = 'plain'\n")
    sys.path.insert(0, str(root))
    try:
        module = package.load()
        assert module.VALUE == "plain"
        assert not isinstance(module.__spec__.loader, bytecode_cache.CachedZipLoader)
        assert os.listdir(package.cache) == []
    finally:
        sys.path.remove(str(root))


def test_a_directory_others_may_write_or_own_is_not_used(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    assert private_dir(str(shared)) is None
    link = tmp_path / "link"
    made = private_dir(str(tmp_path / "made"))
    os.symlink(made, link)
    assert private_dir(str(link)) is None
    assert oct(os.stat(made).st_mode & 0o777) == oct(0o700)
    if os.geteuid() == 0:
        foreign = tmp_path / "foreign"
        foreign.mkdir(mode=0o700)
        os.chown(foreign, 65534, 65534)
        assert private_dir(str(foreign)) is None


def test_the_cache_directory_per_user_and_the_off_switch():
    assert cache_dir({}, 0) == "/var/cache/infinivirt/bytecode"
    assert cache_dir({"XDG_CACHE_HOME": "/home/u/.c"}, 1000) == "/home/u/.c/infinivirt/bytecode"
    assert cache_dir({"INFINIVIRT_BYTECODE_CACHE": "/srv/bc"}, 0) == "/srv/bc"
    assert cache_dir({"INFINIVIRT_BYTECODE_CACHE": "off"}, 0) is None


def test_install_puts_one_finder_before_the_path_finder_or_none_when_off(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if not isinstance(f, CachedZipFinder)])
    bytecode_cache.install({"INFINIVIRT_BYTECODE_CACHE": "off"})
    assert not any(isinstance(f, CachedZipFinder) for f in sys.meta_path)
    env = {"INFINIVIRT_BYTECODE_CACHE": str(tmp_path / "bc")}
    bytecode_cache.install(env)
    bytecode_cache.install(env)
    assert [type(f) for f in sys.meta_path].count(CachedZipFinder) == 1
    at = [i for i, f in enumerate(sys.meta_path) if isinstance(f, CachedZipFinder)][0]
    assert sys.meta_path[at + 1] is importlib.machinery.PathFinder
    assert at > 0  # meta_path[0] is left to others (ansible-test's import sanity test checks it)
