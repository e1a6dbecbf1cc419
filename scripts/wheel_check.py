"""Checks a built engagehub wheel's compiled files (run by scripts/wheel.sh build, with
.venv's Python, which has pyelftools through auditwheel):

* stripped: no .symtab and no .debug_* section in any .so;
* the engine once: exactly one file defines eh_version (the engine's library), and
  the cffi module needs that file instead of containing the engine;
* the fast module: one ``_engagehub_fast.abi3.so`` (the stable ABI, for CPython 3.12
  and every later one) and no per-version ``_engagehub_fast`` for 3.12 or later
  (per-version files only for 3.9-3.11, whose stable ABI lacks vectorcall).

Usage: wheel_check.py WHEEL. Exits non-zero naming the first problem.
"""

from __future__ import annotations

import io
import re
import sys
import zipfile

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    problems = []
    engines, cffi_needed = [], None
    fast_abi3, fast_versions = False, []
    with zipfile.ZipFile(argv[0]) as wheel:
        for name in wheel.namelist():
            base = name.rsplit("/", 1)[-1]
            if base == "_engagehub_fast.abi3.so":
                fast_abi3 = True
            version = re.match(r"_engagehub_fast\.cpython-3(\d+)", base)
            if version:
                fast_versions.append(int(version.group(1)))
                if int(version.group(1)) >= 12:
                    problems.append(f"{name}: a per-version fast module for CPython 3.12+ (the abi3 one serves them)")
            if not (base.endswith(".so") or ".so." in base):
                continue
            elf = ELFFile(io.BytesIO(wheel.read(name)))
            unstripped = [s.name for s in elf.iter_sections() if s.name == ".symtab" or s.name.startswith(".debug")]
            if unstripped:
                problems.append(f"{name} is not stripped: {', '.join(unstripped)}")
            dynsym = elf.get_section_by_name(".dynsym")
            if dynsym is not None and any(
                sym.name == "eh_version" and sym["st_shndx"] != "SHN_UNDEF" for sym in dynsym.iter_symbols()
            ):
                engines.append(base)
            if base.startswith("_engagehub_cffi"):
                cffi_needed = [
                    tag.needed
                    for section in elf.iter_sections()
                    if isinstance(section, DynamicSection)
                    for tag in section.iter_tags()
                    if tag.entry.d_tag == "DT_NEEDED"
                ]
    if len(engines) != 1:
        problems.append(f"the engine (eh_version) is defined in {len(engines)} files: {engines}")
    elif cffi_needed is None:
        problems.append("no _engagehub_cffi module in the wheel")
    elif engines[0] not in cffi_needed:
        problems.append(f"the cffi module does not link {engines[0]} (needs {cffi_needed})")
    if not fast_abi3:
        problems.append("no _engagehub_fast.abi3.so: CPython 3.12+ would use the cffi paths "
                        "(the build needs a CPython 3.12+ with its headers)")
    for problem in problems:
        print(f"wheel check FAILED: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"wheel check: stripped, the engine once ({engines[0]}, linked by the cffi module), "
          f"fast module: abi3 (3.12+) and per version for {', '.join(f'3.{v}' for v in sorted(fast_versions)) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
