"""The README's Python and C examples, run as they are written, so they cannot rot.

How blocks are marked: tests/python/readme_examples.py. A Python example runs in a
subprocess (this interpreter, the same ENGAGEHUB_LIB / PYTHONPATH) in a temporary
folder; a C example is compiled with the C tests' warnings against
include/engagehub.h and the library under test, then run. Each must exit 0 and
print exactly its ``<!-- output -->`` block when it has one.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Iterator

import pytest

import readme_examples
from readme_examples import ReadmeError, parse, python_source

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = readme_examples.readme_examples()
TIMEOUT = 120


def _names(language: str) -> list:
    return [name for name, example in EXAMPLES.items() if example.language == language]


def _skip_unless_runnable(example: readme_examples.Example) -> None:
    if "skip" in example.options:
        pytest.skip(f"README example {example.name!r} is not run: {example.options['skip']}")
    for module in example.needs:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"README example {example.name!r} needs {module} (not installed)")


def _substituted(example: readme_examples.Example, code: str, request: pytest.FixtureRequest) -> str:
    if "replace" in example.options:
        old, new = example.options["replace"].split("=>", 1)
        assert old in code, f"README example {example.name!r}: replace={old!r} is not in its code"
        code = code.replace(old, new)
    if "redis" in example.options:
        url = example.options["redis"]
        assert url in code, f"README example {example.name!r}: redis={url!r} is not in its code"
        code = code.replace(url, request.getfixturevalue("redis_url"))
    return code


def _check_run(example: readme_examples.Example, run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 0, (
        f"README example {example.name!r} (README.md:{example.line}) exited {run.returncode}\n"
        f"--- stdout\n{run.stdout}--- stderr\n{run.stderr}"
    )
    if example.output is not None:
        assert run.stdout == example.output, (
            f"README example {example.name!r} printed\n{run.stdout}"
            f"instead of its <!-- output --> block\n{example.output}"
        )


# --- Redis, for the examples marked redis=... -------------------------------------


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this module's own on a Unix socket (no port to collide
    with other test runs), or ENGAGEHUB_TEST_REDIS_URL; skipped without either."""
    redis = pytest.importorskip("redis", reason="redis-py is not installed (pip install 'engagehub[redis]')")
    if os.environ.get("ENGAGEHUB_TEST_REDIS_URL"):
        yield os.environ["ENGAGEHUB_TEST_REDIS_URL"]
        return
    binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if not binary:
        pytest.skip("no Redis: set ENGAGEHUB_TEST_REDIS_URL or install redis-server")
    directory = tmp_path_factory.mktemp("redis")
    socket = directory / "redis.sock"
    url = f"unix://{socket}?db=0"
    proc = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(socket), "--unixsocketperm", "700",
         "--dir", str(directory), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis.from_url(url, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, "redis-server exited at start"
            try:
                if client.ping():
                    break
            except redis.RedisError:
                pass
            assert time.monotonic() < deadline, "redis-server did not answer within 10 s"
            time.sleep(0.02)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


# --- Python -------------------------------------------------------------------------


@pytest.mark.parametrize("name", _names("python"))
def test_python_example_runs(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    example = EXAMPLES[name]
    _skip_unless_runnable(example)
    code = _substituted(example, python_source(EXAMPLES, name), request)
    # The file's line numbers are the README's, so a traceback points at README.md.
    script = tmp_path / f"README_{name}.py"
    script.write_text(code, encoding="utf-8")
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=TIMEOUT)
    _check_run(example, run)


# --- C ------------------------------------------------------------------------------


def _shared_library() -> Path:
    """The library under test: ENGAGEHUB_LIB (what `make py-test` sets), else the
    newest cargo build."""
    if os.environ.get("ENGAGEHUB_LIB"):
        return Path(os.environ["ENGAGEHUB_LIB"])
    for profile in ("debug", "release"):
        candidate = ROOT / "target" / profile / "libengagehub.so"
        if candidate.exists():
            return candidate
    pytest.skip("no libengagehub.so: build it (cargo build) or set ENGAGEHUB_LIB")


def _soname(library: Path) -> str:
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) not found: it reads the library's SONAME")
    dynamic = subprocess.run([readelf, "-d", str(library)], capture_output=True, text=True,
                             check=True).stdout
    match = re.search(r"\(SONAME\)\s+Library soname: \[([^\]]+)\]", dynamic)
    assert match, f"{library} has no SONAME (built before build.rs?)"
    return match.group(1)


