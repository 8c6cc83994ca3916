#!/usr/bin/env bash
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# README command 2: run the whole test suite (unit, integration, guest, lint/packaging).
# Extra arguments go to pytest, e.g. scripts/test.sh -k sanity -x, or
# scripts/test.sh tests/lint (named paths replace the default tests/).
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

# Run tests/ unless the caller names test paths of their own.
targets=(tests/)
for arg in "$@"; do
  if [[ "$arg" != -* && -e "${arg%%::*}" ]]; then
    targets=()
    break
  fi
done

rc=0
python -m pytest "${targets[@]}" -ra --durations=15 "$@" || rc=$?

if [[ $rc -eq 5 ]]; then
  echo "[test] ERROR: pytest collected no tests (exit code 5); treating that as a failure" >&2
  exit 1
fi
exit "$rc"
