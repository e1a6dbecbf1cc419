"""The Python and C examples of the README and docs/*.md, run as they are written,
so they cannot rot; and the pages themselves (the README's length, every relative
link and anchor).

How blocks are marked: tests/python/doc_examples.py. A Python example runs in a
subprocess (this interpreter, the same ENGAGEHUB_LIB / PYTHONPATH) in a temporary
folder; a C example is compiled with the C tests' warnings against
include/engagehub.h and the library under test, then run. Each must exit 0 and
print exactly its ``<!-- output -->`` block when it has one. The files of a
multi-file project (``project=``) are run by that project's test (PROJECTS).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Iterator

import pytest

import doc_examples
from doc_examples import ReadmeError, parse, python_source
from redis_server import redis_url as private_redis_url

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = doc_examples.all_examples()
TIMEOUT = 120
README_MAX_LINES = 300

# Each multi-file project of the docs (project=NAME) and the test that runs it.
PROJECTS = {"django-guide": "tests/python/test_guide_project.py"}


def _names(language: str) -> list:
    return [
        name for name, example in EXAMPLES.items()
        if example.language == language and "project" not in example.options
    ]


def _skip_unless_runnable(example: doc_examples.Example) -> None:
    if "skip" in example.options:
        pytest.skip(f"{example.source} example {example.name!r} is not run: {example.options['skip']}")
    for module in example.needs:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{example.source} example {example.name!r} needs {module} (not installed)")


def _substituted(example: doc_examples.Example, code: str, request: pytest.FixtureRequest) -> str:
    if "replace" in example.options:
        old, new = example.options["replace"].split("=>", 1)
        assert old in code, f"example {example.name!r}: replace={old!r} is not in its code"
        code = code.replace(old, new)
    if "redis" in example.options:
        url = example.options["redis"]
        assert url in code, f"example {example.name!r}: redis={url!r} is not in its code"
        code = code.replace(url, request.getfixturevalue("redis_url"))
    return code


def _check_run(example: doc_examples.Example, run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 0, (
        f"example {example.name!r} ({example.source}:{example.line}) exited {run.returncode}\n"
        f"--- stdout\n{run.stdout}--- stderr\n{run.stderr}"
    )
    if example.output is not None:
        assert run.stdout == example.output, (
            f"example {example.name!r} ({example.source}) printed\n{run.stdout}"
            f"instead of its <!-- output --> block\n{example.output}"
        )


# --- Redis, for the examples marked redis=... -------------------------------------


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this module's own on a Unix socket (no port to collide
    with other test runs), or ENGAGEHUB_TEST_REDIS_URL; skipped without either."""
    if os.environ.get("ENGAGEHUB_TEST_REDIS_URL"):
        yield os.environ["ENGAGEHUB_TEST_REDIS_URL"]
        return
    with private_redis_url(pytest) as url:
        yield url


# --- Python -------------------------------------------------------------------------


