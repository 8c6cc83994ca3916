#!/usr/bin/env bash
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# README command 1: install everything (scripts/install.sh), build the test guest, then run
# the quick-start playbook against this machine with the collection as installed by
# install.sh. Extra arguments go to ansible-playbook, e.g.
#   scripts/setup.sh -e quickstart_keep=true
#
# Environment (besides install.sh's):
#   INFINIVIRT_GUEST_JSON   where build_guest.py's JSON goes (default: <repo>/.cache/guest.json)

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${INFINIVIRT_VENV:-$REPO/.venv}"
COLLECTIONS_DIR="${INFINIVIRT_COLLECTIONS_DIR:-/usr/share/ansible/collections}"
GUEST_JSON="${INFINIVIRT_GUEST_JSON:-$REPO/.cache/guest.json}"

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

t=$(now_ms)
bash "$REPO/scripts/install.sh"
log "install.sh: $(( $(now_ms) - t )) ms"

t=$(now_ms)
[[ -f "$REPO/tests/guest/build_guest.py" ]] || die "tests/guest/build_guest.py is missing"
mkdir -p "$(dirname "$GUEST_JSON")"
# Write to a temp file first, so a failed build never leaves a half-written guest.json.
check_guest_json() {
  "$VENV/bin/python" - "$1" <<'PY'
import json
import sys

with open(sys.argv[1]) as f:
    guest = json.load(f)
missing = [k for k in ("kernel", "initrd", "kernel_version", "kernel_cmdline") if k not in guest]
if missing:
    sys.exit("build_guest.py output lacks %s" % ", ".join(missing))
PY
}
if ! "$VENV/bin/python" "$REPO/tests/guest/build_guest.py" > "$GUEST_JSON.tmp" || ! check_guest_json "$GUEST_JSON.tmp"; then
  rm -f "$GUEST_JSON.tmp"
  die "building the test guest failed (tests/guest/build_guest.py)"
fi
mv "$GUEST_JSON.tmp" "$GUEST_JSON"
log "test guest: $GUEST_JSON ($(( $(now_ms) - t )) ms)"

t=$(now_ms)
[[ -f "$REPO/playbooks/quickstart.yml" ]] || die "playbooks/quickstart.yml is missing"
(
  cd "$REPO"
  ANSIBLE_COLLECTIONS_PATH="$COLLECTIONS_DIR" \
    "$VENV/bin/ansible-playbook" -i localhost, -c local playbooks/quickstart.yml \
    -e "@$GUEST_JSON" \
    -e "ansible_python_interpreter=$VENV/bin/python" \
    "$@"
)
log "quickstart playbook: $(( $(now_ms) - t )) ms"
