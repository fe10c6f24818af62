"""Input files and how line positions map to days and splits."""

from __future__ import annotations

import codecs
import glob
import gzip
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dlrmx.preprocess.config import SplitOps
from dlrmx.preprocess.report import InputError

BLOCK = 8 << 20  # bytes per read when checking or copying inputs
GZIP_MAGIC = b"\x1f\x8b"


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


def reference_day_files(prefix: str | Path) -> list[Path]:
    """The reference DLRM's ``--raw-data-file=.../day`` for Terabyte: ``day_0, day_1, ...``
    (or ``day_N.gz``; the plain file wins when both exist), in day order, without gaps."""
    prefix = Path(prefix)
    found: dict[int, Path] = {}
    if prefix.parent.is_dir():
        pat = re.compile(re.escape(prefix.name) + r"_(\d+)(\.gz)?")
        for q in prefix.parent.iterdir():
            m = pat.fullmatch(q.name)
            if m and q.is_file() and (int(m[1]) not in found or not m[2]):
                found[int(m[1])] = q
    if not found:
        raise InputError(f"--raw-data-file {prefix}: no day files {prefix}_0, {prefix}_1, ... "
                         f"(or {prefix}_0.gz, ...) found; give the prefix of the Terabyte day files")
    missing = sorted(set(range(max(found) + 1)) - set(found))
    if missing:
        raise InputError(f"--raw-data-file {prefix}: {prefix}_{missing[0]} is missing (found days "
                         f"{sorted(found)}); the days must run from 0 without gaps")
    if len(found) < 2:
        raise InputError(f"--raw-data-file {prefix}: only {found[0]}; Terabyte needs at least two "
                         "day files (the last day is halved into test and val, the others train)")
    return [found[d] for d in sorted(found)]


# ------------------------------------------------------------------ reading the raw bytes
def open_raw(path: Path) -> BinaryIO:
    """The file's text bytes: gzip is recognised by its magic number, as the engines do."""
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == GZIP_MAGIC else open(path, "rb")


def unreadable(files: list[Path]) -> tuple[Path, str] | None:
    """The first file that cannot be read to its end, and why; None when all can. Reads every
    gzip file through, so call it only to explain a failed read."""
    for f in files:
        try:
            with open_raw(f) as r:
                while r.read(BLOCK):
                    pass
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            return f, f"truncated or corrupt gzip ({e})"
        except OSError as e:
            return f, e.strerror or str(e)
    return None


def input_read_error(files: list[Path], cause: BaseException) -> InputError | None:
    """An error naming the input file behind a failed read (None when no file explains it)."""
    found = unreadable(files)
    if found is None:
        return None
    f, why = found
    return InputError(f"input {f}: {why}; re-download or repair it, or leave it out")


def has_invalid_utf8(path: Path) -> bool:
    dec = codecs.getincrementaldecoder("utf-8")()
    try:
        with open_raw(path) as r:
            while block := r.read(BLOCK):
                dec.decode(block)
            dec.decode(b"", final=True)
    except UnicodeDecodeError:
        return True
    return False


def _utf8_line(line: bytes, line_no: int, bad: list[int]) -> bytes:
    try:
        line.decode("utf-8")
        return line
    except UnicodeDecodeError:
        bad.append(line_no)
        return line.decode("utf-8", "backslashreplace").encode("utf-8")


def utf8_copy(src: Path, dst: Path) -> list[int]:
    """Copy ``src`` to plain ``dst`` line for line (only ``\\n`` ends a line, as in the engines),
    every line that is not UTF-8 replaced by its text with the invalid bytes written as ``\\xNN``
    escapes; returns those lines' 1-based numbers."""
    bad: list[int] = []
    line_no = 0  # lines before the current piece
    with open_raw(src) as r, open(dst, "wb") as w:
        rest = b""
        while True:
            block = r.read(BLOCK)
            data = rest + block
            cut = data.rfind(b"\n") + 1 if block else len(data)  # whole lines, all at the end
            whole, rest = data[:cut], data[cut:]
            try:
                whole.decode("utf-8")  # the common case: a clean block goes through as it is
                w.write(whole)
                line_no += whole.count(b"\n")
            except UnicodeDecodeError:
                *lines, tail = whole.split(b"\n")  # tail: the unterminated last line, or b""
                for line in lines:
                    line_no += 1
                    w.write(_utf8_line(line, line_no, bad) + b"\n")
                if tail:
                    line_no += 1
                    w.write(_utf8_line(tail, line_no, bad))
            if not block:
                return bad


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
