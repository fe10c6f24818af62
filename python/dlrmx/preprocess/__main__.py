"""python -m dlrmx.preprocess: raw Criteo-format logs -> the dlrmx training format."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from dlrmx.cli import Parser, die
from dlrmx.preprocess import config as C
from dlrmx.preprocess.pipeline import EngineOptions, run
from dlrmx.preprocess.report import PreprocessError

EPILOG = """\
examples:
  python -m dlrmx.preprocess --preset criteo-kaggle train.txt -o kaggle_out
  python -m dlrmx.preprocess --preset criteo-terabyte day_0.gz ... day_23.gz -o tb_out \\
      --max-ind-range 40000000 --engine spark --master spark://host:7077
  python -m dlrmx.preprocess --config avazu.yaml avazu.csv -o avazu_out
  python -m dlrmx.preprocess --preset criteo-kaggle new_day.txt -o new_out \\
      --dictionaries kaggle_out/dictionaries      # encode new data with the same ids

The output directory holds spec.json, {train,val,test}_{label,dense,sparse}.npy, dictionaries/,
report.json and (when bad rows were quarantined) quarantine.tsv. See the README.
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m dlrmx.preprocess", description=__doc__,
               epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="input files (plain or .gz TSV/CSV), directories "
                   "(every file inside, in natural order: day_2 before day_10) or globs")
    p.add_argument("-o", "--output", required=True, help="output directory (replaced atomically)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=sorted(C.PRESETS), default=None,
                     help="built-in pipeline (default: criteo-kaggle when no --config)")
    src.add_argument("--config", help="pipeline YAML (schema + operations) for other schemas")
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=["auto", "polars", "spark"], default="auto",
                   help="polars: one machine, streaming (larger-than-memory inputs); spark: "
                   "PySpark, local[*] or a cluster; auto: spark when --master is given or under "
                   "spark-submit, polars otherwise (default: auto)")
    g.add_argument("--master", help="Spark master URL (e.g. local[4], spark://host:7077, yarn); "
                   "default local[*] with the Spark UI off")
    g.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Spark configuration, repeatable (e.g. spark.driver.memory=8g)")
    g.add_argument("--broadcast-limit-mb", type=float, default=256.0,
                   help="Spark: dictionaries whose measured size is below this are joined by "
                   "broadcast, larger ones by sort-merge (default 256)")
    o = p.add_argument_group("operations (override the preset/config)")
    o.add_argument("--max-ind-range", type=int, help="categorical key = value %% N before the "
                   "dictionaries, as the reference DLRM (0 or -1: off)")
    o.add_argument("--min-freq", type=int, help="keys seen fewer times map to the reserved id")
    o.add_argument("--order", choices=C.ORDERS, help="id order: frequency (most frequent "
                   "first, ties by key) or first_seen (the reference DLRM's order)")
    o.add_argument("--missing", choices=C.MISSING, help="empty categorical: reserved id, or "
                   "the value 0 with its own id (the reference)")
    o.add_argument("--reserved-id", choices=C.RESERVED_POS,
                   help="the reserved id is 0 (first) or the last id of each table")
    o.add_argument("--fit-on", choices=C.FIT_ON, help="count dictionaries on all rows (the "
                   "reference) or on the train split only")
    o.add_argument("--reference", action="store_true", help="the reference DLRM's ids exactly: "
                   "--order first_seen --min-freq 1 --missing zero --reserved-id last --fit-on all")
    o.add_argument("--shift", type=int, help="dense: add before clipping (default 0)")
    o.add_argument("--clip-min", type=int, help="dense: lower bound after the shift (default 0: "
                   "negatives -> 0, as the reference)")
    o.add_argument("--no-log", action="store_true", help="dense: skip log(x+1)")
    o.add_argument("--split", choices=C.SPLIT_BY, help="days: equal chunks of rows (Kaggle); "
                   "files: one file per day (Terabyte); none: all train. The last day is halved "
                   "into test (first half) and val")
    o.add_argument("--days", type=int, help="number of day chunks for --split days (Kaggle: 7)")
    o.add_argument("--row-order", choices=C.ROW_ORDERS, help="train row order: input, "
                   "shuffle_day (within each day), shuffle_all; val/test keep input order")
    o.add_argument("--seed", type=int, help="seed of the shuffles (default 0)")
    o.add_argument("--on-bad-row", choices=C.ON_BAD_ROW, help="quarantine (default: bad rows "
                   "to quarantine.tsv with file, line and problems), drop, or fail at the first")
    p.add_argument("--dictionaries", help="reuse the dictionaries of an earlier run (its "
                   "dictionaries/ directory); unseen keys get the reserved id")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no report")
    p.add_argument("--keep-work", action="store_true", help="keep intermediate files (_work/)")
    return p


def config_from_args(a: argparse.Namespace) -> C.PipelineConfig:
    cfg = C.load_yaml(a.config) if a.config else C.preset(a.preset or "criteo-kaggle")
    if a.reference:
        cfg = C.use_reference_semantics(cfg)
    cat = {k: v for k, v in dict(max_ind_range=a.max_ind_range, min_freq=a.min_freq, order=a.order,
                                 missing=a.missing, reserved_id=a.reserved_id,
                                 fit_on=a.fit_on).items() if v is not None}
    dense = {k: v for k, v in dict(shift=a.shift, clip_min=a.clip_min).items() if v is not None}
    if a.no_log:
        dense["log1p"] = False
    split = {k: v for k, v in dict(by=a.split, days=a.days).items() if v is not None}
    order = {k: v for k, v in dict(order=a.row_order, seed=a.seed).items() if v is not None}
    cfg = replace(cfg, categorical_ops=replace(cfg.categorical_ops, **cat),
                  dense_ops=replace(cfg.dense_ops, **dense), split=replace(cfg.split, **split),
                  row_order=replace(cfg.row_order, **order))
    if a.on_bad_row:
        cfg.on_bad_row = a.on_bad_row
    return cfg.validate()


def describe(e: BaseException) -> str:
    """One line for the user: the message, with the path of an OSError."""
    if isinstance(e, OSError) and e.filename and str(e.filename) not in str(e):
        text = f"{e.strerror or e}: {e.filename}"
    else:
        text = str(e)
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    try:
        a = build_parser().parse_args(argv)
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except ValueError as e:  # an unknown or repeated flag
        return die(e)
    try:
        cfg = config_from_args(a)
        conf = {}
        for kv in a.spark_conf:
            k, sep, v = kv.partition("=")
            if not sep:
                raise ValueError(f"--spark-conf {kv!r}: expected KEY=VALUE")
            conf[k] = v
        opts = EngineOptions(a.engine, a.master, conf, a.broadcast_limit_mb)
        rep = run(cfg, a.inputs, a.output, opts, dictionaries=a.dictionaries,
                  progress=not a.quiet and sys.stderr.isatty(), keep_work=a.keep_work)
    except (PreprocessError, ValueError, OSError) as e:  # what a user can cause and fix
        return die(describe(e))
    if not a.quiet:
        print(rep.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
