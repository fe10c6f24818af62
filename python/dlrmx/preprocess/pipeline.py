"""`run()`: one preprocessing run, engine-independent: count, parse, dictionaries, encode, write.

The output directory is built beside its final place and renamed into it when complete, so a
failed or interrupted run never leaves a mix of old and new files under the final name.
"""

from __future__ import annotations

import datetime
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dlrmx.data.format import write_spec
from dlrmx.preprocess import report as R
from dlrmx.preprocess.config import PipelineConfig
from dlrmx.preprocess.inputs import discover, segments, train_end
from dlrmx.preprocess.writer import (load_dictionaries, reserved_ids, save_dictionaries,
                                     write_splits)


class Engine(Protocol):
    name: str

    def count_lines(self, files: list[Path], header: bool) -> list[int]: ...
    def parse(self, cfg, files, file_rows, segs, work, bad, quarantine, progress): ...
    def build_dictionaries(self, cfg, work, fit_end): ...
    def encode(self, cfg, work, dicts, reserved): ...


@dataclass
class EngineOptions:
    name: str = "auto"  # auto | polars | spark
    master: str | None = None  # Spark master URL; implies the spark engine under auto
    spark_conf: dict[str, str] = field(default_factory=dict)
    broadcast_limit_mb: float = 256.0  # Spark: dictionaries estimated below this are broadcast


def under_spark_submit() -> bool:
    return "PYSPARK_GATEWAY_PORT" in os.environ  # set by spark-submit for the Python driver


def make_engine(opts: EngineOptions) -> Engine:
    name = opts.name
    if name == "auto":
        name = "spark" if (opts.master or under_spark_submit()) else "polars"
    if name == "polars":
        from dlrmx.preprocess.polars_engine import PolarsEngine
        return PolarsEngine()
    if name == "spark":
        from dlrmx.preprocess.spark_engine import SparkEngine
        return SparkEngine(master=opts.master, conf=opts.spark_conf,
                           broadcast_limit_mb=opts.broadcast_limit_mb)
    raise ValueError(f"unknown engine {name!r}: auto, polars or spark")


class _Progress:
    def __init__(self, enabled: bool, total: int, desc: str) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit=" rows", unit_scale=True, dynamic_ncols=True)

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _replace_dir(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old)


def run(cfg: PipelineConfig, inputs: list[str], out: str | Path, engine: Engine | EngineOptions
        | str = "auto", dictionaries: str | Path | None = None, progress: bool = False,
        keep_work: bool = False) -> R.Report:
    """Preprocess ``inputs`` into the training format at ``out``; returns the report."""
    cfg.validate()
    if not isinstance(engine, (EngineOptions, str)):
        eng = engine
    else:
        eng = make_engine(engine if isinstance(engine, EngineOptions) else EngineOptions(engine))
    files = discover(inputs)
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    work = tmp / "_work"
    work.mkdir()
    stages = R.Stages()
    bad = R.BadRows()
    try:
        with stages.time("count"):
            file_rows = eng.count_lines(files, cfg.schema.header)
        segs = segments(file_rows, cfg.split)
        n_input = sum(file_rows)
        quarantine = tmp / "quarantine.tsv" if cfg.on_bad_row == "quarantine" else None
        bar = _Progress(progress, n_input, "parse")
        with stages.time("parse"):
            good, dropped = eng.parse(cfg, files, file_rows, segs, work, bad, quarantine, bar)
        bar.close()
        if quarantine is not None and bad.rows == 0:
            quarantine.unlink(missing_ok=True)
            quarantine = None
        with stages.time("dictionaries"):
            if dictionaries is not None:
                dicts, reserved = load_dictionaries(cfg, Path(dictionaries))
            else:
                fit_end = train_end(segs) if cfg.categorical_ops.fit_on == "train" else None
                dicts = eng.build_dictionaries(cfg, work, fit_end)
                reserved = reserved_ids(cfg, dicts)
            save_dictionaries(cfg, dicts, reserved, tmp / "dictionaries")
        table_sizes = [dicts[c].height + 1 for c in cfg.categorical]
        bar = _Progress(progress, sum(good), "encode+write")
        with stages.time("encode+write"):
            rows = write_splits(cfg, eng.encode(cfg, work, dicts, reserved), segs, good,
                                table_sizes, tmp, bar)
        bar.close()
        produced_by: dict[str, Any] = {
            "tool": "dlrmx.preprocess", "engine": eng.name,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "pipeline": cfg.to_dict(),
            "inputs": [{"path": str(f), "rows": r} for f, r in zip(files, file_rows)],
            "segments": [s.__dict__ | {"good_rows": g} for s, g in zip(segs, good)],
            "dictionaries": "dictionaries/" if dictionaries is None else f"reused from {dictionaries}",
            "bad_rows": bad.rows, "dropped_by_rule": dropped,
        }
        write_spec(tmp, dense_columns=cfg.dense, sparse_columns=cfg.categorical,
                   label_column=cfg.schema.label, table_sizes=table_sizes, rows=rows,
                   produced_by=produced_by)
        rep = R.Report(engine=eng.name, input_rows=n_input, rows=rows,
                       table_sizes=dict(zip(cfg.categorical, table_sizes)), bad=bad,
                       dropped_by_rule=dropped, stages=dict(stages.seconds), output=str(out),
                       quarantine=str(out / "quarantine.tsv") if quarantine else None)
        rep.write(tmp / "report.json")
        if not keep_work:
            shutil.rmtree(work)
        _replace_dir(tmp, out)
        return rep
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