@pytest.mark.parametrize("name", _names("python"))
def test_python_example_runs(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    example = EXAMPLES[name]
    _skip_unless_runnable(example)
    code = _substituted(example, python_source(EXAMPLES, name), request)
    # The file's line numbers are the page's, so a traceback points at its line.
    script = tmp_path / f"{Path(example.source).stem}_{name.replace('-', '_')}.py"
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
        pytest.skip("no C compiler (cc) to build the docs' C examples")
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
    # #line: the compiler's messages name the page and its line numbers.
    source.write_text(f'#line {example.line} "{example.source}"\n{example.code}', encoding="utf-8")
    binary = tmp_path / name
    compile_ = subprocess.run(
        [cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", str(source),
         f"-I{ROOT / 'include'}", f"-L{lib_folder}", "-lengagehub", f"-Wl,-rpath,{lib_folder}",
         "-o", str(binary)],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert compile_.returncode == 0, f"example {name!r} does not compile:\n{compile_.stderr}"
    run = subprocess.run([str(binary)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=TIMEOUT)
    _check_run(example, run)


# --- The pages as a whole -------------------------------------------------------------


def test_docs_have_python_and_c_examples_and_every_output_has_its_example() -> None:
    assert len(_names("python")) >= 10 and len(_names("c")) >= 2
    assert any(example.output for example in EXAMPLES.values() if example.language == "c")
    readme = [e for e in EXAMPLES.values() if e.source == "README.md"]
    assert {e.language for e in readme} == {"python", "c"}, "the README shows one Python and one C example"


def test_readme_is_one_page() -> None:
    lines = doc_examples.README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; the guide goes in docs/"


def test_every_skip_names_the_test_that_covers_the_code() -> None:
    for example in EXAMPLES.values():
        if "skip" in example.options:
            named = re.findall(r"tests/[\w/.-]+\.(?:py|rs|c)", example.options["skip"])
            assert named and all((ROOT / path).is_file() for path in named), (
                f"{example.source}:{example.line}: skip={example.options['skip']!r} names no existing test"
            )


def test_every_project_of_the_docs_has_its_test() -> None:
    used = {e.options["project"] for e in EXAMPLES.values() if "project" in e.options}
    assert used == set(PROJECTS), f"projects in the docs {sorted(used)}, with tests {sorted(PROJECTS)}"
    for path in PROJECTS.values():
        assert (ROOT / path).is_file(), path


def test_docs_name_the_current_soname_and_library_file() -> None:
    version = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
    major, minor, _ = version.split(".")
    soversion = f"0.{minor}" if major == "0" else major
    text = "".join(path.read_text(encoding="utf-8") for path in doc_examples.doc_files())
    mentioned = set(re.findall(r"libengagehub\.so\.[0-9][0-9.]*[0-9]", text))
    assert mentioned, "the docs name no versioned library file"
    assert mentioned <= {f"libengagehub.so.{soversion}", f"libengagehub.so.{version}"}, (
        f"the docs name {sorted(mentioned)}; for version {version} the SONAME is "
        f"libengagehub.so.{soversion} and the file libengagehub.so.{version}"
    )


def _anchors(markdown: str) -> set:
    """GitHub's anchors for the headings of a page: lower case, punctuation other
    than '-' and '_' dropped, spaces as '-', repeats numbered."""
    anchors: set = set()
    fence = False
    for line in markdown.split("\n"):
        if line.lstrip().startswith("```"):
            fence = not fence
        if fence or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        candidate, n = slug, 1
        while candidate in anchors:
            candidate, n = f"{slug}-{n}", n + 1
        anchors.add(candidate)
    return anchors


def test_every_relative_link_and_anchor_resolves() -> None:
    for page in doc_examples.doc_files():
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked here
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: link {target!r}"
            assert file.exists(), f"{where}: no {file}"
            if anchor:
                assert file.suffix == ".md", where
                assert anchor in _anchors(file.read_text(encoding="utf-8")), f"{where}: no such heading"


def test_the_first_page_links_what_a_new_user_looks_for() -> None:
    """A DB-writing callback, a Django view reading the shared leaderboard, and
    testing one's own app: each one link from the README."""
    readme = doc_examples.README.read_text(encoding="utf-8")
    for words, anchor in (
        ("flush callback", "docs/guide.md#"),
        ("view", "docs/guide.md#"),
        ("testing", "docs/guide.md#"),
    ):
        assert re.search(rf"\[[^\]]*{words}[^\]]*\]\({re.escape(anchor)}", readme, re.IGNORECASE), (
            f"the README has no link to docs/guide.md about {words!r}"
        )


# --- The marker rules (doc_examples.parse) ---------------------------------------


def test_project_files_and_skips_are_checked() -> None:
    with pytest.raises(ReadmeError, match="project= and file= go together"):
        parse("<!-- example: a project=p -->\n```python\npass\n```\n")
    with pytest.raises(ReadmeError, match="skip= needs the reason"):
        parse("<!-- example: a skip='' -->\n```python\npass\n```\n")
    examples = parse("<!-- example: m project=p file=app/m.py -->\n```python\nX = 1\n```\n", "docs/x.md")
    assert doc_examples.project_files(examples, "p")["app/m.py"].code == "X = 1\n"
    assert examples["m"].source == "docs/x.md"


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
    example = doc_examples.Example("e", "python", "", 1, output="1\n")
    ok = subprocess.CompletedProcess([], 0, stdout="1\n", stderr="")
    _check_run(example, ok)
    with pytest.raises(AssertionError, match="instead of its <!-- output --> block"):
        _check_run(example, subprocess.CompletedProcess([], 0, stdout="2\n", stderr=""))
    with pytest.raises(AssertionError, match="exited 1"):
        _check_run(example, subprocess.CompletedProcess([], 1, stdout="1\n", stderr="boom"))
