"""Checks a built engagehub wheel's compiled files (run by scripts/wheel.sh build, with
.venv's Python, which has pyelftools through auditwheel):

* stripped: no .symtab and no .debug_* section in any .so;
* the engine once: exactly one file defines eh_version (the engine's library), and
  the cffi module needs that file instead of containing the engine.

Usage: wheel_check.py WHEEL. Exits non-zero naming the first problem.
"""

from __future__ import annotations

import io
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
    with zipfile.ZipFile(argv[0]) as wheel:
        for name in wheel.namelist():
            base = name.rsplit("/", 1)[-1]
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
    for problem in problems:
        print(f"wheel check FAILED: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"wheel check: stripped, the engine once ({engines[0]}, linked by the cffi module)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
