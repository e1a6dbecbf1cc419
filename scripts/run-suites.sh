#!/usr/bin/env bash
# `make test`'s driver: runs each suite (a make target) in order, stops at the
# first that fails, and ends with every suite's wall-clock time, so a slow suite
# is visible at a glance.
#
# Usage: scripts/run-suites.sh NAME=TARGET...   (make is $MAKE, default make)
set -uo pipefail
cd "$(dirname "$0")/.."

now() { echo "${EPOCHREALTIME:-$(date +%s.%N)}"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

names=() times=() failed=
start=$(now)
for pair in "$@"; do
  name=${pair%%=*} target=${pair#*=}
  echo "==> $name (make $target)"
  t0=$(now)
  ${MAKE:-make} --no-print-directory "$target"
  rc=$?
  names+=("$name") times+=("$(elapsed "$t0" "$(now)")")
  if [ "$rc" != 0 ]; then
    failed=$name
    break
  fi
done

echo "suite times (s):"
for i in "${!names[@]}"; do
  printf '  %-8s %6s\n' "${names[$i]}" "${times[$i]}"
done
printf '  %-8s %6s\n' total "$(elapsed "$start" "$(now)")"
if [ -n "$failed" ]; then
  echo "make test: suite '$failed' FAILED"
  exit 1
fi
echo "make test: all suites passed"
