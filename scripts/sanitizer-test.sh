#!/usr/bin/env bash
# `make asan-test` / `make tsan-test`: the Rust library itself built with
# -Zsanitizer=address (resp. thread) on nightly, then
#   1. the C tests (tests/c, ctest) built with -fsanitize=address,undefined (resp.
#      thread) and linked against that library, shared and static;
#   2. the Rust pipeline stress test (tests/pipeline_stress.rs) under the same
#      sanitizer.
# With rust-src installed, std is rebuilt with the sanitizer too (-Zbuild-std),
# which ThreadSanitizer needs to see std's synchronisation (no false positives).
# Own target dirs (target/asan, target/tsan) and build dirs (build/c-asan, -tsan).
#
# Usage: scripts/sanitizer-test.sh address|thread
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

sanitizer=$1
NIGHTLY=${NIGHTLY:-nightly}
CARGO=${CARGO:-cargo}
triple=x86_64-unknown-linux-gnu
case $sanitizer in
  address) short=asan; c_sanitizers=address,undefined ;;
  thread) short=tsan; c_sanitizers=thread ;;
  *) echo "usage: $0 address|thread" >&2; exit 2 ;;
esac

target_dir=$root/target/$short
rustflags="-Zsanitizer=$sanitizer -Cforce-frame-pointers=yes"
build_std=(-Zbuild-std)
if [ ! -d "$(rustc "+$NIGHTLY" --print sysroot)/lib/rustlib/src/rust/library" ]; then
  echo "$short: rust-src missing, std is not instrumented (ThreadSanitizer may report false positives)"
  build_std=()
  rustflags="$rustflags -Cunsafe-allow-abi-mismatch=sanitizer"
fi
# Line tables are enough for the reports' stacks and build faster than full debuginfo.
cargo_san() {
  RUSTFLAGS="$rustflags" RUSTDOCFLAGS="$rustflags" CARGO_TARGET_DIR=$target_dir \
    CARGO_PROFILE_DEV_DEBUG=line-tables-only \
    "$CARGO" "+$NIGHTLY" "$@" "${build_std[@]}" --target "$triple"
}

# Any report fails the run: ASan and UBSan stop at the first error, TSan too.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}

echo "$short: building the library with -Zsanitizer=$sanitizer ${build_std[*]}"
cargo_san build --quiet --lib
lib_dir=$target_dir/$triple/debug

echo "$short: C tests (ctest, -fsanitize=$c_sanitizers)"
cmake -S tests/c -B "build/c-$short" -DENGAGEHUB_LIB_DIR="$lib_dir" \
  -DENGAGEHUB_SANITIZERS="$c_sanitizers" -DENGAGEHUB_INSTALL_TEST=OFF >/dev/null
cmake --build "build/c-$short" -j2 >/dev/null
ctest --test-dir "build/c-$short" --output-on-failure --no-tests=error

echo "$short: Rust pipeline stress test"
cargo_san test --quiet --test pipeline_stress
echo "$short: clean"
