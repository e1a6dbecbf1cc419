"""Build steps of ``python3 -m pip install .`` / ``pip wheel .`` (metadata is in
pyproject.toml).

1. ``build_rust``: the Rust library as a shared library only (``cargo rustc --release
   --locked --lib --crate-type cdylib --target T``, stripped; ``$CARGO`` names cargo;
   the target folder is cargo's own, so ``CARGO_TARGET_DIR`` and
   ``.cargo/config.toml`` are honoured; output in ``<target>/<T>/release``).
2. ``build_py``: the Python sources, plus ``libengagehub.so`` and
   ``include/engagehub.h`` copied into the built package.
3. ``build_ext``: ``engagehub._engagehub_cffi``, the cffi API-mode module, generated
   by ``python/engagehub/_build_cffi.py``'s ``make_builder`` and linked against that
   ``libengagehub.so`` (rpath ``$ORIGIN``: the engine is in the package once, and the
   ABI mode, ``ENGAGEHUB_LIB`` / ``ENGAGEHUB_ABI=1``, dlopens the same file); it uses
   only the limited API (cffi's own choice), hence ``.abi3.so`` and the wheel tag
   ``cp39-abi3``. And ``engagehub._engagehub_fast``, the hand-written C module of
   the fast paths (``python/engagehub/_engagehub_fast.c``, compiled against
   ``include/engagehub.h``): for CPython 3.12 and later one module on the stable ABI
   (``Py_LIMITED_API=0x030C0000``, ``_engagehub_fast.abi3.so``, loaded by every
   later CPython too); for 3.9-3.11, whose stable ABI lacks vectorcall, the same
   source per version (``_engagehub_fast.cpython-3XY-....so``). Built for the
   interpreter running the build and for each one listed in
   ``ENGAGEHUB_FAST_PYTHONS`` (``os.pathsep``-separated; 3.9+; any of 3.12+ gives the
   abi3 module, once): the import system picks the running interpreter's own file,
   else the abi3 one, and an interpreter with neither uses the cffi paths.

Toolchain (``ENGAGEHUB_TOOLCHAIN``: ``zig``, ``host`` or unset for zig when found):

* zig, on x86_64 Linux when a Python with ``ziglang`` (this one, or
  ``ENGAGEHUB_ZIG_PYTHON``) and ``cargo-zigbuild`` (on PATH or beside that Python)
  are found: cargo through cargo-zigbuild and the C modules through ``zig cc``, all
  for glibc 2.17, so the wheel is manylinux2014 (``make wheel`` also runs
  ``auditwheel repair``, which gives it that tag).
* host: cargo and the C compiler Python was built with, for this machine's glibc
  (a ``linux_x86_64`` wheel, fine for installing here).

setuptools' build folder is ``build/python`` (``build/python-manylinux2014`` with zig;
the Makefile owns the rest of ``build/``).
The package version is Cargo.toml's ``[package] version``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import Command, Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext
from setuptools.command.build_py import build_py as _build_py
from setuptools.errors import ExecError, FileError, PlatformError

ROOT = Path(__file__).resolve().parent
PACKAGE = "engagehub"
CFFI_MODULE = "engagehub._engagehub_cffi"
HEADER = ROOT / "include" / "engagehub.h"

if sys.platform == "darwin":
    SHARED_LIB = "libengagehub.dylib"
elif sys.platform == "win32":
    SHARED_LIB = "engagehub.dll"
else:
    SHARED_LIB = "libengagehub.so"
FAST_MODULE = "engagehub._engagehub_fast"
FAST_SOURCE = Path("python") / "engagehub" / "_engagehub_fast.c"
# Oldest CPython the package supports (pyproject's requires-python) = the abi3 tag.
MIN_PYTHON = (3, 9)
# manylinux2014 = glibc 2.17; zig's and cargo-zigbuild's spellings of that target.
ZIG_TARGET = "x86_64-linux-gnu.2.17"
ZIG_RUST_TARGET = "x86_64-unknown-linux-gnu.2.17"
RUST_TARGET_DIR_NAME = "x86_64-unknown-linux-gnu"
# What the C modules are compiled with under zig (it builds in its Debug mode, with
# UBSan traps, unless told an -O level).
ZIG_CFLAGS = ["-O2", "-fPIC", "-DNDEBUG", "-fwrapv", "-fno-strict-aliasing", "-Wall"]


def cargo_version() -> str:
    """``version`` of Cargo.toml's ``[package]`` table (no TOML parser before 3.11)."""
    section = None
    for line in (ROOT / "Cargo.toml").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        header = re.fullmatch(r"\[([^\[\]]+)\]", line)
        if header:
            section = header.group(1).strip()
        elif section == "package":
            match = re.fullmatch(r'version\s*=\s*"([^"]+)"', line)
            if match:
                return match.group(1)
    raise FileError("no [package] version in Cargo.toml")


