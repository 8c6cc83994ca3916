#!/usr/bin/env bash
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Idempotent installer for a fresh Debian 12 machine (run as root):
#   1. apt packages (QEMU, OVMF, busybox, nftables, ... and PostgreSQL, which is installed
#      but NOT started here),
#   2. the repo venv ($INFINIVIRT_VENV, default <repo>/.venv) with requirements.txt and
#      requirements-test.txt,
#   3. the offline get-pip stand-in that ansible-test needs (~/.ansible/test/cache),
#   4. the collection, built into dist/ and installed into /usr/share/ansible/collections
#      so that a plain ansible-playbook finds infinivirt.core,
#   5. one venv per supported ansible-core (scripts/core-venvs.sh, cached under
#      /var/cache/infinivirt/cores) for tests/integration/test_cores.py.
# Every step checks first and does nothing when its result is already there.
#
# Environment:
#   INFINIVIRT_VENV             venv path (default: <repo>/.venv)
#   INFINIVIRT_PYTHON           interpreter that creates the venv (default: python3, >= 3.11)
#   INFINIVIRT_COLLECTIONS_DIR  install target (default: /usr/share/ansible/collections)
#   INFINIVIRT_REFRESH=1        re-run apt-get update/install and pip install unconditionally

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${INFINIVIRT_VENV:-$REPO/.venv}"
PYTHON="${INFINIVIRT_PYTHON:-python3}"
COLLECTIONS_DIR="${INFINIVIRT_COLLECTIONS_DIR:-/usr/share/ansible/collections}"
REFRESH="${INFINIVIRT_REFRESH:-0}"
GET_PIP_VERSIONS=(24_2 25_2)   # ansible-core 2.19 bootstraps pip 24.2, 2.21 pip 25.2

APT_PACKAGES=(
  qemu-system-x86 qemu-utils ovmf   # QEMU + UEFI firmware
  swtpm                             # software TPM (role infinivirt.core.host installs it)
  busybox-static cpio               # test guest userland and initramfs
  mmdebstrap                        # cloud test guest root file system (tests/guest/build_cloud_guest.py)
  nftables iproute2                 # host networking
  dnsmasq-base                      # DHCP/DNS of mode: nat networks (not "dnsmasq": no system service)
  shellcheck                        # ansible-test sanity "shellcheck"
  libpq-dev gcc python3-dev         # building psycopg2
  python3-venv                      # python3 -m venv on Debian
  postgresql                        # shared state store tests (started by .ci/run, not here)
)

log() { printf '[install] %s\n' "$*" >&2; }
die() { printf '[install] ERROR: %s\n' "$*" >&2; exit 1; }

STEP_START=0
step_begin() { STEP_START=$(date +%s%N); log "$1"; }
step_end() { log "  done in $(( ($(date +%s%N) - STEP_START) / 1000000 )) ms"; }

# --- 1. apt packages ---------------------------------------------------------------------

deny_service_starts() {
  # Keep package postinst scripts (postgresql) from starting services: policy-rc.d exit
  # code 101 = "action forbidden". Only if no policy is in place already.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    POLICY_RC_D_CREATED=1
  fi
}

restore_service_starts() {
  if [[ "${POLICY_RC_D_CREATED:-0}" == 1 ]]; then
    rm -f /usr/sbin/policy-rc.d
    POLICY_RC_D_CREATED=0
  fi
}

