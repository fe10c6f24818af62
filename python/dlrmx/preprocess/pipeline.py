"""`run()`: one preprocessing run, engine-independent: count, parse, dictionaries, encode, write.

The output directory is built beside its final place and renamed into it when complete, so a
failed or interrupted run never leaves a mix of old and new files under the final name. Those
temporaries carry the host and pid of their run, so that the next run into the same output can
remove the ones a killed run left behind (and only those).

User errors (bad inputs, an output that cannot be written there) raise a `PreprocessError`
subclass whose message names the file or path; nothing here exits the process.
"""

from __future__ import annotations

import datetime
import errno
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from dlrmx import atomic
from dlrmx.data.format import write_spec
from dlrmx.preprocess import report as R
from dlrmx.preprocess.config import PipelineConfig, preset, use_reference_semantics
from dlrmx.preprocess.inputs import discover, reference_day_files, segments, train_end
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


# ------------------------------------------------------------------ the output directory
def check_output(out: Path, files: list[Path]) -> None:
    """Refuse an output that is a file, that holds an input, or that replacing would lose data."""
    if out.exists() and not out.is_dir():
        what = "an input file" if out in files else "an existing file"
        raise R.OutputError(f"-o/--output {out} is {what}, not a directory; give the path of a "
                            "new directory (or of an earlier dlrmx.preprocess output to replace)")
    inside = [f for f in files if out in f.parents]
    if inside:
        raise R.OutputError(f"-o/--output {out} contains the input {inside[0]}; replacing the "
                            "output would delete it: choose an output directory outside the inputs")
    if out.is_dir() and any(out.iterdir()) and not any((out / n).is_file()
                                                       for n in ("spec.json", "report.json")):
        raise R.OutputError(f"-o/--output {out} is a directory that is not empty and not an "
                            "earlier dlrmx.preprocess output (no spec.json or report.json), so it "
                            "is not replaced: choose a new or empty directory, or remove it first")


def _errno(e: BaseException) -> int | None:
    """errno of an OSError; Polars' I/O errors carry it only in the text ("os error 28")."""
    if isinstance(e, OSError) and e.errno:
        return e.errno
    m = re.search(r"os error (\d+)", str(e))
    return int(m[1]) if m else None


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _free(path: Path) -> int:
    return shutil.disk_usage(path).free


def _write_error(e: BaseException, out: Path, tmp: Path, need: int | None) -> R.OutputError | None:
    """The user's version of an error writing the output (full disk, no permission); None for
    anything else, which stays as it is."""
    code = _errno(e)
    path = Path(e.filename) if getattr(e, "filename", None) else None
    if path is not None and tmp not in path.parents and path != tmp and path != out.parent:
        return None  # not the output being written (e.g. reading --dictionaries)
    where = path or tmp
    if code in (errno.ENOSPC, errno.EDQUOT):
        needs = f"; this output needs about {_size(need)}" if need else ""
        free = _size(_free(out.parent))
        return R.OutputError(f"no space left on the device writing {where} ({free} free in "
                             f"{out.parent}{needs}): free some space or choose another -o/--output")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return R.OutputError(f"permission denied writing {where}: make {out.parent} writable or "
                             "choose another -o/--output")
    return None


def split_bytes(cfg: PipelineConfig, rows: int, table_sizes: list[int]) -> int:
    """Bytes of the training files for ``rows`` rows (label int8, dense float32, ids)."""
    from dlrmx.data.format import sparse_dtype
    ids = sparse_dtype(table_sizes).itemsize * len(cfg.categorical)
    return rows * (1 + 4 * len(cfg.dense) + ids)


