"""HyperLogLog accuracy: engagehub's HLL(14) beside Apache DataSketches' HLL(14)
(when the ``datasketches`` package is installed) on the same ids.

Run: ``PYTHONPATH=python python3 benches/hll_accuracy.py [--max 10000000]``.
Ids are 18-digit Discord-like numbers derived from a seeded sequence; each n is a
fresh stream of n distinct ids. Prints a Markdown table (n, true, estimates,
relative errors). Standard error of HLL(14): 1.04 / sqrt(16384) = 0.81 %.
"""

from __future__ import annotations

import argparse
import sys

from engagehub import HyperLogLog

try:
    import datasketches
except ImportError:  # optional baseline
    datasketches = None


def ids(n: int, seed: int):
    base = 100_000_000_000_000_000 + seed * 7_777_777
    step = 1_000_003
    return (str(base + i * step) for i in range(n))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    sizes = [n for n in (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000) if n <= args.max]
    header = "| n | engagehub estimate | error |"
    rule = "|---:|---:|---:|"
    if datasketches is not None:
        header += " DataSketches HLL(14) | error |"
        rule += "---:|---:|"
    print(header)
    print(rule)
    for n in sizes:
        ours = HyperLogLog()
        theirs = datasketches.hll_sketch(14, datasketches.tgt_hll_type.HLL_8) if datasketches else None
        chunk: list[str] = []
        for uid in ids(n, args.seed):
            chunk.append(uid)
            if len(chunk) == 10_000:
                ours.update(chunk)
                if theirs is not None:
                    for c in chunk:
                        theirs.update(c)
                chunk.clear()
        ours.update(chunk)
        if theirs is not None:
            for c in chunk:
                theirs.update(c)
        est = ours.count()
        row = f"| {n:,} | {est:,} | {100 * (est - n) / n:+.2f}% |"
        if theirs is not None:
            d = theirs.get_estimate()
            row += f" {d:,.0f} | {100 * (d - n) / n:+.2f}% |"
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
