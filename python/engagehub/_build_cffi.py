"""Builds the package's compiled modules:

* ``engagehub._engagehub_cffi``: a cffi API-mode extension over the same generated
  header, with the Rust static library linked in (``make py-ext``) or, in a wheel,
  linked against the ``libengagehub.so`` shipped beside it (so the engine is in the
  wheel once);
* ``engagehub._engagehub_fast``: the hand-written CPython module for
  ``Leaderboard.update_user`` (``_engagehub_fast.c``; it links nothing and is bound
  at import to whichever library cffi loaded, so it serves ABI mode too).

ABI mode (``ffi.dlopen``) works everywhere with no compiler, but every call pays for
libffi's generic argument marshalling: ~300 ns plus ~50 ns per argument on our
2-core machines, more than the library's own work for an update. The compiled
module calls the C functions directly (about half the cost), so an installed
package uses it and falls back to ABI mode when it is absent.

Usage: ``python python/engagehub/_build_cffi.py --staticlib target/release/libengagehub.a
--header include/engagehub.h --out python/engagehub`` builds both;
``--fast-only --out python/engagehub`` builds only the second (no Rust build needed).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
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


def fast_extension(source: Path = FAST_SOURCE):
    """The setuptools Extension of ``engagehub._engagehub_fast``."""
    from setuptools import Extension

    return Extension(FAST_MODULE, sources=[str(source)])


def build_fast(out_dir: Path) -> Path:
    """Compiles ``engagehub._engagehub_fast`` into ``out_dir``; returns its path."""
    from setuptools import Distribution

    with tempfile.TemporaryDirectory() as tmp:
        dist = Distribution({"name": "engagehub", "ext_modules": [fast_extension()]})
        command = dist.get_command_obj("build_ext")
        command.build_lib = str(Path(tmp) / "lib")
        command.build_temp = str(Path(tmp) / "temp")
        command.ensure_finalized()
        command.run()
        built = Path(command.get_ext_fullpath(FAST_MODULE))
        target = out_dir / built.name
        shutil.copyfile(built, target)
    return target


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
    args = parser.parse_args(argv)
    if not args.fast_only:
        if args.header is None or args.staticlib is None:
            parser.error("--header and --staticlib are needed unless --fast-only")
        print(build(args.header.resolve(), args.staticlib.resolve(), args.out.resolve()))
    try:
        print(build_fast(args.out.resolve()))
    except Exception as exc:  # noqa: BLE001 - any build failure, reported below
        if not (args.fast_only and args.optional):
            raise
        print(f"engagehub: the fast paths (update_user, push_event, delivery) not built ({exc}); they will use cffi")
    return 0


if __name__ == "__main__":
    sys.exit(main())
