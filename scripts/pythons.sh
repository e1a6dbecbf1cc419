#!/usr/bin/env bash
# The CPython interpreters of this machine, for the wheel (scripts/wheel.sh) and for
# the binding tests on every CPython (`make test`: scripts/pythons.sh test).
#
#   source scripts/pythons.sh      defines find_pythons [headers]: "X.Y PATH" lines,
#                                  one per CPython 3.9+ minor version, oldest first
#                                  (a venv counts as its base interpreter); with
#                                  `headers`, only those with Python.h.
#   scripts/pythons.sh test        builds the fast module for every CPython found
#                                  (3.9-3.11 each its own; 3.12+ one abi3 file) into
#                                  python/engagehub/ and runs the binding and
#                                  differential tests (BINDING_TESTS below) on each one
#                                  but the one `make py-test` ran the whole suite on
#                                  ($PYTHON), each in a venv of its own under
#                                  build/pyvenv/ (cffi and pytest from PyPI, kept
#                                  between runs). Each of 3.9-3.13 not found is
#                                  skipped with one line saying so.
#
# Interpreters: EH_WHEEL_PYTHONS (space-separated paths) if set, else python3.9 ...
# python3.14 and python3 on PATH and ${PYENV_ROOT:-~/.pyenv}/versions/*/bin/python3.

find_pythons() {
  local want_headers=${1:-} candidates=() p v
  if [ -n "${EH_WHEEL_PYTHONS:-}" ]; then
    read -r -a candidates <<<"$EH_WHEEL_PYTHONS"
  else
    candidates=("${PYENV_ROOT:-$HOME/.pyenv}"/versions/*/bin/python3)
    for v in 3.9 3.10 3.11 3.12 3.13 3.14 3; do
      if p=$(command -v "python$v" 2>/dev/null); then candidates+=("$p"); fi
    done
  fi
  for p in "${candidates[@]}"; do
    [ -x "$p" ] || continue
    v=$(env -u PYTHONPATH -u PYTHONHOME "$p" -c '
import os, sys, sysconfig
ok = sys.implementation.name == "cpython" and sys.version_info >= (3, 9)
if ok and sys.argv[1] == "headers":
    ok = os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
if ok and sys.prefix != sys.base_prefix:  # a venv: use its base interpreter
    ok = False
print("%d.%d" % sys.version_info[:2] if ok else "")' "$want_headers" 2>/dev/null) || continue
    if [ -n "$v" ]; then echo "$v $p"; fi
  done | sort -t. -k1,1n -k2,2n -u -s | awk '!seen[$1]++'
}

# The fast module's own tests (the differential replays included) and the
# leaderboard's (update_user's fast and cffi paths).
BINDING_TESTS=(tests/python/test_processor_fast.py tests/python/test_leaderboard.py)
# What those tests need in each interpreter's venv.
VENV_PACKAGES=("cffi>=1.16" "pytest>=8")

cmd_test() {
  local root main_version pythons line version python venv stamp builds=() failed=0
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  cd "$root" || return 1
  main_version=$(env -u PYTHONPATH "${PYTHON:-python3}" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  pythons=$(find_pythons headers)
  for version in 3.9 3.10 3.11 3.12 3.13; do
    echo "$pythons" | grep -q "^$version " ||
      echo "binding tests: CPython $version not found (with its headers): skipped"
  done
  while read -r line; do
    [ -n "$line" ] && builds+=(--python "${line#* }")
  done <<<"$pythons"
  # One build for all: the per-version files and the one abi3 file, -Werror.
  "${PYTHON:-python3}" python/engagehub/_build_cffi.py --fast-only --out python/engagehub "${builds[@]}" >/dev/null ||
    return 1
  # The venvs first, all at once (pip waits on the network and the disk more than on
  # a core): without pip of their own, filled by $PYTHON's pip (`pip --python`).
  local jobs=() job
  while read -r line; do
    [ -n "$line" ] || continue
    version=${line%% *} python=${line#* }
    [ "$version" = "$main_version" ] && continue
    venv=$root/build/pyvenv/$version
    [ "$(cat "$venv/.packages" 2>/dev/null)" = "${VENV_PACKAGES[*]}" ] && [ -x "$venv/bin/python" ] && continue
    (
      rm -rf "$venv"
      "$python" -m venv --without-pip "$venv" >/dev/null &&
        env -u PYTHONPATH "${PYTHON:-python3}" -m pip --python "$venv/bin/python" install --quiet \
          --disable-pip-version-check "${VENV_PACKAGES[@]}" &&
        echo "${VENV_PACKAGES[*]}" >"$venv/.packages"
    ) &
    jobs+=("$!:$venv")
  done <<<"$pythons"
  for job in "${jobs[@]}"; do
    wait "${job%%:*}" || { echo "binding tests: cannot set up ${job#*:}"; return 1; }
  done
  while read -r line; do
    [ -n "$line" ] || continue
    version=${line%% *} python=${line#* }
    if [ "$version" = "$main_version" ]; then
      echo "binding tests: CPython $version: in the whole suite above"
      continue
    fi
    venv=$root/build/pyvenv/$version
    echo "binding tests: CPython $version ($python)"
    if ! ENGAGEHUB_EXPECT_FAST=1 PYTHONPATH=$root/python "$venv/bin/python" -m pytest -q -p no:cacheprovider \
      "${BINDING_TESTS[@]}"; then
      failed=$((failed + 1))
    fi
  done <<<"$pythons"
  [ "$failed" = 0 ]
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case ${1:-} in
    test) cmd_test ;;
    *) echo "usage: scripts/pythons.sh test  (or source it for find_pythons)" >&2; exit 2 ;;
  esac
fi