install_apt_packages() {
  step_begin "apt packages"
  local missing=() pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -qx 'install ok installed'; then
      missing+=("$pkg")
    fi
  done
  if [[ ${#missing[@]} -eq 0 && "$REFRESH" != 1 ]]; then
    log "  all ${#APT_PACKAGES[@]} packages already installed"
  else
    # Normally only the missing packages (installed ones are left at their version);
    # INFINIVIRT_REFRESH=1 re-installs/upgrades the whole list.
    [[ "$REFRESH" == 1 ]] && missing=("${APT_PACKAGES[@]}")
    [[ $EUID -eq 0 ]] || die "must run as root to install: ${missing[*]}"
    log "  installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    trap restore_service_starts EXIT
    deny_service_starts
    apt-get install -y --no-install-recommends "${missing[@]}"
    restore_service_starts
    trap - EXIT
  fi
  step_end
}

# --- 2. venv + Python packages -------------------------------------------------------------

python_ok() {  # $1 = interpreter; true if it runs and is >= 3.11 (ansible-core 2.19 controller)
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null
}

requirements_hash() {
  {
    "$VENV/bin/python" -c 'import sys; print(sys.version)'
    cat "$REPO/requirements.txt" "$REPO/requirements-test.txt"
  } | sha256sum | cut -d' ' -f1
}

setup_venv() {
  step_begin "venv $VENV"
  if [[ -x "$VENV/bin/python" ]] && python_ok "$VENV/bin/python" && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    log "  venv present ($("$VENV/bin/python" -V 2>&1))"
  else
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set INFINIVIRT_PYTHON)"
    python_ok "$PYTHON" || die "$PYTHON is older than 3.11; ansible-core 2.19 needs a 3.11+ controller (set INFINIVIRT_PYTHON)"
    log "  creating it with $(command -v "$PYTHON") ($("$PYTHON" -V 2>&1))"
    "$PYTHON" -m venv --clear "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
  fi
  step_end

  step_begin "python packages (requirements.txt, requirements-test.txt)"
  local stamp="$VENV/.infinivirt-requirements.sha256" want tool missing_tools=0
  want="$(requirements_hash)"
  for tool in ansible-galaxy ansible-test ansible-lint antsibull-changelog antsibull-docs ansible-builder molecule pytest ruff; do
    [[ -x "$VENV/bin/$tool" ]] || missing_tools=1
  done
  if [[ "$REFRESH" != 1 && $missing_tools == 0 && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "  up to date (requirements unchanged since last install)"
  else
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off \
      -r "$REPO/requirements.txt" -r "$REPO/requirements-test.txt"
    printf '%s\n' "$want" > "$stamp"
  fi
  step_end
}

# --- 3. get-pip stand-in for ansible-test ---------------------------------------------------

install_get_pip_shim() {
  step_begin "ansible-test get-pip stand-in"
  local cache="$HOME/.ansible/test/cache" v
  mkdir -p "$cache"
  for v in "${GET_PIP_VERSIONS[@]}"; do
    if ! cmp -s "$REPO/tests/utils/get_pip_shim.py" "$cache/get_pip_$v.py"; then
      install -m 0644 "$REPO/tests/utils/get_pip_shim.py" "$cache/get_pip_$v.py"
      log "  installed $cache/get_pip_$v.py"
    fi
  done
  step_end
}

# --- 4. build + install the collection ------------------------------------------------------

install_collection() {
  step_begin "collection build + install into $COLLECTIONS_DIR"
  local version tarball installed
  [[ -f "$REPO/README.md" ]] || die "README.md is missing (galaxy.yml names it as the collection readme)"
  version="$("$VENV/bin/python" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["version"])' "$REPO/galaxy.yml")"
  tarball="$REPO/dist/infinivirt-core-$version.tar.gz"
  installed="$COLLECTIONS_DIR/ansible_collections/infinivirt/core"
  mkdir -p "$REPO/dist"
  (cd "$REPO" && "$VENV/bin/ansible-galaxy" collection build --force --output-path "$REPO/dist" "$REPO" >/dev/null)
  # MANIFEST.json carries the checksum of FILES.json (every file's sha256): equal manifests
  # mean the installed copy already has exactly this content.
  if [[ -f "$installed/MANIFEST.json" ]] && tar -xOzf "$tarball" MANIFEST.json | cmp -s - "$installed/MANIFEST.json"; then
    log "  $tarball already installed"
  else
    "$VENV/bin/ansible-galaxy" collection install --force -p "$COLLECTIONS_DIR" "$tarball"
  fi
  step_end
}

# --- 5. a venv per ansible-core --------------------------------------------------------------

install_core_venvs() {
  step_begin "ansible-core venvs (2.15 to 2.19)"
  bash "$REPO/scripts/core-venvs.sh" >/dev/null
  step_end
}

main() {
  local t0
  t0=$(date +%s%N)
  install_apt_packages
  setup_venv
  install_get_pip_shim
  install_collection
  install_core_venvs
  log "finished in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}

main "$@"
