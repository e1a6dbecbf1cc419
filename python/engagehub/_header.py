"""Turns the generated C header into declarations cffi's ``cdef`` accepts.

Kept free of imports from the package so the extension builder can load it before
the library exists.
"""

from __future__ import annotations

import re

_DEFINE = re.compile(r"^#define\s+(EH_[A-Z0-9_]+)\s+(-?\d+)\s*$")


def header_to_cdef(header: str) -> str:
    """Reduces ``engagehub.h`` to what cffi's ``cdef`` parses.

    Drops the include guard, ``#include`` lines and the ``extern "C"`` lines of
    ``#ifdef __cplusplus`` sections, and keeps only integer ``#define EH_*``
    constants. Declarations and comments pass through unchanged.
    """
    out: list[str] = []
    skipping_cplusplus = False
    for line in header.splitlines():
        stripped = line.strip()
        if skipping_cplusplus:
            if stripped.startswith("#endif"):
                skipping_cplusplus = False
            continue
        if stripped.startswith("#ifdef __cplusplus"):
            skipping_cplusplus = True
            continue
        if stripped.startswith("#"):
            match = _DEFINE.match(stripped)
            if match:
                out.append(f"#define {match.group(1)} {match.group(2)}")
            continue
        out.append(line)
    return "\n".join(out)
