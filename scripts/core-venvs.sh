#!/usr/bin/env bash
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# One venv per supported ansible-core (meta/runtime.yml requires_ansible), for the
# per-core tests (tests/integration/test_cores.py): ansible-core 2.X, pytest and the
# managed-host libraries of requirements.txt. Each venv is kept and reused until its
# requirements change (a stamp file holds their hash).
#
#   scripts/core-venvs.sh [2.15 2.16 ...]     default: every core in CORES below
#   prints "<core> <venv>" per line on stdout; logs on stderr
#
# Environment:
#   INFINIVIRT_CORES_DIR   where the venvs go (default: /var/cache/infinivirt/cores)
#   INFINIVIRT_PYTHON      interpreter that creates them (default: python3, 3.11: every core
#                          from 2.15 to 2.19 runs a controller on 3.11)

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${INFINIVIRT_CORES_DIR:-/var/cache/infinivirt/cores}"
PYTHON="${INFINIVIRT_PYTHON:-python3}"
CORES=(2.15 2.16 2.17 2.18 2.19)

log() { printf '[core-venvs] %s\n' "$*" >&2; }

[[ $# -gt 0 ]] && CORES=("$@")

for core in "${CORES[@]}"; do
  venv="$DIR/ansible-core-$core"
  want="$( { "$PYTHON" -c 'import sys; print(sys.version)'; echo "ansible-core==$core.*"; cat "$REPO/requirements.txt"; } | sha256sum | cut -d' ' -f1)"
  if [[ -x "$venv/bin/ansible-playbook" && -f "$venv/.stamp" && "$(cat "$venv/.stamp")" == "$want" ]]; then
    log "ansible-core $core: $venv is up to date"
  else
    start=$(date +%s)
    log "ansible-core $core: creating $venv"
    mkdir -p "$DIR"
    # The stamp is written last: a venv cut short has none and is made again from scratch.
    rm -f "$venv/.stamp"
    "$PYTHON" -m venv --clear "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off \
      "ansible-core==$core.*" pytest -r "$REPO/requirements.txt"
    printf '%s\n' "$want" > "$venv/.stamp"
    log "ansible-core $core: ready in $(( $(date +%s) - start )) s ($("$venv/bin/ansible" --version 2>/dev/null | sed -n 1p))"
  fi
  printf '%s %s\n' "$core" "$venv"
done
