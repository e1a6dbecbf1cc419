"""Build steps of ``python3 -m pip install .`` (metadata is in pyproject.toml).

1. ``build_rust``: ``cargo build --release --locked`` (``$CARGO`` names cargo; the
   target folder is cargo's own, so ``CARGO_TARGET_DIR`` and ``.cargo/config.toml``
   are honoured).
2. ``build_py``: the Python sources, plus ``libengagehub.so`` (the ABI-mode
   fallback) and ``include/engagehub.h`` copied into the built package.
3. ``build_ext``: ``engagehub._engagehub_cffi``, the cffi API-mode module, generated
   by ``python/engagehub/_build_cffi.py``'s ``make_builder`` with the Rust static
   library linked in; and ``engagehub._engagehub_fast``, the hand-written CPython
   module for ``Leaderboard.update_user`` (``python/engagehub/_engagehub_fast.c``).

setuptools' build folder is ``build/python`` (the Makefile owns the rest of ``build/``).
The package version is Cargo.toml's ``[package] version``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from setuptools import Command, Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext
from setuptools.command.build_py import build_py as _build_py
from setuptools.errors import ExecError, FileError

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
STATIC_LIB = "engagehub.lib" if sys.platform == "win32" else "libengagehub.a"


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


class build_rust(Command):
    """Builds the release Rust library with cargo."""

    description = "build the Rust library (cargo build --release --locked)"
    user_options: list = []

    def initialize_options(self) -> None:
        self.release_dir: Path | None = None

    def finalize_options(self) -> None:
        # Ask cargo where its target folder is: CARGO_TARGET_DIR, config files...
        metadata = _run(
            [_cargo(), "metadata", "--format-version", "1", "--no-deps", "--locked",
             "--manifest-path", str(ROOT / "Cargo.toml")],
            stdout=subprocess.PIPE,
        )
        target_dir = Path(json.loads(metadata.stdout)["target_directory"])
        self.release_dir = target_dir / "release"

    @property
    def shared_lib(self) -> Path:
        return self.release_dir / SHARED_LIB

    @property
    def static_lib(self) -> Path:
        return self.release_dir / STATIC_LIB

    def run(self) -> None:
        cmd = [_cargo(), "build", "--release", "--locked", "--manifest-path", str(ROOT / "Cargo.toml")]
        self.announce("running " + " ".join(cmd), level=logging.INFO)
        if self.dry_run:
            return
        _run(cmd)
        for path in (self.shared_lib, self.static_lib):
            if not path.is_file():
                raise FileError(f"cargo build finished but {path} is missing")


class build_py(_build_py):
    """The Python package plus the shared library and the header."""

    def _native_outputs(self) -> list[tuple[Path, str]]:
        rust = self.get_finalized_command("build_rust")
        package_dir = os.path.join(self.build_lib, *PACKAGE.split("."))
        return [
            (rust.shared_lib, os.path.join(package_dir, SHARED_LIB)),
            (HEADER, os.path.join(package_dir, HEADER.name)),
        ]

    def run(self) -> None:
        self.run_command("build_rust")
        super().run()
        for source, target in self._native_outputs():
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
    """Generates the cffi module's C source (after cargo ran) and compiles it."""

    def run(self) -> None:
        self.run_command("build_rust")
        rust = self.get_finalized_command("build_rust")
        for ext in self.extensions:
            if ext.name != CFFI_MODULE:
                continue
            builder = _BUILD.make_builder(HEADER, rust.static_lib)
            # Writes <build_temp>/engagehub/_engagehub_cffi.c (only when it changed).
            generated = builder.distutils_extension(tmpdir=self.build_temp, verbose=False)
            for field in _EXTENSION_FIELDS:
                setattr(ext, field, getattr(generated, field))
            # Relink when the Rust library or the header changed since the last build.
            ext.depends = list(ext.depends or []) + [str(rust.static_lib), str(HEADER)]
        super().run()


setup(
    version=cargo_version(),
    # Its sources are generated by build_ext above; declaring it here makes the
    # wheel platform-specific.
    # The fast module's source is given relative to setup.py, as sdists need.
    ext_modules=[
        Extension(CFFI_MODULE, sources=[]),
        _BUILD.fast_extension(Path("python") / "engagehub" / "_engagehub_fast.c"),
    ],
    cmdclass={"build_rust": build_rust, "build_py": build_py, "build_ext": build_ext},
    options={"build": {"build_base": "build/python"}},
)
