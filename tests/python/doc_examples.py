"""The examples of the README and of every page under docs/, as the tests read them.

Every ```python and ```c block of README.md and docs/*.md is preceded (blank lines
aside) by a marker, ``<!-- example: NAME [key=value ...] -->``; a ```text block
preceded by ``<!-- output: NAME -->`` is what example NAME prints (with ``after=``,
the whole run's output, the earlier example's included). Names are unique across
all the files. Options (values may be quoted, shell-style):

``after=OTHER``       OTHER's code runs first (an earlier example of the same file
                      that this one continues)
``needs=mod,...``     optional modules; the example is skipped without them
``redis=URL``         needs a Redis: URL, as written in the code, is replaced by the
                      test server's
``replace=OLD=>NEW``  text substituted before running (e.g. a fixed port by 0)
``project=P file=F``  a file of a multi-file project (a Django site): not run
                      alone; written to F inside project P's folder, which the
                      project's own test (test_doc_examples.PROJECTS) then runs
``skip=WHY``          not run, for the reason given (the tests accept only a reason
                      that names the test covering the code instead)

``parse`` refuses anything else (an unmarked block, an unknown option, an output
for no example, a marker not followed by a block), naming the file and line.
The ```python examples are also type-checked (``mypy --strict``:
tests/typing/check_types.py).
"""

from __future__ import annotations

import re
import shlex
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

RUN_LANGUAGES = ("python", "c")
OPTIONS = ("after", "file", "needs", "project", "redis", "replace", "skip")

_MARKER = re.compile(r"<!-- (example|output): ([\w.-]+)(.*?)-->")
_FENCE = re.compile(r"(`{3,})(\S*)\s*$")


class ReadmeError(ValueError):
    """A marker or block that does not follow the rules above."""


@dataclass
class Example:
    """One marked block: its code starts on line ``line`` (1-based) of ``source``
    (a path relative to the repository, e.g. ``docs/guide.md``)."""

    name: str
    language: str
    code: str
    line: int
    options: Dict[str, str] = field(default_factory=dict)
    output: Optional[str] = None
    source: str = "README.md"

    @property
    def needs(self) -> List[str]:
        """The optional modules named by ``needs=`` (``redis=`` implies redis-py)."""
        names = [m for m in self.options.get("needs", "").split(",") if m]
        if "redis" in self.options and "redis" not in names:
            names.append("redis")
        return names


def parse(text: str, source: str = "README.md") -> Dict[str, Example]:
    """The examples of ``text`` by name, in order of appearance."""
    lines = text.split("\n")
    examples: Dict[str, Example] = {}
    pending: Optional[tuple] = None  # (kind, name, options, line) of the last marker
    i = 0
    while i < len(lines):
        line = lines[i]
        where = f"{source}:{i + 1}"
        marker = _MARKER.fullmatch(line.strip())
        fence = _FENCE.match(line.strip())
        if marker:
            if pending:
                raise ReadmeError(f"{source}:{pending[3]}: marker not followed by a code block")
            kind, name, rest = marker.groups()
            try:
                words = shlex.split(rest)
            except ValueError as exc:
                raise ReadmeError(f"{where}: unreadable options {rest.strip()!r}: {exc}") from None
            options = {}
            for word in words:
                key, sep, value = word.partition("=")
                if kind == "output" or not sep or key not in OPTIONS:
                    raise ReadmeError(f"{where}: unknown option {word!r} (known: {', '.join(OPTIONS)})")
                options[key] = value
            pending = (kind, name, options, i + 1)
        elif fence:
            ticks, language = fence.groups()
            end = i + 1
            while end < len(lines) and lines[end].strip() != ticks:
                end += 1
            if end == len(lines):
                raise ReadmeError(f"{where}: code block never closed")
            body = textwrap.dedent("\n".join(lines[i + 1 : end]) + "\n")
            _block(examples, pending, language, body, i + 2, where, source)
            pending = None
            i = end
        elif line.strip() and pending:
            raise ReadmeError(f"{source}:{pending[3]}: marker not followed by a code block")
        i += 1
    if pending:
        raise ReadmeError(f"{source}:{pending[3]}: marker not followed by a code block")
    return examples


