"""Builds ``engagehub._engagehub_cffi``: a cffi API-mode extension over the same
generated header, with the Rust static library linked in.

ABI mode (``ffi.dlopen``) works everywhere with no compiler, but every call pays for
libffi's generic argument marshalling: ~300 ns plus ~50 ns per argument on our
2-core machines, more than the library's own work for an update. The compiled
module calls the C functions directly (about half the cost), so an installed
package uses it and falls back to ABI mode when it is absent.

Usage: ``python python/engagehub/_build_cffi.py --staticlib target/release/libengagehub.a
--header include/engagehub.h --out python/engagehub``.
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


def _load_header_filter():
    # Loaded by path: importing the package would try to load the library.
    spec = importlib.util.spec_from_file_location("_eh_header", Path(__file__).with_name("_header.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.header_to_cdef


def make_builder(header: Path, staticlib: Path) -> cffi.FFI:
    """The cffi builder for the extension module."""
    header_to_cdef = _load_header_filter()
    builder = cffi.FFI()
    builder.cdef(header_to_cdef(header.read_text(encoding="utf-8")))
    builder.set_source(
        MODULE,
        '#include "engagehub.h"',
        include_dirs=[str(header.parent)],
        extra_objects=[str(staticlib)],
        libraries=["pthread", "dl", "m"],
    )
    return builder


def build(header: Path, staticlib: Path, out_dir: Path) -> Path:
    """Compiles the extension and copies it into ``out_dir``; returns its path."""
    builder = make_builder(header, staticlib)
    with tempfile.TemporaryDirectory() as tmp:
        built = Path(builder.compile(tmpdir=tmp, verbose=False))
        target = out_dir / built.name
        shutil.copyfile(built, target)
    return target


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--header", type=Path, required=True)
    parser.add_argument("--staticlib", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    print(build(args.header.resolve(), args.staticlib.resolve(), args.out.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
