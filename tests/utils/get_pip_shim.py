# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Offline stand-in for ansible-test's ``get-pip-<version>.py`` bootstrap script.

ansible-test (``--venv`` / ``--local``) bootstraps pip in every virtual environment it
creates by running ``https://ci-files.testing.ansible.com/ansible-test/get-pip-<ver>.py``,
cached as ``~/.ansible/test/cache/get_pip_<ver with _>.py``.  That host is not reachable
from our CI, so scripts/install.sh copies this file to that cache path
(see ansible/ansible#77304).

It is run as ``python get_pip_X_Y.py [pip options] pip==X.Y [--no-setuptools] [--no-wheel]``
(via runpy, as ``__main__``) and does:

1. ``python -m ensurepip --upgrade --default-pip`` in a *subprocess*.  ensurepip sets
   ``PIP_CONFIG_FILE=/dev/null`` in the process that runs it, which would drop
   /etc/pip.conf (and with it the certificate settings that make PyPI reachable here);
   a subprocess keeps that from leaking into step 2.
2. ``python -m pip install <the remaining arguments>``, i.e. the exact pip version
   ansible-test asked for.  ``--no-setuptools`` / ``--no-wheel`` are get-pip-only options
   and are dropped.
"""

from __future__ import annotations

import os
import subprocess
import sys

IGNORED_OPTIONS = frozenset(("--no-setuptools", "--no-wheel"))


def _run(argv: list[str]) -> int:
    print("get-pip shim: %s" % " ".join(argv), file=sys.stderr, flush=True)
    return subprocess.call(argv, env=os.environ.copy())


def main(args: list[str]) -> int:
    install_args = [arg for arg in args if arg not in IGNORED_OPTIONS]

    rc = _run([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
    if rc != 0:
        print("get-pip shim: ensurepip failed with exit code %d" % rc, file=sys.stderr)
        return rc

    if not any(not arg.startswith("-") for arg in install_args):
        # Nothing to install (plain "get-pip.py"): ensurepip's pip is all we were asked for.
        return 0

    rc = _run([sys.executable, "-m", "pip", "install"] + install_args)
    if rc != 0:
        print("get-pip shim: 'pip install %s' failed with exit code %d" % (" ".join(install_args), rc), file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
