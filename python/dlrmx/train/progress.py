"""What a run prints while it trains: a tqdm bar on a terminal, or, when the output goes to a
file or a pipe (or with --no-progress), one readable line per --print-freq steps, in the
reference's words ("... ms/it, loss ..., accuracy ... %")."""

from __future__ import annotations

import datetime
import sys
from typing import Any, TextIO


class Progress:
    def __init__(self, total: int, start: int, bar: bool, print_time: bool, wall_time: bool,
                 stream: TextIO | None = None) -> None:
        self.total, self.print_time, self.wall_time = total, print_time, wall_time
        self.stream = stream or sys.stdout
        self.bar = None
        if bar and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def train(self, step: int, epoch: int, loss: float, accuracy: float, samples_per_s: float,
              lr: float, ms_per_it: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples_per_s:,.0f}")
            return
        line = (f"step {step}/{self.total} (epoch {epoch}): loss {loss:.6f}, accuracy "
                f"{100 * accuracy:.3f} %, {samples_per_s:,.0f} samples/s, lr {lr:.4g}")
        if self.print_time:
            line += f", {ms_per_it:.2f} ms/it"
        self._print(line)

    def eval(self, split: str, step: int, m: dict[str, Any]) -> None:
        self._print(f"eval {split} at step {step}: AUC {m['auc']:.6f}, logloss "
                    f"{m['logloss']:.6f}, accuracy {100 * m['accuracy']:.3f} % "
                    f"({m['samples']:,} samples)")

    def _print(self, line: str) -> None:
        if self.wall_time:
            line = f"[{datetime.datetime.now().isoformat(timespec='seconds')}] {line}"
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
