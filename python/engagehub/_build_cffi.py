"""Builds the package's compiled modules:

* ``engagehub._engagehub_cffi``: a cffi API-mode extension over the same generated
  header, with the Rust static library linked in (``make py-ext``) or, in a wheel,
  linked against the ``libengagehub.so`` shipped beside it (so the engine is in the
  wheel once);
* ``engagehub._engagehub_fast``: the hand-written C module of the fast paths
  (``_engagehub_fast.c``, compiled against the generated ``engagehub.h``; it links
  nothing and is bound at import to whichever library cffi loaded, so it serves ABI
  mode too). For CPython 3.12 and later it is one module on the stable ABI
  (``Py_LIMITED_API=0x030C0000``, ``_engagehub_fast.abi3.so``), which every later
  CPython loads; CPython 3.9-3.11 get the same source compiled per version
  (``_engagehub_fast.cpython-3XY-*.so``): their stable ABI lacks vectorcall.

ABI mode (``ffi.dlopen``) works everywhere with no compiler, but every call pays for
libffi's generic argument marshalling: ~300 ns plus ~50 ns per argument on our
2-core machines, more than the library's own work for an update. The compiled
module calls the C functions directly (about half the cost), so an installed
package uses it and falls back to ABI mode when it is absent.

Usage: ``python python/engagehub/_build_cffi.py --staticlib target/release/libengagehub.a
--header include/engagehub.h --out python/engagehub`` builds both;
``--fast-only --out python/engagehub`` builds only the second (no Rust build needed),
for the running interpreter and for each ``--python`` given.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cffi

MODULE = "engagehub._engagehub_cffi"
FAST_MODULE = "engagehub._engagehub_fast"
FAST_SOURCE = Path(__file__).with_name("_engagehub_fast.c")


def _load_header_filter():
    # Loaded by path: importing the package would try to load the library.
    spec = importlib.util.spec_from_file_location("_eh_header", Path(__file__).with_name("_header.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.header_to_cdef


def make_builder(header: Path, staticlib: Path | None = None, *, shared_lib: Path | None = None) -> cffi.FFI:
    """The cffi builder for the extension module: the static library linked in, or
    (``shared_lib``) linked against that ``libengagehub.so``, to be found next to the
    module at run time (rpath ``$ORIGIN``)."""
    if (staticlib is None) == (shared_lib is None):
        raise ValueError("make_builder() needs exactly one of staticlib and shared_lib")
    header_to_cdef = _load_header_filter()
    builder = cffi.FFI()
    builder.cdef(header_to_cdef(header.read_text(encoding="utf-8")))
    if staticlib is not None:
        link = {"extra_objects": [str(staticlib)], "libraries": ["pthread", "dl", "m"]}
    else:
        assert shared_lib is not None
        name = shared_lib.name
        if not (name.startswith("lib") and name.endswith(".so")):
            raise ValueError(f"{shared_lib}: expected a lib<name>.so")
        link = {
            "library_dirs": [str(shared_lib.parent)],
            "libraries": [name[3:-3]],
            # Not runtime_library_dirs: distutils spells it -R for compilers it does
            # not recognise (zig cc).
            "extra_link_args": ["-Wl,-rpath,$ORIGIN"],
        }
    builder.set_source(MODULE, '#include "engagehub.h"', include_dirs=[str(header.parent)], **link)
    return builder


def build(header: Path, staticlib: Path, out_dir: Path) -> Path:
    """Compiles the extension and copies it into ``out_dir``; returns its path."""
    builder = make_builder(header, staticlib)
    with tempfile.TemporaryDirectory() as tmp:
        built = Path(builder.compile(tmpdir=tmp, verbose=False))
        target = out_dir / built.name
        shutil.copyfile(built, target)
    return target


# The stable ABI the fast module is built on: CPython 3.12's, the first with
# vectorcall (PEP 590) in the limited API; every later CPython loads it.
LIMITED_API = 0x030C0000
LIMITED_FROM = (3, 12)
HEADER_DIR = Path(__file__).resolve().parents[2] / "include"
# The fast module compiles warning-free with these (the checkout's builds add -Werror).
FAST_WARNINGS = ["-Wall", "-Wextra"]
# Calls into libpython straight through the GOT, not a PLT stub each: the
# per-row walk of push_many makes about ten such calls per event.
FAST_FLAGS = ["-fno-plt"] if sys.platform.startswith("linux") else []


def fast_is_limited(version: tuple, gil_disabled: bool = False) -> bool:
    """Whether the fast module for CPython ``version`` is the stable-ABI one (not for
    a free-threaded build, which loads no abi3 module: it gets its own, declaring
    that it needs the GIL)."""
    return tuple(version[:2]) >= LIMITED_FROM and not gil_disabled


def fast_extension(source: Path = FAST_SOURCE, header_dir: Path = HEADER_DIR, *, strict: bool = False):
    """The setuptools Extension of ``engagehub._engagehub_fast`` for the running
    interpreter: on the stable ABI (``.abi3.so``) from CPython 3.12 on, else for
    this version only. ``strict``: warnings are errors."""
    from setuptools import Extension

    import sysconfig

    limited = fast_is_limited(sys.version_info, bool(sysconfig.get_config_var("Py_GIL_DISABLED")))
    return Extension(
        FAST_MODULE,
        sources=[str(source)],
        include_dirs=[str(header_dir)],
        define_macros=[("Py_LIMITED_API", hex(LIMITED_API))] if limited else [],
        py_limited_api=limited,
        extra_compile_args=FAST_WARNINGS + FAST_FLAGS + (["-Werror"] if strict else []),
    )


_PROBE = (
    "import json, sys, sysconfig; print(json.dumps({'version': list(sys.version_info[:2]), "
    "'implementation': sys.implementation.name, 'include': sysconfig.get_paths()['include'], "
    "'suffix': sysconfig.get_config_var('EXT_SUFFIX'), "
    "'gil_disabled': bool(sysconfig.get_config_var('Py_GIL_DISABLED'))}))"
)


def interpreter_info(python: str) -> dict:
    """Version, header folder and extension suffix of an interpreter (any one: the
    build needs only its headers)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run([python, "-c", _PROBE], stdout=subprocess.PIPE, check=True, text=True, env=env).stdout
    info = json.loads(out)
    info["python"] = python
    return info


