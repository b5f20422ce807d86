"""Summarise a py-spy profile (`--format raw`, collapsed stacks) as text tables.

Three views of the same samples: the functions samples were in (self), the functions
on the stack (inclusive, each counted once a sample), and the library each sample's
innermost frame belongs to. Line numbers are dropped so one function is one row.

    .bench-venv/bin/py-spy record --pid PID --format raw --gil --duration 20 -o worker.txt
    /work/venv/bin/python bench/profile_top.py worker.txt --top 25 --under workers.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]+?)(?::\d+)?\)$")
PROJECT = ("workers", "models", "producer_api")


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def name(frame: str) -> str:
    """`func (psycopg/cursor.py:12)` -> `psycopg/cursor.py:func` (py-spy shortens paths)."""
    match = FRAME.match(frame)
    return frame if match is None else f"{match['file']}:{match['func']}"


def library(frame: str) -> str:
    """The top-level package (or stdlib module) of a frame; the project's are marked."""
    match = FRAME.match(frame)
    if match is None:
        return "?"
    top = match["file"].split("/")[0].removesuffix(".py")
    return f"{top} (project)" if top in PROJECT else top


def summarise(stacks: list[tuple[list[str], int]], top: int, under: str) -> str:
    total = sum(n for _, n in stacks)
    own, inclusive, libs = Counter[str](), Counter[str](), Counter[str]()
    for frames, n in stacks:
        own[name(frames[-1])] += n
        libs[library(frames[-1])] += n
        for func in {name(f) for f in frames}:
            inclusive[func] += n
    out = [f"{total} samples"]
    views = (("self", own, ""), ("inclusive", inclusive, under), ("library (self)", libs, ""))
    for title, counter, prefix in views:
        out += ["", f"| {title} | % | samples |", "|---|---|---|"]
        rows = [(k, v) for k, v in counter.most_common() if k.startswith(prefix)][:top]
        out += [f"| `{k}` | {100 * v / total:.1f} | {v} |" for k, v in rows]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path, help="py-spy raw output")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--under", default="", help="inclusive view: only names with prefix")
    args = parser.parse_args()
    print(summarise(parse(args.profile), args.top, args.under))


if __name__ == "__main__":
    main()