def _cargo() -> str:
    return os.environ.get("CARGO") or "cargo"


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=ROOT, check=True, **kwargs)
    except FileNotFoundError as exc:
        raise ExecError(
            f"{cmd[0]!r} not found: building engagehub needs Rust (https://rustup.rs) "
            "or CARGO=/path/to/cargo"
        ) from exc
    except subprocess.CalledProcessError as exc:
        raise ExecError(f"{' '.join(cmd)} failed with exit code {exc.returncode}") from exc


class Toolchain:
    """zig (glibc 2.17, for manylinux2014 wheels) or the host's tools; see the module
    docstring. Decided once per build."""

    def __init__(self) -> None:
        choice = os.environ.get("ENGAGEHUB_TOOLCHAIN", "").strip().lower()
        if choice not in ("", "zig", "host"):
            raise PlatformError(f"ENGAGEHUB_TOOLCHAIN={choice!r}: expected zig or host")
        self.zig: str | None = None  # the zig executable
        self.zigbuild: str | None = None
        self.why_host = "ENGAGEHUB_TOOLCHAIN=host"
        if choice != "host":
            found, why = self._find_zig()
            if found is None:
                if choice == "zig":
                    raise PlatformError(f"ENGAGEHUB_TOOLCHAIN=zig: {why}")
                self.why_host = why
            else:
                self.zig, self.zigbuild = found

    @staticmethod
    def _find_zig() -> tuple[tuple[str, str] | None, str]:
        import platform

        if sys.platform != "linux" or platform.machine() != "x86_64":
            return None, f"zig builds are set up for x86_64 Linux only, not {sys.platform} {platform.machine()}"
        zig = os.environ.get("ENGAGEHUB_ZIG")
        python = os.environ.get("ENGAGEHUB_ZIG_PYTHON") or sys.executable
        if zig:
            if not os.access(zig, os.X_OK):
                return None, f"ENGAGEHUB_ZIG={zig!r} is not an executable"
        else:
            # The zig binary inside the ziglang package. Without pip's build-isolation
            # variables: they would hide that Python's own site-packages.
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONNOUSERSITE")}
            try:
                probe = subprocess.run(
                    [python, "-c", "import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), 'zig'))"],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False, env=env,
                )
            except OSError as exc:
                return None, f"cannot run ENGAGEHUB_ZIG_PYTHON={python!r}: {exc}"
            zig = probe.stdout.strip()
            if probe.returncode != 0 or not os.access(zig, os.X_OK):
                return None, (f"no ziglang in {python} (pip install ziglang, or set ENGAGEHUB_ZIG_PYTHON "
                              "to a python that has it, or ENGAGEHUB_ZIG to a zig executable)")
        zigbuild = shutil.which("cargo-zigbuild") or shutil.which("cargo-zigbuild", path=str(Path(python).parent))
        if zigbuild is None:
            return None, "cargo-zigbuild not found on PATH nor beside ENGAGEHUB_ZIG_PYTHON (pip install cargo-zigbuild)"
        return (zig, zigbuild), ""

    def describe(self) -> str:
        if self.zig:
            return f"zig ({self.zig}, {self.zigbuild}) for glibc 2.17 (manylinux2014)"
        return f"the host toolchain, for this machine's glibc ({self.why_host}); the wheel is linux_*, not manylinux"

    def configure(self, compiler) -> None:
        """Points a distutils compiler at zig cc (no-op for the host one), linking
        stripped (-s) either way."""
        if self.zig:
            cc = [self.zig, "cc", "-target", ZIG_TARGET]
            compiler.set_executables(
                compiler=cc + ZIG_CFLAGS, compiler_so=cc + ZIG_CFLAGS, compiler_cxx=cc + ZIG_CFLAGS,
                linker_so=cc + ["-shared", "-s"], linker_exe=cc,
            )
        else:
            compiler.linker_so = list(compiler.linker_so) + ["-s"]


_TOOLCHAIN: Toolchain | None = None


def toolchain() -> Toolchain:
    global _TOOLCHAIN
    if _TOOLCHAIN is None:
        _TOOLCHAIN = Toolchain()
    return _TOOLCHAIN


def _host_target() -> str:
    rustc = os.environ.get("RUSTC") or "rustc"
    out = _run([rustc, "-vV"], stdout=subprocess.PIPE, text=True).stdout
    for line in out.splitlines():
        if line.startswith("host: "):
            return line.split(None, 1)[1].strip()
    raise ExecError(f"{rustc} -vV printed no host triple")


