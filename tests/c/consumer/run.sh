#!/bin/sh
# ctest's install_consumer: `make install` staged into a scratch DESTDIR, checked
# (the files, the links, the SONAME), then consumer.c built against it the way a
# user would, with pkg-config, once against the shared library and once
# (pkg-config --static) against the static one, and both run; finally `make
# uninstall` with the same DESTDIR and PREFIX must remove everything it installed
# and nothing else.
#
# Usage: run.sh REPO_ROOT LIB_DIR SCRATCH [CC]
#   LIB_DIR: the cargo output folder to install (ctest passes its target/debug).
#   SCRATCH: a folder of the build tree, emptied first (the DESTDIR is under it).
set -eu

root=$1
lib_dir=$2
scratch=$3
cc=${4:-${CC:-cc}}
here=$(cd "$(dirname "$0")" && pwd)
stage=$scratch/stage
work=$scratch/work
prefix=/opt/engagehub
lib=$stage$prefix/lib

fail() {
  echo "run.sh: $*" >&2
  exit 1
}

# Run from ctest under `make c-test`: don't inherit the outer make's flags.
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES || true

rm -rf "$scratch"
mkdir -p "$stage" "$work"
make -s -C "$root" install PREFIX="$prefix" DESTDIR="$stage" LIB_DIR="$lib_dir"

version=$(awk -F'"' '/^\[/ { pkg = ($0 == "[package]") } pkg && /^version *=/ { print $2; exit }' "$root/Cargo.toml")
# The SONAME rule of build.rs: the major version, or 0.<minor> while it is 0.x.
case $version in
  0.*) soversion=0.$(echo "$version" | cut -d. -f2) ;;
  *) soversion=${version%%.*} ;;
esac
soname=libengagehub.so.$soversion

# Exactly these files and links, nothing else.
expected=$(printf '%s\n' "$prefix/include/engagehub.h" "$prefix/lib/libengagehub.a" \
  "$prefix/lib/libengagehub.so" "$prefix/lib/$soname" "$prefix/lib/libengagehub.so.$version" \
  "$prefix/lib/pkgconfig/engagehub.pc" | sort)
installed=$(cd "$stage" && find . ! -type d | sed 's|^\.||' | sort)
[ "$installed" = "$expected" ] || fail "make install put there:
$installed
expected:
$expected"
[ -f "$lib/libengagehub.so.$version" ] && [ ! -L "$lib/libengagehub.so.$version" ] ||
  fail "lib/libengagehub.so.$version is not a regular file"
[ "$(readlink "$lib/$soname")" = "libengagehub.so.$version" ] ||
  fail "lib/$soname links to '$(readlink "$lib/$soname")', expected libengagehub.so.$version"
[ "$(readlink "$lib/libengagehub.so")" = "$soname" ] ||
  fail "lib/libengagehub.so links to '$(readlink "$lib/libengagehub.so")', expected $soname"
actual_soname=$(readelf -d "$lib/libengagehub.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$actual_soname" = "$soname" ] || fail "the installed library's SONAME is '$actual_soname', expected $soname"
echo "installed: libengagehub.so.$version, SONAME $soname, links $soname and libengagehub.so"

# The .pc file names the final PREFIX; the sysroot maps it into the staged tree.
PKG_CONFIG_SYSROOT_DIR=$stage
export PKG_CONFIG_SYSROOT_DIR
PKG_CONFIG_PATH=$lib/pkgconfig
export PKG_CONFIG_PATH
[ "$(pkg-config --modversion engagehub)" = "$version" ] || fail "pkg-config --modversion is not $version"
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

# Shared: -lengagehub finds lib/libengagehub.so (the link); the program records the
# SONAME, so at run time the loader needs lib/$soname.
# shellcheck disable=SC2086 # pkg-config output is meant to be word-split
$cc $warnings "$here/consumer.c" -o "$work/consumer_shared" $cflags $libs
needed=$(readelf -d "$work/consumer_shared" | sed -n 's/.*(NEEDED).*\[\(libengagehub[^]]*\)\]/\1/p')
[ "$needed" = "$soname" ] || fail "consumer_shared needs '$needed', expected $soname"
LD_LIBRARY_PATH=$lib "$work/consumer_shared" "$version"

# Static: lib/ holds both libraries and the linker prefers the .so for -lengagehub,
# so ask for the archive with -Bstatic around it; Libs.private (--static) brings
# the system libraries the Rust code needs, linked dynamically as usual.
static_link=$(printf '%s\n' "$static_libs" | sed 's/-lengagehub/-Wl,-Bstatic -lengagehub -Wl,-Bdynamic/')
# shellcheck disable=SC2086
$cc $warnings "$here/consumer.c" -o "$work/consumer_static" $cflags $static_link
if readelf -d "$work/consumer_static" | grep -q 'NEEDED.*libengagehub'; then
  fail "consumer_static still needs libengagehub.so"
fi
env -u LD_LIBRARY_PATH "$work/consumer_static" "$version"

# Uninstall: everything install put there goes, a neighbour's files stay.
touch "$lib/libneighbour.so.1" "$stage$prefix/include/neighbour.h"
make -s -C "$root" uninstall PREFIX="$prefix" DESTDIR="$stage"
left=$(cd "$stage" && find . ! -type d | sed 's|^\.||' | sort)
[ "$left" = "$(printf '%s\n' "$prefix/include/neighbour.h" "$prefix/lib/libneighbour.so.1")" ] ||
  fail "after make uninstall the staged tree holds:
$left
expected only the two files install did not put there"
echo "uninstalled: nothing of engagehub left in the staged tree"