def _block(examples: Dict[str, Example], pending: Optional[tuple], language: str, body: str,
           first_line: int, where: str, source: str) -> None:
    if pending is None:
        if language in RUN_LANGUAGES:
            raise ReadmeError(
                f"{where}: a ```{language} block without an '<!-- example: NAME -->' line before it "
                "(see tests/python/doc_examples.py)"
            )
        return
    kind, name, options, marker_line = pending
    if kind == "output":
        if language != "text":
            raise ReadmeError(f"{where}: the output of {name!r} must be a ```text block")
        if name not in examples:
            raise ReadmeError(f"{source}:{marker_line}: output for {name!r}, which no earlier example is")
        if examples[name].output is not None:
            raise ReadmeError(f"{source}:{marker_line}: a second output for {name!r}")
        examples[name].output = body
        return
    if language not in RUN_LANGUAGES:
        raise ReadmeError(f"{where}: example {name!r} is a ```{language} block (run: {RUN_LANGUAGES})")
    if name in examples:
        raise ReadmeError(f"{source}:{marker_line}: a second example named {name!r}")
    after = options.get("after")
    if after is not None and (after not in examples or examples[after].language != language):
        raise ReadmeError(f"{source}:{marker_line}: after={after!r} is no earlier {language} example")
    if "replace" in options and "=>" not in options["replace"]:
        raise ReadmeError(f"{source}:{marker_line}: replace= needs OLD=>NEW")
    if ("project" in options) != ("file" in options):
        raise ReadmeError(f"{source}:{marker_line}: project= and file= go together")
    if "project" in options and (language != "python" or "after" in options or "skip" in options):
        raise ReadmeError(f"{source}:{marker_line}: a project file is python, without after= or skip=")
    if "skip" in options and not options["skip"].strip():
        raise ReadmeError(f"{source}:{marker_line}: skip= needs the reason")
    examples[name] = Example(name, language, body, first_line, options, source=source)


def python_source(examples: Dict[str, Example], name: str) -> str:
    """Example ``name``'s code preceded by the examples it continues (``after=``),
    each line at its README line number (blank lines in between), so that a
    traceback's line numbers are the README's."""
    chain = []
    example: Optional[Example] = examples[name]
    while example is not None:
        chain.append(example)
        after = example.options.get("after")
        example = examples[after] if after else None
    source = ""
    for part in reversed(chain):
        padding = part.line - 1 - source.count("\n")
        assert padding >= 0, "an example continues a later one"
        source += "\n" * padding + part.code
    return source


def doc_files() -> List[Path]:
    """README.md, then every page of docs/ (sorted), then CHANGELOG.md."""
    files = [README, *sorted((ROOT / "docs").glob("*.md"))]
    changelog = ROOT / "CHANGELOG.md"
    return files + ([changelog] if changelog.exists() else [])


def all_examples() -> Dict[str, Example]:
    """Every example of :func:`doc_files`, by name (unique across the files)."""
    examples: Dict[str, Example] = {}
    for path in doc_files():
        source = path.relative_to(ROOT).as_posix()
        for name, example in parse(path.read_text(encoding="utf-8"), source).items():
            if name in examples:
                raise ReadmeError(
                    f"{source}:{example.line}: example {name!r} is also in {examples[name].source}"
                )
            examples[name] = example
    return examples


def project_files(examples: Dict[str, Example], project: str) -> Dict[str, Example]:
    """The files of ``project`` (``project=`` examples) by their path."""
    files: Dict[str, Example] = {}
    for example in examples.values():
        if example.options.get("project") == project:
            path = example.options["file"]
            if path in files:
                raise ReadmeError(f"{example.source}:{example.line}: a second {path} in project {project!r}")
            files[path] = example
    return files

