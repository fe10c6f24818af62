"""Bad-row bookkeeping, stage timings and the final report."""

from __future__ import annotations

import json
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

# Kinds of bad input. A row with any of them is quarantined, dropped or fails the run.
TOO_MANY_FIELDS = "too_many_fields"
NON_NUMERIC = "non_numeric"  # an integer field (label, dense, int categorical) that is not one
NON_HEX = "non_hex"  # a hex categorical that is not hex
OVERFLOW = "overflow"  # an integer or hex value outside int64
MISSING_LABEL = "missing_label"
BAD_LABEL = "bad_label"  # a label that parses but is not 0 or 1 (the format's labels are 0/1)
INVALID_UTF8 = "invalid_utf8"  # a line that is not UTF-8 text (row-level; no other kind is named)
ROW_LEVEL = "*"  # the "column" of row-level kinds


class PreprocessError(Exception):
    """A problem the user can fix; the message names the file, line or path and what to do.

    `run()` raises these (never SystemExit); the CLI prints them as one ``error:`` line."""


class BadInputError(PreprocessError, RuntimeError):
    """Raised with ``--on-bad-row fail``; the message names file, line, column and kind."""


class InputError(PreprocessError):
    """An input file cannot be used: empty, truncated or corrupt gzip, unreadable."""


class OutputError(PreprocessError):
    """The output cannot be written there: an existing file, a directory that is not an earlier
    output, an input inside it, no permission, no space left."""


@dataclass
class BadExample:
    file: str
    line: int  # 1-based line number in its file
    problems: list[str]  # "column:kind"
    text: str

    def describe(self) -> str:
        shown = self.text if len(self.text) <= 200 else self.text[:200] + "..."
        return f"{self.file}:{self.line}: {', '.join(self.problems)}: {shown!r}"


@dataclass
class BadRows:
    counts: Counter = field(default_factory=Counter)  # (column, kind) -> rows
    rows: int = 0
    examples: list[BadExample] = field(default_factory=list)
    max_examples: int = 5

    def add_examples(self, examples: list[BadExample]) -> None:
        room = self.max_examples - len(self.examples)
        if room > 0:
            self.examples += examples[:room]

    def reset(self) -> None:
        self.counts.clear()
        self.rows = 0
        self.examples.clear()

    def to_dict(self) -> dict[str, Any]:
        by_column: dict[str, dict[str, int]] = {}
        for (col, kind), n in sorted(self.counts.items()):
            by_column.setdefault(col, {})[kind] = int(n)
        return {"rows": self.rows, "by_column": by_column,
                "examples": [e.__dict__ for e in self.examples]}


class Stages:
    """Wall time per stage, in order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t


@dataclass
class Report:
    engine: str
    input_rows: int
    rows: dict[str, int]
    table_sizes: dict[str, int]
    bad: BadRows
    dropped_by_rule: int
    stages: dict[str, float]
    output: str
    quarantine: str | None = None
    removed_stale: list[str] = field(default_factory=list)  # temporaries of dead earlier runs
    unknown_stale: list[str] = field(default_factory=list)  # temporaries whose owner is unknown

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["bad"] = self.bad.to_dict()
        d["total_seconds"] = sum(self.stages.values())
        return d

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def text(self) -> str:
        total = sum(self.stages.values())
        lines = [f"dlrmx.preprocess ({self.engine}): {self.input_rows:,} input rows in {total:.1f} s "
                 f"({self.input_rows / max(total, 1e-9):,.0f} rows/s) -> {self.output}",
                 "rows: " + ", ".join(f"{k} {v:,}" for k, v in self.rows.items())]
        if self.dropped_by_rule:
            lines.append(f"dropped by drop_rows_if_missing: {self.dropped_by_rule:,}")
        lines.append("table sizes: " + ", ".join(f"{k} {v:,}" for k, v in self.table_sizes.items()))
        if self.bad.rows:
            where = f" (quarantined in {self.quarantine})" if self.quarantine else " (dropped)"
            lines.append(f"bad rows: {self.bad.rows:,}{where}")
            for (col, kind), n in sorted(self.bad.counts.items()):
                lines.append(f"  {col}: {kind}: {n:,}")
            lines.append("  first examples:")
            lines += [f"    {e.describe()}" for e in self.bad.examples]
        else:
            lines.append("bad rows: 0")
        if self.removed_stale:
            lines.append("removed temporaries of earlier runs that were killed: "
                         + ", ".join(self.removed_stale))
        if self.unknown_stale:
            lines.append("left temporaries of an unknown run (remove them once no run writes to "
                         f"{self.output}): " + ", ".join(self.unknown_stale))
        lines.append("time per stage: " + ", ".join(f"{k} {v:.2f} s" for k, v in self.stages.items()))
        return "\n".join(lines)
