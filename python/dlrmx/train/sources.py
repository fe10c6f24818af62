"""Where a run's batches come from: the config -> a BatchSource. For --data-generation dataset
this also accepts what the reference DLRM's users have: its processed .npz, its MLPerf .bin
files, or a raw Criteo log to preprocess first (--data-set, --raw-data-file)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from dlrmx.data.loader import BatchSource, FileSource, RandomSource, SyntheticSource
from dlrmx.data.multihot import MLPERF_SEED, MultiHot, parse_multi_hot_sizes
from dlrmx.data.synthetic import SyntheticCriteo, table_sizes
from dlrmx.train.config import TrainConfig, _sizes

SYNTHETIC_DEFAULT_BATCHES = 2000
RANDOM_DEFAULT_BATCHES = 1000


def make_source(cfg: TrainConfig, progress: bool = False) -> BatchSource:
    """The run's batches. --multi-hot-sizes makes every source's bags MLPerf multi-hot
    (`multi_hot`); a directory written multi-hot already is read as stored."""
    if cfg.data_generation == "dataset":
        d = training_directory(cfg, progress)
        return FileSource(d, seed=cfg.numpy_rand_seed, shuffle=cfg.data_randomize != "none",
                          sub_sample_rate=cfg.data_sub_sample_rate,
                          multi_hot=_dataset_multi_hot(cfg, d))
    if cfg.data_generation == "random":
        n = (math.ceil(cfg.data_size / cfg.mini_batch_size) if cfg.data_size
             else cfg.num_batches or RANDOM_DEFAULT_BATCHES)
        sizes = _sizes(cfg.arch_embedding_size, "--arch-embedding-size")
        # with multi-hot each bag is the expansion of one id; --num-indices-per-lookup is unused
        return RandomSource(sizes, n, cfg.numpy_rand_seed,
                            num_indices_per_lookup=cfg.num_indices_per_lookup,
                            fixed=cfg.num_indices_per_lookup_fixed,
                            multi_hot=multi_hot(cfg, sizes))
    sizes = (_sizes(cfg.arch_embedding_size, "--arch-embedding-size") if cfg.arch_embedding_size
             else table_sizes(cfg.synthetic_preset, cfg.synthetic_scale))
    if len(sizes) != 26:
        raise ValueError(f"--arch-embedding-size: synthetic data has 26 tables, got {len(sizes)}")
    gen = SyntheticCriteo(sizes, seed=cfg.numpy_rand_seed, zipf=cfg.synthetic_zipf)
    return SyntheticSource(gen, cfg.num_batches or SYNTHETIC_DEFAULT_BATCHES, cfg.eval_samples,
                           multi_hot=multi_hot(cfg, sizes))


def multi_hot(cfg: TrainConfig, table_sizes: list[int]) -> MultiHot | None:
    """--multi-hot-sizes / --multi-hot-distribution as a MultiHot for these tables (None: one-
    hot). Its lookup tables are drawn on first use, after the trainer's memory check.

    Seeded with MLPerf's 0, not --numpy-rand-seed: the lookup tables define the data set (MLPerf
    fixes them so every rank and every run trains on the same multi-hot data, and the stored
    materialization is the same data), so changing the run's seed must not change the data."""
    sizes = parse_multi_hot_sizes(cfg.multi_hot_sizes, len(table_sizes))
    if sizes is None:
        return None
    return MultiHot(table_sizes, sizes, cfg.multi_hot_distribution, seed=MLPERF_SEED)


def _dataset_multi_hot(cfg: TrainConfig, directory: Path) -> MultiHot | None:
    """For one-hot files, the expansion asked for; for files that are multi-hot already, None
    (read as stored) after checking that the flags, when given, say the same."""
    from dlrmx.data.format import bag_sizes, read_spec
    from dlrmx.data.validate import check_spec

    spec = read_spec(directory)
    check_spec(spec, directory / "spec.json")
    tables = [int(t) for t in spec["table_sizes"]]
    stored = bag_sizes(spec)
    if stored is None:
        return multi_hot(cfg, tables)
    asked = parse_multi_hot_sizes(cfg.multi_hot_sizes, len(tables))
    if asked is not None and asked != stored:
        raise ValueError(f"--multi-hot-sizes {cfg.multi_hot_sizes}: {directory} is multi-hot "
                         f"already with sizes {'-'.join(map(str, stored))}; leave "
                         "--multi-hot-sizes empty (or give those sizes) to train on it, or "
                         "point --processed-data-file at the one-hot data")
    made = spec.get("produced_by")
    made = made.get("multi_hot") if isinstance(made, dict) else None
    made = made if isinstance(made, dict) else {}
    if asked is not None and made.get("distribution") not in (None, cfg.multi_hot_distribution):
        raise ValueError(f"--multi-hot-distribution {cfg.multi_hot_distribution}: {directory} "
                         f"was materialized with {made['distribution']!r}; leave "
                         "--multi-hot-sizes empty to train on it as stored")
    return None


