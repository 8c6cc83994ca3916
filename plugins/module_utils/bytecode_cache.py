# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Compiled module_utils code kept on the hypervisor between tasks.

Ansible runs a module from a zip (AnsiballZ), and Python keeps no bytecode for code it imports
from a zip: every task compiled the ~400 KB of this collection's library again, which was most
of what a no-op task cost above ``ansible.builtin.ping`` (docs/architecture.md, "Cost of a
task"). Importing this module (each module does it first) puts a finder in front of Python's
own that, for this collection's files in such a zip only, runs code compiled by an earlier task.

The cache is a directory only the running user owns (``/var/cache/infinivirt/bytecode`` for
root, else ``~/.cache/infinivirt/bytecode``; ``INFINIVIRT_BYTECODE_CACHE`` names another, or
``off``). A file is used only when its header carries this interpreter's bytecode magic and
the sha256 of the very source in the zip, and when it is a regular file of that user that
nobody else may write. Anything unexpected (no directory, a foreign file, a torn write, a full
disk) means the source is compiled as Python would have done: the cache can make a task faster,
never different.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import marshal
import os
import stat
import sys
import zipimport

PACKAGE = __name__.rpartition(".")[0]  # ansible_collections.infinivirt.core.plugins.module_utils
ENV = "INFINIVIRT_BYTECODE_CACHE"
HEADER = len(importlib.util.MAGIC_NUMBER) + hashlib.sha256().digest_size


def cache_dir(environ=None, euid=None):
    """Where compiled code is kept for this user, or None when the cache is off."""
    environ = os.environ if environ is None else environ
    euid = os.geteuid() if euid is None else euid
    chosen = environ.get(ENV)
    if chosen:
        return None if chosen == "off" else chosen
    if euid == 0:
        return "/var/cache/infinivirt/bytecode"
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "infinivirt", "bytecode")


def private_dir(path):
    """The directory, created 0700 if missing, when this user owns it and nobody else may
    write to it; else None (then nothing is read from it or written to it)."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return None
    return path


class CodeCache:
    """Compiled code in one private directory, one file per module and interpreter."""

    def __init__(self, directory):
        self.directory = directory
        self.magic = importlib.util.MAGIC_NUMBER

    def _name(self, fullname, digest):
        return os.path.join(self.directory, "%s.%s.%s.pyc" % (fullname, self.magic.hex(), digest.hex()[:32]))

    def code(self, fullname, source, filename):
        """The code object of ``source``: from the cache when an earlier task compiled the
        same source with the same interpreter, else compiled now and kept."""
        digest = hashlib.sha256(source).digest()
        path = self._name(fullname, digest)
        code = self._read(path, digest)
        if code is None:
            code = compile(source, filename, "exec", dont_inherit=True)
            self._write(path, digest, code, fullname)
        else:
            _fix_filename(code, filename)
        return code

    def _read(self, path, digest):
        try:
            with open(path, "rb", opener=_no_follow) as fh:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
                    return None  # not written by this user's tasks
                data = fh.read()
        except OSError:
            return None
        if data[:HEADER] != self.magic + digest:
            return None
        try:
            return marshal.loads(data[HEADER:])
        except (EOFError, ValueError, TypeError):
            return None

    def _write(self, path, digest, code, fullname):
        """Atomically (a temp file renamed into place), dropping this module's older entries
        for this interpreter so the directory holds one version of each."""
        tmp = os.path.join(self.directory, ".tmp-%d-%s" % (os.getpid(), fullname))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(self.magic + digest + marshal.dumps(code))
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
            prefix = "%s.%s." % (fullname, self.magic.hex())
            for name in os.listdir(self.directory):
                if name.startswith(prefix) and os.path.join(self.directory, name) != path:
                    os.unlink(os.path.join(self.directory, name))
        except OSError:
            pass  # a read-only or full disk: the next task compiles again


def _no_follow(path, flags):
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0))


def _fix_filename(code, filename):
    """Tracebacks name this task's zip, not the one the code was first compiled from
    (what importlib does for a .pyc whose source moved)."""
    fix = getattr(sys.modules.get("_imp"), "_fix_co_filename", None)
    if fix is not None:
        fix(code, filename)


class CachedZipLoader:
    """Loads one module of a zip with code from the CodeCache."""

    def __init__(self, importer, cache, filename):
        self.importer = importer
        self.cache = cache
        self.filename = filename

    def create_module(self, spec):
        return None

    def get_filename(self, fullname):
        return self.filename

    def get_source(self, fullname):
        return self.importer.get_source(fullname)

    def is_package(self, fullname):
        return self.importer.is_package(fullname)

    def get_code(self, fullname):
        source = self.importer.get_source(fullname)
        if source is None:  # bytecode only in the zip: nothing to key the cache on
            return self.importer.get_code(fullname)
        return self.cache.code(fullname, source.encode("utf-8"), self.filename)

    def exec_module(self, module):
        exec(self.get_code(module.__name__), module.__dict__)  # pylint: disable=exec-used


class CachedZipFinder:
    """Finds this collection's module_utils in a zip, with a CachedZipLoader; leaves every
    other import (and this collection on a file system, where Python caches) to Python.

    It builds the spec itself: zipimporter.find_spec asks its own get_filename, which
    compiles the module only to learn its file name (CPython 3.11), so a plain zip import
    compiles every module twice."""

    def __init__(self, cache, package=PACKAGE):
        self.cache = cache
        self.prefix = package + "."

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(self.prefix) or not path:
            return None
        for entry in path:
            spec = self._zip_spec(fullname, entry)
            if spec is not None:
                return spec
        return None

    def _zip_spec(self, fullname, entry):
        try:
            importer = zipimport.zipimporter(entry)
            package = importer.is_package(fullname)
        except (zipimport.ZipImportError, OSError):
            return None  # not a zip, or not in it
        base = os.path.join(importer.archive, importer.prefix, fullname.rpartition(".")[2])
        filename = os.path.join(base, "__init__.py") if package else base + ".py"
        loader = CachedZipLoader(importer, self.cache, filename)
        return importlib.util.spec_from_file_location(
            fullname, filename, loader=loader, submodule_search_locations=[base] if package else None
        )

    def invalidate_caches(self):
        pass


def install(environ=None):
    """Put the finder in front of Python's path finder (once); a no-op when the cache is off
    or its directory is not private. Not at sys.meta_path[0]: that place is ansible-test's
    (its import sanity test checks it), and the built-in and frozen importers before the
    path finder never find this collection's modules anyway."""
    if any(isinstance(finder, CachedZipFinder) for finder in sys.meta_path):
        return
    directory = cache_dir(environ)
    directory = private_dir(directory) if directory else None
    if directory is not None:
        sys.meta_path.insert(_path_finder_index(), CachedZipFinder(CodeCache(directory)))


def _path_finder_index():
    for index, finder in enumerate(sys.meta_path):
        if finder is importlib.machinery.PathFinder:
            return index
    return len(sys.meta_path)


install()
