"""Summarise a py-spy profile in its raw (collapsed) format: where a service's time goes.

    py-spy record --rate 250 --nonblocking --format raw -d 10 -o router.raw -p PID
    python bench/profile_summary.py router.raw > router.txt

Prints the frames with the most self time, and the Chorus functions with the most time
inside them (their callees included), each as a share of all samples.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

TOP = 18


def summarise(path: Path) -> str:
    own: Counter[str] = Counter()
    inside: Counter[str] = Counter()
    total = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[_short(frames[-1])] += n
        for name in {_function(f) for f in frames if "chorus/" in f}:
            inside[name] += n
    if not total:
        return f"{path.name}: no samples\n"
    lines = [f"{path.name}: {total} samples", "-- top self"]
    lines += [f"{100 * n / total:5.1f}% {name}" for name, n in own.most_common(TOP)]
    lines.append("-- top inclusive (chorus code)")
    lines += [f"{100 * n / total:5.1f}% {name}" for name, n in inside.most_common(TOP)]
    return "\n".join(lines) + "\n"


def _short(frame: str) -> str:
    """`fn (path/to/site-packages/pkg/mod.py:12)` -> `fn (pkg/mod.py:12)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "lib/python3", "/work/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    parts = where.split("/")
    return f"{name} ({'/'.join(parts[-2:])})"


def _function(frame: str) -> str:
    name, _, where = frame.partition(" (")
    path = where.split(":")[0]
    return f"{name} ({path[path.index('chorus/') :]})"


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        sys.stdout.write(summarise(Path(arg)))
