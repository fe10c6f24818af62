"""Input files and how line positions map to days and splits."""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from dlrmx.preprocess.config import SplitOps


def _natural_key(p: Path) -> list:
    # day_2 before day_10: compare digit runs as numbers.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def discover(paths: list[str]) -> list[Path]:
    """Expand files, directories (every visible file inside, in natural order) and globs.

    Plain and gzip (``.gz``) text files are both accepted; gzip is detected by the engines.
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted((q for q in p.iterdir() if q.is_file() and not q.name.startswith((".", "_"))),
                           key=_natural_key)
            if not found:
                raise FileNotFoundError(f"input directory {p} holds no files")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            matches = sorted((Path(m) for m in glob.glob(raw)), key=_natural_key)
            if not matches:
                raise FileNotFoundError(f"input {raw}: no such file, directory or glob match")
            out += [m for m in matches if m.is_file()]
    if len(set(out)) != len(out):
        raise ValueError("an input file is named twice")
    return [p.resolve() for p in out]


@dataclass(frozen=True)
class Segment:
    """A contiguous range of line positions ``[start, end)``: one day of train, or test/val."""

    name: str
    split: str
    start: int
    end: int


def _halve_last(days: list[tuple[int, int]]) -> list[Segment]:
    segs = [Segment(f"day_{i}", "train", a, b) for i, (a, b) in enumerate(days[:-1])]
    a, b = days[-1]
    mid = a + (b - a + 1) // 2  # np.array_split(last_day, 2): the first half takes the odd row
    return segs + [Segment("test", "test", a, mid), Segment("val", "val", mid, b)]


def segments(file_rows: list[int], split: SplitOps) -> list[Segment]:
    """Cut the input's positions (data lines of all files, in order) into segments."""
    n = sum(file_rows)
    if split.by == "none":
        return [Segment("all", "train", 0, n)]
    if split.by == "files":
        bounds, start = [], 0
        for r in file_rows:
            bounds.append((start, start + r))
            start += r
        return _halve_last(bounds)
    base, extra = divmod(n, split.days)  # np.array_split sizes, as the reference splits train.txt
    bounds, start = [], 0
    for d in range(split.days):
        size = base + (1 if d < extra else 0)
        bounds.append((start, start + size))
        start += size
    return _halve_last(bounds)


def train_end(segs: list[Segment]) -> int:
    return max((s.end for s in segs if s.split == "train"), default=0)
