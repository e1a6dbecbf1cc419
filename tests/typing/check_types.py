"""``make typecheck``: ``mypy --strict`` over the docs' Python examples and over the
calls that must be refused.

1. Every ```python example of README.md and docs/*.md (tests/python/doc_examples.py
   reads them) is written out as a module, preceded by the examples it continues
   (``after=``) and padded so that its line numbers are the page's; the files of a
   multi-file project (``project=``) are laid out as a package. mypy must report
   nothing: an error is printed as ``docs/page.md:LINE: ...``.
2. tests/typing/wrong_calls.py: every line ending in ``# E: code[, code]`` must get
   an error with each code, and no other line any error. So a signature that goes
   back to ``Any`` (mypy would accept anything) fails here.

Settings: tests/typing/mypy.ini (strict; the engagehub package itself followed
silently: its own annotations are used, its internals not reported). Modules that
import a package without type information (Django, discord.py) are checked with
``disallow_subclassing_any`` and ``disallow_untyped_decorators`` off, since every
model, command and decorator of such a package is ``Any``; nothing else is relaxed.

Exit status 0 when both hold, 1 otherwise. Needs mypy (requirements-dev.txt).
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tests" / "python"))

import doc_examples  # noqa: E402

BUILD = ROOT / "build" / "typecheck"
UNTYPED_PACKAGES = ("django", "discord")
_ERROR = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: (?P<message>.*?)(?:  \[(?P<code>[\w-]+)\])?$")
_EXPECT = re.compile(r"#\s*E:\s*([\w-]+(?:\s*,\s*[\w-]+)*)\s*$")


def _imports_untyped(code: str) -> bool:
    names = "|".join(UNTYPED_PACKAGES)
    return re.search(rf"^\s*(?:import|from)\s+(?:{names})\b", code, re.MULTILINE) is not None


def _config(relaxed_modules: List[str]) -> Path:
    """tests/typing/mypy.ini with absolute paths and a relaxed section for each
    module that imports an untyped package."""
    parser = configparser.ConfigParser()
    parser.read(HERE / "mypy.ini")
    parser["mypy"]["mypy_path"] = str(ROOT / "python")
    parser["mypy"]["cache_dir"] = str(ROOT / "build" / "mypy-cache")
    for module in relaxed_modules:
        parser[f"mypy-{module}"] = {"disallow_subclassing_any": "False", "disallow_untyped_decorators": "False"}
    path = BUILD / f"mypy-{len(list(BUILD.glob('mypy-*.ini')))}.ini"
    with open(path, "w", encoding="utf-8") as out:
        parser.write(out)
    return path


def _mypy(config: Path, cwd: Path, targets: List[str]) -> List[Dict[str, str]]:
    """Runs mypy; the errors as dicts (file relative to ``cwd``, line, message, code)."""
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--no-color-output",
         "--no-error-summary", "--show-error-codes", "--hide-error-context", *targets],
        cwd=cwd, capture_output=True, text=True,
    )
    if run.returncode not in (0, 1) or "error: " not in run.stdout and run.returncode:
        raise SystemExit(f"mypy failed to run (status {run.returncode}):\n{run.stdout}{run.stderr}")
    errors = []
    for line in run.stdout.splitlines():
        match = _ERROR.match(line)
        if match:
            errors.append({k: v or "" for k, v in match.groupdict().items()})
    return errors


def check_examples() -> List[str]:
    """Problems in the docs' examples (empty: all clean)."""
    examples = doc_examples.all_examples()
    problems: List[str] = []
    # Standalone examples: one top-level module each.
    folder = BUILD / "examples"
    folder.mkdir(parents=True)
    origin: Dict[str, doc_examples.Example] = {}
    relaxed: List[str] = []
    for name, example in examples.items():
        if example.language != "python" or "project" in example.options:
            continue
        module = f"{Path(example.source).stem}_{name}".replace("-", "_").replace(".", "_")
        code = doc_examples.python_source(examples, name)
        (folder / f"{module}.py").write_text(code, encoding="utf-8")
        origin[f"{module}.py"] = example
        if _imports_untyped(code):
            relaxed.append(module)
    for error in _mypy(_config(relaxed), folder, sorted(origin)):
        example = origin.get(error["file"])
        where = f"{example.source}:{error['line']}" if example else error["file"]
        problems.append(f"{where}: {error['message']} [{error['code']}]")
    # Projects: each in its own folder, as the page lays its files out.
    projects = sorted({e.options["project"] for e in examples.values() if "project" in e.options})
    for project in projects:
        root = BUILD / "projects" / project
        files: Dict[str, doc_examples.Example] = {}
        relaxed = []
        for path, example in doc_examples.project_files(examples, project).items():
            # A file name with more dots (gunicorn.conf.py) is not a module name.
            stem = Path(path).name[: -len(".py")]
            target = Path(path).with_name(stem.replace(".", "_") + ".py")
            (root / target).parent.mkdir(parents=True, exist_ok=True)
            (root / target).write_text("\n" * (example.line - 1) + example.code, encoding="utf-8")
            files[target.as_posix()] = example
            if _imports_untyped(example.code):
                relaxed.append(".".join(target.with_suffix("").parts))
        for package in {Path(p).parent for p in files}:
            for part in (package, *package.parents):
                if part != Path("."):
                    (root / part / "__init__.py").touch()
        for error in _mypy(_config(relaxed), root, sorted(files)):
            example = files.get(error["file"])
            where = f"{example.source}:{error['line']}" if example else f"{project}/{error['file']}"
            problems.append(f"{where}: {error['message']} [{error['code']}]")
    return problems