def fast_file_name(info: dict) -> str:
    """The fast module's file name for an interpreter of :func:`interpreter_info`: the
    stable-ABI one from 3.12 on (a free-threaded build loads no abi3 module: its
    own), else the version's own."""
    if fast_is_limited(info["version"], info.get("gil_disabled", False)):
        suffix = ".abi3.so" if sys.platform != "win32" else ".pyd"
    else:
        suffix = info["suffix"]
    return FAST_MODULE.rsplit(".", 1)[1] + suffix


def compile_fast(compiler, info: dict, target: Path, tmp: str, *, source: Path = FAST_SOURCE,
                 header_dir: Path = HEADER_DIR, strict: bool = False) -> Path:
    """Compiles the fast module for the interpreter ``info`` (its headers only) with
    a distutils ``compiler`` into ``target``."""
    limited = fast_is_limited(info["version"], info.get("gil_disabled", False))
    macros = [("Py_LIMITED_API", hex(LIMITED_API))] if limited else []
    objects = compiler.compile(
        [str(source)], output_dir=tmp, include_dirs=[info["include"], str(header_dir)], macros=macros,
        extra_postargs=FAST_WARNINGS + FAST_FLAGS + (["-Werror"] if strict else []),
    )
    compiler.link_shared_object(objects, str(target))
    return target


def build_fast(out_dir: Path, pythons: "list[str] | None" = None, *, strict: bool = True) -> list:
    """Compiles ``engagehub._engagehub_fast`` into ``out_dir`` for the running
    interpreter and each of ``pythons`` (one stable-ABI module serves all of 3.12+);
    returns the paths written."""
    try:
        from setuptools._distutils.ccompiler import new_compiler
        from setuptools._distutils.sysconfig import customize_compiler
    except ImportError:  # older setuptools
        from distutils.ccompiler import new_compiler  # type: ignore[no-redef]
        from distutils.sysconfig import customize_compiler  # type: ignore[no-redef]

    infos = [interpreter_info(sys.executable)] + [interpreter_info(p) for p in pythons or []]
    written: dict = {}
    for info in infos:
        if info["implementation"] != "cpython" or tuple(info["version"]) < (3, 9):
            print(f"engagehub: no fast module for {info['python']} (CPython 3.9+ only)", file=sys.stderr)
            continue
        name = fast_file_name(info)
        if name in written:
            continue
        compiler = new_compiler()
        customize_compiler(compiler)
        with tempfile.TemporaryDirectory() as tmp:
            built = compile_fast(compiler, info, Path(tmp) / name, tmp, strict=strict)
            target = out_dir / name
            shutil.copyfile(built, target)
        written[name] = target
    return list(written.values())


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--header", type=Path)
    parser.add_argument("--staticlib", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fast-only", action="store_true", help="build only _engagehub_fast")
    parser.add_argument(
        "--optional",
        action="store_true",
        help="with --fast-only: if it cannot be built, say so and succeed (it is an optimisation)",
    )
    parser.add_argument(
        "--python", action="append", default=[],
        help="also build the fast module for this interpreter (repeatable; 3.12+ share one abi3 module)",
    )
    args = parser.parse_args(argv)
    if not args.fast_only:
        if args.header is None or args.staticlib is None:
            parser.error("--header and --staticlib are needed unless --fast-only")
        print(build(args.header.resolve(), args.staticlib.resolve(), args.out.resolve()))
    try:
        for path in build_fast(args.out.resolve(), args.python, strict=not args.optional):
            print(path)
    except Exception as exc:  # noqa: BLE001 - any build failure, reported below
        if not (args.fast_only and args.optional):
            raise
        print(f"engagehub: the fast paths (update_user, push_event, delivery) not built ({exc}); they will use cffi")
    return 0


if __name__ == "__main__":
    sys.exit(main())
