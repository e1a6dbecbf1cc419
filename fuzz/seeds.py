#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora into fuzz/corpus/<target>/seed-* (or the
folder given as the first argument). Small hand-made inputs, enough to start each
target past its format's first checks; libFuzzer grows the corpus from them.
Idempotent: existing seeds are overwritten, other corpus files are kept."""

import json
import os
import struct
import sys

T0 = 1_767_225_600


def ours(entries, **over):
    doc = {
        "format": "engagehub.leaderboard", "version": 1, "decay_factor": 0.95,
        "decay_period_secs": 86400.0, "max_users": 0, "landmark": T0,
        "columns": ["user_id", "score_at_landmark", "last_update"],
        "entries": entries,
    }
    doc.update(over)
    return json.dumps(doc, ensure_ascii=False).encode()


def cpp(entries, **over):
    doc = {"decay_factor": 0.95, "max_users": 100000, "entries": entries}
    doc.update(over)
    return json.dumps(doc).encode()


SNAPSHOT = [
    ours([]),
    ours([["42", 12.5, T0 + 100], ["7", 3.0, T0], ["long-" + "x" * 40, 1e-300, T0]]),
    ours([["a", 1.0, T0], ["b", 1.0, T0], ["c", 1.0, T0]], max_users=3),
    ours([["é", 0.0, 0]], decay_factor=1.0, decay_period_secs=60.0, landmark=0),
    cpp([]),
    cpp([{"user_id": "123456789012345678", "score": 25.0, "last_update": T0},
         {"user_id": "2", "score": 0.5, "last_update": T0 - 86400.5}]),
    cpp([{"user_id": "x", "score": 1.0, "last_update": T0, "extra": [1, {"k": None}]}],
        max_users=1),
]

# sketch_bytes: the first byte picks the mode (see fuzz_targets/sketch_bytes.rs):
# 2 = shaped HLL (header + registers), 4 / 5 = shaped Count-Min.
HLL_HEADER = b"EHLL" + bytes([1, 14, 0, 0])


def cms_header(depth, width, total):
    return b"ECMS" + bytes([1]) + struct.pack("<IIQ", depth, width, total)


SKETCH = [
    bytes([0]) + HLL_HEADER,
    bytes([2]) + HLL_HEADER,
    bytes([2]) + HLL_HEADER + bytes([1, 0, 3, 7, 51, 0, 2]),
    bytes([3]) + HLL_HEADER + bytes([52, 255]),
    bytes([1]) + cms_header(4, 2048, 0),
    bytes([4]) + cms_header(1, 4, 0) + struct.pack("<4Q", 1, 0, 5, 2),
    bytes([4]) + cms_header(2, 2, 0) + struct.pack("<4Q", 3, 1, 2, 2),
    bytes([5]) + cms_header(2, 2, 4) + struct.pack("<4Q", 3, 1, 2, 2),
]

# leaderboard_ops: the input is decoded by `arbitrary`, so any bytes are valid
# operation lists; these favour small boards, bulk adds and equal points.
OPS = [
    bytes([0, 0, 1]) + bytes([0, 0, 2, 0] * 8),
    bytes([0, 0, 6]) + bytes([2, 0, 200, 2, 0]) + bytes([0, 9, 2, 0] * 16),
    bytes([1, 2, 4]) + bytes(range(256)),
    bytes([2, 1, 7]) + bytes([2, 10, 250, 4, 0, 2, 3, 250, 4, 0, 7, 5]),
]


# journal: the first byte picks the mode (fuzz_targets/journal.rs): 0 = records
# framed into a segment (damage byte, then type, length, payload...), 1 = a board
# checkpoint, 2 = a processor shard checkpoint. Records of the board's types:
# 1 add / 2 set (ts, landmark, amount, then the id), 3 remove, 4 clear, 5 enable,
# 6 drain, 7 ack, 8 identity.
def board_update(kind, ts, landmark, amount, user):
    body = struct.pack("<qqd", ts, landmark, amount) + user
    return bytes([kind, len(body)]) + body


JOURNAL = [
    bytes([0, 0]) + bytes([5, 8]) + struct.pack("<Q", 100) + board_update(1, T0, T0, 2.5, b"alice")
    + board_update(2, T0 + 60, T0, 1.0, b"bob") + bytes([3, 5]) + b"alice" + bytes([8, 2]) + b"me",
    bytes([0, 201]) + board_update(1, T0, T0, 1.0, b"x") * 5,
    bytes([1]) + struct.pack("<q4QQ", T0, 0, 0, 0, 0, 0) + bytes([0]) + struct.pack("<I", 0) + struct.pack("<QI", 0, 0)
    + struct.pack("<Q", 0),
    bytes([2]) + struct.pack("<Q", 0),
]


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
    for target, seeds in (("snapshot", SNAPSHOT), ("sketch_bytes", SKETCH), ("leaderboard_ops", OPS),
                          ("journal", JOURNAL)):
        folder = os.path.join(root, target)
        os.makedirs(folder, exist_ok=True)
        for i, data in enumerate(seeds):
            with open(os.path.join(folder, f"seed-{i}"), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