def expected_errors(source: str) -> Dict[int, Set[str]]:
    """The ``# E: code`` marks of a file: line -> codes."""
    marks: Dict[int, Set[str]] = {}
    for number, line in enumerate(source.splitlines(), 1):
        match = _EXPECT.search(line)
        if match:
            marks[number] = {c.strip() for c in match.group(1).split(",")}
    return marks


def compare(marks: Dict[int, Set[str]], errors: List[Tuple[int, str, str]], name: str) -> List[str]:
    """Every mark matched by an error with its code, and no error elsewhere."""
    problems = []
    found: Dict[int, Set[str]] = {}
    for line, code, message in errors:
        found.setdefault(line, set()).add(code)
        if line not in marks:
            problems.append(f"{name}:{line}: unexpected error: {message} [{code}]")
    for line, codes in sorted(marks.items()):
        missing = codes - found.get(line, set())
        if missing:
            problems.append(f"{name}:{line}: expected {', '.join(sorted(missing))}, mypy reported "
                            f"{', '.join(sorted(found.get(line, set()))) or 'nothing'}")
    return problems


def check_wrong_calls() -> List[str]:
    source = HERE / "wrong_calls.py"
    marks = expected_errors(source.read_text(encoding="utf-8"))
    if len(marks) < 10:
        return [f"{source}: only {len(marks)} marked lines"]
    errors = [(int(e["line"]), e["code"], e["message"]) for e in _mypy(_config([]), HERE, [source.name])]
    return compare(marks, errors, "tests/typing/wrong_calls.py")


def main() -> int:
    shutil.rmtree(BUILD, ignore_errors=True)
    BUILD.mkdir(parents=True)
    problems = check_examples()
    examples_ok = not problems
    wrong = check_wrong_calls()
    problems += wrong
    for problem in problems:
        print(problem)
    marks = len(expected_errors((HERE / "wrong_calls.py").read_text(encoding="utf-8")))
    print(f"types: docs' examples {'clean' if examples_ok else 'NOT clean'}; "
          f"wrong calls: {marks - len([p for p in wrong if 'expected' in p])} of {marks} flagged"
          f"{', and unexpected errors' if any('unexpected' in p for p in wrong) else ''}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
