#!/bin/sh
# ctest's install_consumer: `make install` into a scratch prefix, then build
# consumer.c against it the way a user would, with pkg-config, once against the
# shared library and once (pkg-config --static) against the static one, and run both.
#
# Usage: run.sh REPO_ROOT LIB_DIR PREFIX [CC]
#   LIB_DIR: the cargo output folder to install (ctest passes its target/debug).
set -eu

root=$1
lib_dir=$2
prefix=$3
cc=${4:-${CC:-cc}}
here=$(cd "$(dirname "$0")" && pwd)
work=$(dirname "$prefix")/install_consumer

# Run from ctest under `make c-test`: don't inherit the outer make's flags.
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES || true

rm -rf "$prefix" "$work"
mkdir -p "$work"
make -s -C "$root" install PREFIX="$prefix" DESTDIR= LIB_DIR="$lib_dir"

PKG_CONFIG_PATH=$prefix/lib/pkgconfig
export PKG_CONFIG_PATH
version=$(pkg-config --modversion engagehub)
cflags=$(pkg-config --cflags engagehub)
libs=$(pkg-config --libs engagehub)
static_libs=$(pkg-config --static --libs engagehub)
echo "pkg-config: engagehub $version"
echo "  --cflags:        $cflags"
echo "  --libs:          $libs"
echo "  --static --libs: $static_libs"
for flag in -lpthread -ldl -lm; do
  case " $static_libs " in
    *" $flag "*) ;;
    *) echo "run.sh: $flag (Libs.private) missing from pkg-config --static" >&2; exit 1 ;;
  esac
done

warnings="-std=c99 -Wall -Wextra -Werror -pedantic"

# Shared: -lengagehub finds lib/libengagehub.so.
# shellcheck disable=SC2086 # pkg-config output is meant to be word-split
$cc $warnings "$here/consumer.c" -o "$work/consumer_shared" $cflags $libs
LD_LIBRARY_PATH=$prefix/lib "$work/consumer_shared" "$version"

# Static: lib/ holds both libraries and the linker prefers the .so for -lengagehub,
# so ask for the archive with -Bstatic around it; Libs.private (--static) brings
# the system libraries the Rust code needs, linked dynamically as usual.
static_link=$(printf '%s\n' "$static_libs" | sed 's/-lengagehub/-Wl,-Bstatic -lengagehub -Wl,-Bdynamic/')
# shellcheck disable=SC2086
$cc $warnings "$here/consumer.c" -o "$work/consumer_static" $cflags $static_link
if command -v readelf >/dev/null 2>&1 && readelf -d "$work/consumer_static" | grep -q 'NEEDED.*libengagehub'; then
  echo "run.sh: consumer_static still needs libengagehub.so" >&2
  exit 1
fi
env -u LD_LIBRARY_PATH "$work/consumer_static" "$version"