def training_directory(cfg: TrainConfig, progress: bool = False) -> Path:
    """--processed-data-file as a training-format directory, converting or preprocessing once.

    The reference's `NAME.npz` (or, with --mlperf-bin-loader or alone, its MLPerf
    `NAME_train.bin`/`NAME_test.bin`) is converted into a directory beside it (reused while the
    source is unchanged; dlrmx.data.reference). Otherwise a raw log given by --raw-data-file is
    preprocessed, as the reference preprocesses on first use, into `NAME.dlrmx` (or into
    --processed-data-file itself when it names a directory)."""
    from dlrmx.data import reference

    p = Path(cfg.processed_data_file)
    if (p / "spec.json").is_file():
        if cfg.raw_data_file and not _preprocessed_as_asked(p, cfg):
            print(f"note: training on the training format already in {p}; --raw-data-file and "
                  "--max-ind-range apply only when it has to be made (remove it to preprocess "
                  "again)", file=sys.stderr)
        return p
    prefix = p.with_suffix("") if p.suffix == ".npz" else p
    bins = Path(f"{prefix}_train.bin").is_file() or (p.is_dir() and any(p.glob("*_train.bin")))
    if (p.suffix == ".npz" and p.is_file()) or bins:
        counts = Path(f"{cfg.raw_data_file}_fea_count.npz") if cfg.raw_data_file else None
        return reference.prepare_dataset(p, bin_loader=cfg.mlperf_bin_loader and bins,
                                         max_ind_range=cfg.max_ind_range,
                                         counts_file=str(counts) if counts and counts.is_file() else None)
    if cfg.raw_data_file:
        return _preprocess_raw(cfg, p.with_suffix(".dlrmx") if p.suffix == ".npz" else p, progress)
    if p.is_dir():
        return p  # opening it names what is missing
    if p.exists():
        raise ValueError(f"--processed-data-file {p} is a file, but neither the reference's .npz "
                         "nor a training-format directory (spec.json + *.npy); run `python -m "
                         "dlrmx.preprocess` on raw logs, or give --raw-data-file")
    raise ValueError(f"--processed-data-file {p}: no such file or directory (nor the reference's "
                     f"{prefix}_train.bin); run `python -m dlrmx.preprocess` first, or give "
                     "--raw-data-file to preprocess a raw Criteo log into it")


def _preprocess_raw(cfg: TrainConfig, out: Path, progress: bool) -> Path:
    from dlrmx.preprocess.pipeline import preprocess_reference

    if _preprocessed_as_asked(out, cfg):
        return out
    print(f"preprocessing {cfg.raw_data_file} (--data-set {cfg.data_set}) into {out}")
    return preprocess_reference(cfg.data_set, cfg.raw_data_file, str(out),
                                max_ind_range=cfg.max_ind_range, progress=progress)


def _preprocessed_as_asked(out: Path, cfg: TrainConfig) -> bool:
    """An earlier run's preprocessing of the same raw log with the same --max-ind-range."""
    from dlrmx.data.format import DataFormatError, read_spec

    try:
        made = read_spec(out)["produced_by"]
        ops = made["pipeline"]["categorical_ops"]
        inputs = [Path(i["path"]).name for i in made["inputs"]]
    except (DataFormatError, KeyError, TypeError):
        return False
    return (made.get("tool") == "dlrmx.preprocess" and ops.get("max_ind_range") == max(cfg.max_ind_range, 0)
            and bool(inputs) and inputs[0].startswith(Path(cfg.raw_data_file).name))
