"""The README's examples, as the tests read them.

Every ```python and ```c block of README.md is preceded (blank lines aside) by a
marker, ``<!-- example: NAME [key=value ...] -->``; a ```text block preceded by
``<!-- output: NAME -->`` is what example NAME prints (with ``after=``, the whole
run's output, the earlier example's included). Options (values may be
quoted, shell-style):

``after=OTHER``       OTHER's code runs first (an earlier example this one continues)
``needs=mod,...``     optional modules; the example is skipped without them
``redis=URL``         needs a Redis: URL, as written in the code, is replaced by the
                      test server's
``replace=OLD=>NEW``  text substituted before running (e.g. a fixed port by 0)
``skip=WHY``          not run, for the reason given

``parse`` refuses anything else (an unmarked block, an unknown option, an output
for no example, a marker not followed by a block), naming the README line.
"""

from __future__ import annotations

import re
import shlex
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

README = Path(__file__).resolve().parents[2] / "README.md"

RUN_LANGUAGES = ("python", "c")
OPTIONS = ("after", "needs", "redis", "replace", "skip")

_MARKER = re.compile(r"<!-- (example|output): ([\w.-]+)(.*?)-->")
_FENCE = re.compile(r"(`{3,})(\S*)\s*$")


class ReadmeError(ValueError):
    """A README marker or block that does not follow the rules above."""


@dataclass
class Example:
    """One marked block: its code starts on README line ``line`` (1-based)."""

    name: str
    language: str
    code: str
    line: int
    options: Dict[str, str] = field(default_factory=dict)
    output: Optional[str] = None

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
                "(see tests/python/readme_examples.py)"
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
    examples[name] = Example(name, language, body, first_line, options)


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


def readme_examples() -> Dict[str, Example]:
    """The examples of the project's README.md."""
    return parse(README.read_text(encoding="utf-8"))