class build_rust(Command):
    """Builds the release Rust library (shared only, stripped) with cargo."""

    description = "build the Rust shared library (cargo rustc --release --locked --crate-type cdylib)"
    user_options: list = []

    def initialize_options(self) -> None:
        self.release_dir: Path | None = None
        self.target: str | None = None

    def finalize_options(self) -> None:
        # Ask cargo where its target folder is: CARGO_TARGET_DIR, config files...
        metadata = _run(
            [_cargo(), "metadata", "--format-version", "1", "--no-deps", "--locked",
             "--manifest-path", str(ROOT / "Cargo.toml")],
            stdout=subprocess.PIPE,
        )
        target_dir = Path(json.loads(metadata.stdout)["target_directory"])
        # An explicit --target, also for the host: its own folder, so the profile
        # settings below do not rebuild `cargo build --release`'s target/release.
        # The zig build in a target folder of its own: its triple's folder name is the
        # host's, and cargo would not always see that the linker changed.
        self.cargo_target_dir: Path | None = None
        if toolchain().zig:
            self.target = ZIG_RUST_TARGET
            self.cargo_target_dir = target_dir / "manylinux2014"
            self.release_dir = self.cargo_target_dir / RUST_TARGET_DIR_NAME / "release"
        else:
            self.target = _host_target()
            self.release_dir = target_dir / self.target / "release"

    @property
    def shared_lib(self) -> Path:
        return self.release_dir / SHARED_LIB

    def run(self) -> None:
        tools = toolchain()
        print(f"engagehub: building with {tools.describe()}", file=sys.stderr)
        args = ["rustc", "--release", "--locked", "--lib", "--crate-type", "cdylib",
                "--target", self.target, "--manifest-path", str(ROOT / "Cargo.toml")]
        env = dict(os.environ)
        # Stripped, and no line tables to strip (the release profile keeps them for
        # profiling a checkout's build).
        env["CARGO_PROFILE_RELEASE_STRIP"] = "symbols"
        env["CARGO_PROFILE_RELEASE_DEBUG"] = "false"
        if tools.zig:
            cmd = [tools.zigbuild] + args
            env["CARGO_ZIGBUILD_ZIG_PATH"] = tools.zig
            env["CARGO_TARGET_DIR"] = str(self.cargo_target_dir)
        else:
            cmd = [_cargo()] + args
        self.announce("running " + " ".join(cmd), level=logging.INFO)
        if self.dry_run:
            return
        _run(cmd, env=env)
        if not self.shared_lib.is_file():
            raise FileError(f"cargo build finished but {self.shared_lib} is missing")


def elf_soname(path: Path) -> str | None:
    """The DT_SONAME of a 64-bit little-endian ELF shared library, or None (no
    SONAME, or not such a file)."""
    import struct

    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:  # ELFCLASS64, ELFDATA2LSB
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    for _name, sh_type, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if sh_type != 6:  # SHT_DYNAMIC
            continue
        strtab_offset = sections[link][4]
        for pos in range(offset, offset + size, entsize or 16):
            tag, value = struct.unpack_from("<qQ", data, pos)
            if tag == 0:  # DT_NULL
                break
            if tag == 14:  # DT_SONAME
                start = strtab_offset + value
                return data[start:data.index(b"\0", start)].decode()
    return None


def packaged_library_name(shared_lib: Path) -> str:
    """The name the library gets inside the package: its SONAME when it has one
    (that is the name the cffi module linked against it records, and looks for beside
    itself), else its file name."""
    if sys.platform.startswith("linux"):
        soname = elf_soname(shared_lib)
        if soname:
            if "/" in soname or not soname.startswith("libengagehub.so"):
                raise FileError(f"{shared_lib}: unexpected SONAME {soname!r}")
            return soname
    return shared_lib.name


class build_py(_build_py):
    """The Python package plus the shared library and the header."""

    def _native_outputs(self) -> list[tuple[Path, str]]:
        rust = self.get_finalized_command("build_rust")
        package_dir = os.path.join(self.build_lib, *PACKAGE.split("."))
        return [
            (rust.shared_lib, os.path.join(package_dir, packaged_library_name(rust.shared_lib))),
            (HEADER, os.path.join(package_dir, HEADER.name)),
        ]

    def run(self) -> None:
        self.run_command("build_rust")
        super().run()
        outputs = self._native_outputs()
        # A library left by an earlier build under another name (before or after
        # it had a SONAME) would be packaged too: the engine twice.
        library = Path(outputs[0][1])
        for stale in library.parent.glob(SHARED_LIB + "*"):
            if stale.name != library.name:
                self.announce(f"removing {stale} (an earlier build's)", level=logging.INFO)
                stale.unlink()
        for source, target in outputs:
            self.mkpath(os.path.dirname(target))
            self.copy_file(str(source), target)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        for _, target in self._native_outputs():
            if target not in outputs:
                outputs.append(target)
        return outputs


