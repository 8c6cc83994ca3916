#!/usr/bin/env bash
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# README command 2: run the whole test suite (unit, integration, guest, lint/packaging).
#   scripts/test.sh            the whole suite (what CI runs), on pytest-xdist workers
#   scripts/test.sh --quick    the inner loop: what needs no QEMU, no PostgreSQL, no Molecule,
#                              no other ansible-core and no whole-collection tool (pytest.ini)
# Extra arguments go to pytest, e.g. scripts/test.sh -k sanity -x, or
# scripts/test.sh tests/lint (named paths replace the default tests/).
# INFINIVIRT_TEST_WORKERS sets the number of workers (0 or 1: no xdist, one process).
# Exit code: pytest's; "no tests collected" (pytest exit 5) counts as a failure.

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${INFINIVIRT_VENV:-$REPO/.venv}"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[test] no venv at $VENV: running scripts/install.sh first" >&2
  bash "$REPO/scripts/install.sh"
fi

# shellcheck disable=SC1091  # created by install.sh
source "$VENV/bin/activate"
cd "$REPO"

quick=0
args=()
for arg in "$@"; do
  if [[ "$arg" == --quick ]]; then
    quick=1
  else
    args+=("$arg")
  fi
done

# Run tests/ unless the caller names test paths of their own.
targets=(tests/)
for arg in "${args[@]}"; do
  if [[ "$arg" != -* && -e "${arg%%::*}" ]]; then
    targets=()
    break
  fi
done

# Three on 2 cores: the tests wait for guests, QMP and playbooks as much as they compute, and
# three keep both cores busy (measured: 95% busy, the whole suite in 13 minutes).
workers="${INFINIVIRT_TEST_WORKERS:-3}"
opts=(-ra --durations=25)
if [[ $quick -eq 1 ]]; then
  # The quick tier must not start QEMU: a stand-in first on PATH fails any test that tries,
  # so a test missing its qemu marker shows up here instead of slowing the loop down.
  stub="$(mktemp -d)"
  trap 'rm -rf "$stub"' EXIT
  printf '#!/bin/sh\necho "scripts/test.sh --quick: this test starts QEMU; mark it qemu (pytest.ini)" >&2\nexit 97\n' \
    >"$stub/qemu-system-x86_64"
  chmod 755 "$stub/qemu-system-x86_64"
  export PATH="$stub:$PATH"
  opts+=(-m "not (qemu or guest or postgres or cores or role or slow)")
  workers=0
fi
if [[ "$workers" -gt 1 ]]; then
  opts+=(-n "$workers")  # one file per worker at a time: tests/conftest.py
fi

rc=0
python -m pytest "${targets[@]}" "${opts[@]}" "${args[@]}" || rc=$?

if [[ $rc -eq 5 ]]; then
  echo "[test] ERROR: pytest collected no tests (exit code 5); treating that as a failure" >&2
  exit 1
fi
exit "$rc"
