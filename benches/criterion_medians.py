"""Prints the median of every criterion benchmark under target/criterion as a table.

Criterion's headline `time:` line is a mean estimate; the README reports medians.
Run after `cargo bench`: ``python3 benches/criterion_medians.py [filter]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def human(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.1f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def main() -> int:
    root = Path(__file__).resolve().parent.parent / "target" / "criterion"
    wanted = sys.argv[1] if len(sys.argv) > 1 else ""
    print("| benchmark | median |")
    print("|---|---:|")
    for estimates in sorted(root.glob("**/new/estimates.json")):
        name = str(estimates.parent.parent.relative_to(root))
        if wanted not in name:
            continue
        median = json.loads(estimates.read_text())["median"]["point_estimate"]
        print(f"| {name} | {human(median)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