def _load_build_module():
    # By path: importing the package would try to load the library.
    path = ROOT / "python" / "engagehub" / "_build_cffi.py"
    spec = importlib.util.spec_from_file_location("_engagehub_build_cffi", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_BUILD = _load_build_module()


# Everything distutils' Extension takes besides its name.
_EXTENSION_FIELDS = (
    "sources", "include_dirs", "define_macros", "undef_macros", "library_dirs",
    "libraries", "runtime_library_dirs", "extra_objects", "extra_compile_args",
    "extra_link_args", "export_symbols", "depends", "language",
)

class build_ext(_build_ext):
    """Generates the cffi module's C source (after cargo ran), compiles it and the
    fast module (with zig when the toolchain is zig), and the fast module once more
    for each interpreter of ``ENGAGEHUB_FAST_PYTHONS``."""

    def initialize_options(self) -> None:
        super().initialize_options()
        self._extra_fast: list[str] = []

    def run(self) -> None:
        self.run_command("build_rust")
        rust = self.get_finalized_command("build_rust")
        for ext in self.extensions:
            if ext.name != CFFI_MODULE:
                continue
            builder = _BUILD.make_builder(HEADER, shared_lib=rust.shared_lib)
            # Writes <build_temp>/engagehub/_engagehub_cffi.c (only when it changed).
            generated = builder.distutils_extension(tmpdir=self.build_temp, verbose=False)
            for field in _EXTENSION_FIELDS:
                setattr(ext, field, getattr(generated, field))
            # Relink when the Rust library or the header changed since the last build.
            ext.depends = list(ext.depends or []) + [str(rust.shared_lib), str(HEADER)]
        super().run()

    def build_extensions(self) -> None:
        toolchain().configure(self.compiler)
        super().build_extensions()
        self._build_extra_fast()

    def _build_extra_fast(self) -> None:
        pythons = [p for p in os.environ.get("ENGAGEHUB_FAST_PYTHONS", "").split(os.pathsep) if p.strip()]
        fast = next(ext for ext in self.extensions if ext.name == FAST_MODULE)
        package_dir = Path(self.build_lib, *FAST_MODULE.split(".")[:-1])
        done = {Path(self.get_ext_fullpath(fast.name)).name}
        for python in pythons:
            try:
                info = _BUILD.interpreter_info(python)
            except (OSError, subprocess.CalledProcessError) as exc:
                raise ExecError(f"ENGAGEHUB_FAST_PYTHONS: cannot run {python!r}: {exc}") from exc
            if info["implementation"] != "cpython" or tuple(info["version"]) < MIN_PYTHON:
                print(f"engagehub: no fast module for {python} (CPython {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+ only)",
                      file=sys.stderr)
                continue
            name = _BUILD.fast_file_name(info)
            if name in done:
                continue
            done.add(name)
            target = package_dir / name
            self.mkpath(str(target.parent))
            # A compiler of its own, so that only that interpreter's headers are seen.
            from distutils.ccompiler import new_compiler
            from distutils.sysconfig import customize_compiler

            compiler = new_compiler(force=self.force)
            customize_compiler(compiler)
            toolchain().configure(compiler)
            with tempfile.TemporaryDirectory(dir=self.build_temp if os.path.isdir(self.build_temp) else None) as tmp:
                _BUILD.compile_fast(compiler, info, target, tmp, source=ROOT / FAST_SOURCE, header_dir=HEADER.parent)
            print(f"engagehub: built {target.name} for {python}", file=sys.stderr)
            self._extra_fast.append(str(target))

    def get_outputs(self) -> list[str]:
        return list(super().get_outputs()) + self._extra_fast


setup(
    version=cargo_version(),
    # The cffi module's sources are generated by build_ext above; declaring it here
    # makes the wheel platform-specific. cffi's generated code defines Py_LIMITED_API
    # itself, so it is an abi3 module.
    # The fast module's source is given relative to setup.py, as sdists need.
    ext_modules=[
        Extension(CFFI_MODULE, sources=[], py_limited_api=True),
        _BUILD.fast_extension(FAST_SOURCE, Path("include")),
    ],
    cmdclass={"build_rust": build_rust, "build_py": build_py, "build_ext": build_ext},
    options={
        # A folder per toolchain, so that switching does not reuse the other's objects.
        "build": {"build_base": "build/python-manylinux2014" if toolchain().zig else "build/python"},
        # One wheel for every CPython 3.9+: the abi3 cffi module serves all of them,
        # the abi3 fast module 3.12+, and the per-version fast modules 3.9-3.11.
        "bdist_wheel": {"py_limited_api": "cp%d%d" % MIN_PYTHON},
    },
)
