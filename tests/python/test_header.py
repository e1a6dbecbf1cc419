"""The generated header, as the Python package reads it."""

import re
import tomllib
from pathlib import Path

import cffi

import engagehub
from engagehub import errors
from engagehub._native import header_to_cdef, lib

ROOT = Path(__file__).resolve().parents[2]
HEADER = (ROOT / "include" / "engagehub.h").read_text()


def test_filtered_header_parses_in_a_fresh_ffi():
    ffi = cffi.FFI()
    ffi.cdef(header_to_cdef(HEADER))
    assert ffi.sizeof("eh_ranking") > 0


def test_header_exports_only_prefixed_names():
    defines = re.findall(r"^#define\s+(\w+)", HEADER, re.M)
    assert set(defines) - {"ENGAGEHUB_H"}, "no constants found"
    for name in defines:
        assert name == "ENGAGEHUB_H" or name.startswith("EH_"), name
    functions = re.findall(r"^\w[\w\s\*]*?\b(\w+)\(", HEADER, re.M)
    assert functions
    for name in functions:
        assert name.startswith("eh_"), name
    for name in re.findall(r"^typedef\s.*?\b(\w+);$", HEADER, re.M):
        assert name.startswith("eh_"), name


_NOT_STATUS = ("EH_VERSION", "EH_OVERFLOW_", "EH_CLOCK_", "EH_WORKERS_", "EH_PENDING_", "EH_PERIOD_", "EH_MAX_")


def test_every_status_maps_to_its_exception_class():
    seen = set()
    for name in dir(lib):
        # Statuses are every EH_ constant but the version and the config enumerations.
        if not name.startswith("EH_") or name.startswith(_NOT_STATUS) or name == "EH_OK":
            continue
        code = getattr(lib, name)
        exc = errors.error_for_status(code, "m")
        assert type(exc) is not errors.EngageHubError, f"{name} has no exception class"
        assert exc.status == code
        assert engagehub.status_name(code) == name
        seen.add(type(exc))
    assert len(seen) == len(errors._BY_STATUS)


def test_version_matches_cargo_toml():
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
    assert engagehub.__version__ == cargo
    assert f"{lib.EH_VERSION_MAJOR}.{lib.EH_VERSION_MINOR}.{lib.EH_VERSION_PATCH}" == cargo