@pytest.fixture(scope="module")
def c_toolchain(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """(cc, library folder): the folder holds the library under its SONAME (what a
    program linked against it loads) and as libengagehub.so (what -l finds)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler (cc) to build the README's C examples")
    library = _shared_library().resolve()
    folder = tmp_path_factory.mktemp("lib")
    (folder / _soname(library)).symlink_to(library)
    (folder / "libengagehub.so").symlink_to(library)
    return cc, folder


@pytest.mark.parametrize("name", _names("c"))
def test_c_example_compiles_and_runs(name: str, tmp_path: Path, c_toolchain: tuple) -> None:
    example = EXAMPLES[name]
    _skip_unless_runnable(example)
    assert "after" not in example.options, "C examples are whole programs"
    cc, lib_folder = c_toolchain
    source = tmp_path / f"{name}.c"
    # #line: the compiler's messages name README.md and its line numbers.
    source.write_text(f'#line {example.line} "README.md"\n{example.code}', encoding="utf-8")
    binary = tmp_path / name
    compile_ = subprocess.run(
        [cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", str(source),
         f"-I{ROOT / 'include'}", f"-L{lib_folder}", "-lengagehub", f"-Wl,-rpath,{lib_folder}",
         "-o", str(binary)],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert compile_.returncode == 0, f"README example {name!r} does not compile:\n{compile_.stderr}"
    run = subprocess.run([str(binary)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=TIMEOUT)
    _check_run(example, run)


# --- The README as a whole ----------------------------------------------------------


def test_readme_has_python_and_c_examples_and_every_output_has_its_example() -> None:
    assert len(_names("python")) >= 5 and len(_names("c")) >= 2
    assert any(example.output for example in EXAMPLES.values() if example.language == "c")


def test_readme_names_the_current_soname_and_library_file() -> None:
    version = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
    major, minor, _ = version.split(".")
    soversion = f"0.{minor}" if major == "0" else major
    readme = readme_examples.README.read_text(encoding="utf-8")
    mentioned = set(re.findall(r"libengagehub\.so\.[0-9][0-9.]*[0-9]", readme))
    assert mentioned, "the README names no versioned library file"
    assert mentioned <= {f"libengagehub.so.{soversion}", f"libengagehub.so.{version}"}, (
        f"README.md names {sorted(mentioned)}; for version {version} the SONAME is "
        f"libengagehub.so.{soversion} and the file libengagehub.so.{version}"
    )


# --- The marker rules (readme_examples.parse) ---------------------------------------


def test_an_unmarked_python_or_c_block_is_refused_with_its_line() -> None:
    with pytest.raises(ReadmeError, match=r"x\.md:3: a ```python block without"):
        parse("text\n\n```python\nprint(1)\n```\n", "x.md")
    with pytest.raises(ReadmeError, match=r"```c block without"):
        parse("```c\nint main(void) { return 0; }\n```\n")
    assert parse("```sh\nmake test\n```\n```\nplain\n```\n") == {}


def test_markers_are_checked() -> None:
    with pytest.raises(ReadmeError, match="unknown option 'colour=red'"):
        parse("<!-- example: a colour=red -->\n```python\npass\n```\n")
    with pytest.raises(ReadmeError, match="marker not followed by a code block"):
        parse("<!-- example: a -->\nsome prose\n```python\npass\n```\n")
    with pytest.raises(ReadmeError, match="no earlier python example"):
        parse("<!-- example: b after=a -->\n```python\npass\n```\n")
    with pytest.raises(ReadmeError, match="which no earlier example is"):
        parse("<!-- output: a -->\n```text\n1\n```\n")
    with pytest.raises(ReadmeError, match="a second example named 'a'"):
        parse("<!-- example: a -->\n```python\npass\n```\n<!-- example: a -->\n```python\npass\n```\n")


def test_examples_keep_their_readme_lines_and_outputs() -> None:
    text = (
        "intro\n\n<!-- example: first -->\n```python\nx = 1\n```\n\n"
        "<!-- output: first -->\n```text\n1\n```\n\n"
        '<!-- example: second after=first skip="a reason" -->\n```python\nprint(x)\n```\n'
    )
    examples = parse(text)
    assert examples["first"].line == 5 and examples["first"].output == "1\n"
    assert examples["second"].options == {"after": "first", "skip": "a reason"}
    source = python_source(examples, "second")
    assert source.split("\n")[4] == "x = 1"
    assert source.split("\n")[examples["second"].line - 1] == "print(x)"


def test_a_wrong_output_fails_the_check() -> None:
    example = readme_examples.Example("e", "python", "", 1, output="1\n")
    ok = subprocess.CompletedProcess([], 0, stdout="1\n", stderr="")
    _check_run(example, ok)
    with pytest.raises(AssertionError, match="instead of its <!-- output --> block"):
        _check_run(example, subprocess.CompletedProcess([], 0, stdout="2\n", stderr=""))
    with pytest.raises(AssertionError, match="exited 1"):
        _check_run(example, subprocess.CompletedProcess([], 1, stdout="1\n", stderr="boom"))