def _make_temp(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = atomic.temp_name(out, "tmp")
        tmp.mkdir()
        (tmp / "_work").mkdir()
    except OSError as e:
        raise R.OutputError(f"cannot create the output {out}: {e.strerror or e}"
                            f"{': ' + str(e.filename) if e.filename else ''}; choose another "
                            "-o/--output or make its parent directory writable") from e
    return tmp


def _check_inputs(files: list[Path], file_rows: list[int]) -> None:
    empty = [f for f, n in zip(files, file_rows) if n == 0]
    if empty:
        raise R.InputError(f"input {empty[0]} is empty (no data lines)"
                           + (f", and {len(empty) - 1} more" if len(empty) > 1 else "")
                           + "; leave it out or give the complete file")


def _check_good_rows(n_input: int, good: list[int], dropped: int, bad: R.BadRows) -> None:
    if sum(good) == 0:
        first = f"; first: {bad.examples[0].describe()}" if bad.examples else ""
        raise R.InputError(f"none of the {n_input:,} input rows is usable ({bad.rows:,} bad, "
                           f"{dropped:,} dropped by drop_rows_if_missing){first}; check the "
                           "schema (delimiter, columns) against the input")


def run(cfg: PipelineConfig, inputs: list[str], out: str | Path, engine: Engine | EngineOptions
        | str = "auto", dictionaries: str | Path | None = None, progress: bool = False,
        keep_work: bool = False) -> R.Report:
    """Preprocess ``inputs`` into the training format at ``out``; returns the report.

    Raises `PreprocessError` (its subclasses `InputError`, `OutputError`, `BadInputError`),
    ``ValueError`` (the config) or ``FileNotFoundError`` (an input) for what the user can fix.
    """
    cfg.validate()
    files = discover(inputs)
    out = Path(out).resolve()
    check_output(out, files)
    if not isinstance(engine, (EngineOptions, str)):
        eng = engine
    else:
        eng = make_engine(engine if isinstance(engine, EngineOptions) else EngineOptions(engine))
    removed, left = atomic.remove_stale(out)
    tmp = _make_temp(out)
    try:
        rep = _build(cfg, eng, files, tmp, out, dictionaries, progress, keep_work)
        rep.removed_stale = [str(q) for q in removed]
        rep.unknown_stale = [str(q) for q in left]
        rep.write(tmp / "report.json")
        atomic.replace_dir(tmp, out)
        return rep
    except (OSError, pl.exceptions.ComputeError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        err = _write_error(e, out, tmp, getattr(e, "need", None))
        if err is None:
            raise
        raise err from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _build(cfg: PipelineConfig, eng: Engine, files: list[Path], tmp: Path, out: Path,
           dictionaries: str | Path | None, progress: bool, keep_work: bool) -> R.Report:
    """All stages into ``tmp``; the report is returned, not yet written."""
    work = tmp / "_work"
    stages = R.Stages()
    bad = R.BadRows()
    with stages.time("count"):
        file_rows = eng.count_lines(files, cfg.schema.header)
    _check_inputs(files, file_rows)
    segs = segments(file_rows, cfg.split)
    n_input = sum(file_rows)
    quarantine = tmp / "quarantine.tsv" if cfg.on_bad_row == "quarantine" else None
    bar = _Progress(progress, n_input, "parse")
    with stages.time("parse"):
        good, dropped = eng.parse(cfg, files, file_rows, segs, work, bad, quarantine, bar)
    bar.close()
    _check_good_rows(n_input, good, dropped, bad)
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
    need = split_bytes(cfg, sum(good), table_sizes)
    if need > _free(tmp):
        raise R.OutputError(f"not enough space in {out.parent} for the training files: they need "
                            f"about {_size(need)}, {_size(_free(tmp))} is free; free some space "
                            "or choose another -o/--output")
    bar = _Progress(progress, sum(good), "encode+write")
    with stages.time("encode+write"):
        try:
            rows = write_splits(cfg, eng.encode(cfg, work, dicts, reserved), segs, good,
                                table_sizes, tmp, bar)
        except OSError as e:
            e.need = need  # the space the message can name
            raise
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
    if not keep_work:
        shutil.rmtree(work)
    return rep


# ------------------------------------------------------------------ the reference's data sets
REFERENCE_DATA_SETS = {"kaggle": "criteo-kaggle", "terabyte": "criteo-terabyte"}


def reference_inputs(data_set: str, raw_data_file: str | Path) -> tuple[str, list[Path]]:
    """The preset and input files behind the reference DLRM's ``--data-set`` and
    ``--raw-data-file``: kaggle reads one file (``train.txt``); terabyte reads the day files
    ``{raw_data_file}_0, _1, ...`` (or ``.gz``), all that exist, the last halved into test/val."""
    if data_set not in REFERENCE_DATA_SETS:
        raise ValueError(f"--data-set {data_set!r}: preprocessing handles "
                         f"{' or '.join(REFERENCE_DATA_SETS)}")
    if data_set == "terabyte":
        return REFERENCE_DATA_SETS[data_set], reference_day_files(raw_data_file)
    p = Path(raw_data_file)
    if not p.is_file():
        raise R.InputError(f"--raw-data-file {p}: no such file (Kaggle: the Criteo train.txt)")
    return REFERENCE_DATA_SETS[data_set], [p]


def preprocess_reference(data_set: str, raw_data_file: str | Path, out_dir: str | Path,
                         max_ind_range: int = -1, progress: bool = False) -> Path:
    """Preprocess the reference DLRM's raw data (``--data-set kaggle|terabyte``,
    ``--raw-data-file``) with the Polars engine into ``out_dir``, with the reference's ids
    (first-seen order, empty = 0) and ``--max-ind-range`` (``<= 0``: off); returns ``out_dir``.

    Raises `PreprocessError` / ``ValueError`` naming the argument or file (never SystemExit)."""
    name, files = reference_inputs(data_set, raw_data_file)
    cfg = use_reference_semantics(preset(name))
    cfg.categorical_ops.max_ind_range = max(int(max_ind_range), 0)
    run(cfg, [str(f) for f in files], out_dir, "polars", progress=progress)
    return Path(out_dir).resolve()
