"""The rules of ``make typecheck`` (tests/typing/check_types.py) on small inputs: a
marked line needs each of its codes, and an unmarked line no error at all."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "typing"))

import check_types  # noqa: E402


def test_marks_are_read_per_line() -> None:
    source = "ok()\nbad(1)  # E: arg-type\nworse()  # E: call-arg, index\n# E: not at the end x\n"
    assert check_types.expected_errors(source) == {2: {"arg-type"}, 3: {"call-arg", "index"}}


def test_every_mark_needs_its_codes_and_nothing_else_may_fail() -> None:
    marks = {2: {"arg-type"}, 3: {"call-arg", "index"}}
    assert check_types.compare(marks, [(2, "arg-type", "m"), (3, "call-arg", "m"), (3, "index", "m")], "f") == []
    problems = check_types.compare(marks, [(2, "arg-type", "m"), (3, "call-arg", "m"), (1, "misc", "boom")], "f")
    assert problems == ["f:1: unexpected error: boom [misc]", "f:3: expected index, mypy reported call-arg"]
    assert check_types.compare({5: {"arg-type"}}, [], "f") == ["f:5: expected arg-type, mypy reported nothing"]


def test_only_untyped_imports_relax_a_module() -> None:
    assert check_types._imports_untyped("from django.db import models\n")
    assert check_types._imports_untyped("def run() -> None:\n    import discord\n")
    assert not check_types._imports_untyped("import redis\nfrom engagehub import Leaderboard\n")
    assert not check_types._imports_untyped("import djangoish\n")
