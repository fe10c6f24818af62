"""`TrainConfig`: every option of `python -m dlrmx.train`, with the reference DLRM's flag names
(`--arch-mlp-bot` is the field `arch_mlp_bot`). Flags, a YAML file (`--config`) and the Python API
all fill the same dataclass, and `validate()` checks each value's type and range, then the
flags' consistency, naming the option and the fix. The reference's flags that dlrmx does
differently are in `reference_flags.py`."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from dlrmx.cli import Parser

OPTIMIZERS = ("sgd", "split_sgd", "rowwise_adagrad", "adagrad", "lamb", "hybrid")
# The reference's optimizer names (dlrm_s_pytorch.py --optimizer) -> dlrmx's.
OPTIMIZER_ALIASES = {"rwsadagrad": "rowwise_adagrad"}
INT64_MAX = 2**63 - 1


def _f(default: Any, help: str, choices: Sequence[str] | None = None, lo: float | None = None,
       hi: float | None = None, open_hi: bool = False, open_lo: bool = False) -> Any:
    """A field with its help text and the allowed values: choices, or the range [lo, hi]
    ([lo, hi) with open_hi, (lo, hi] with open_lo)."""
    return field(default=default, metadata={"help": help, "choices": choices, "lo": lo, "hi": hi,
                                            "open_hi": open_hi, "open_lo": open_lo})


@dataclass
class TrainConfig:
    # --- the reference DLRM's flags (same meaning) ---
    arch_sparse_feature_size: int = _f(16, "embedding dimension of every table", lo=1)
    arch_embedding_size: str = _f("", "table sizes, dash-separated (e.g. 4-3-2), for "
                                  "--data-generation random; otherwise taken from the data")
    arch_mlp_bot: str = _f("13-512-256-64-16", "bottom MLP sizes including the 13 dense inputs; "
                           "the last must equal --arch-sparse-feature-size")
    arch_mlp_top: str = _f("512-256-1", "top MLP sizes after the interaction; must end in 1")
    arch_interaction_op: str = _f("dot", "feature interaction: dot (DLRM), cat, or dcn (DCNv2 "
                                  "low-rank cross layers, MLPerf's DLRMv2)", ("dot", "cat", "dcn"))
    mini_batch_size: int = _f(1024, "training batch size", lo=1)
    test_mini_batch_size: int = _f(-1, "evaluation batch size (-1: 8 x --mini-batch-size)", lo=-1)
    learning_rate: float = _f(0.2, "learning rate (dense and embeddings)", lo=0)
    lr_num_warmup_steps: int = _f(0, "linear warm-up from 0 to --learning-rate over this many "
                                  "steps", lo=0)
    lr_decay_start_step: int = _f(0, "step at which the polynomial (power 2) decay starts", lo=0)
    lr_num_decay_steps: int = _f(0, "steps of decay to 0 (0: no decay)", lo=0)
    nepochs: int = _f(1, "number of epochs", lo=1)
    num_batches: int = _f(0, "batches per epoch (0: the whole training split; synthetic data: "
                          "2000)", lo=0)
    print_freq: int = _f(100, "log the training loss every N steps (one line per N steps when "
                         "the output is not a terminal)", lo=1)
    print_time: bool = _f(False, "add the reference's ms/it to each progress line")
    print_wall_time: bool = _f(False, "add the wall-clock time to each progress line")
    test_freq: int = _f(0, "evaluate on the validation split every N steps (-1: at the end of each "
                           "epoch, as the reference; 0: about 5 times per epoch)")
    data_generation: str = _f("synthetic", "synthetic: planted-teacher Criteo-like data (dlrmx); "
                              "random: the reference's random data; dataset: --processed-data-file",
                              ("synthetic", "random", "dataset"))
    data_set: str = _f("kaggle", "which Criteo log --raw-data-file holds (kaggle: train.txt; "
                       "terabyte: day_0 ... day_23)", ("kaggle", "terabyte"))
    raw_data_file: str = _f("", "raw Criteo log (kaggle: train.txt; terabyte: the prefix of the "
                            "day_N files); preprocessed into --processed-data-file when that "
                            "does not hold the training format yet")
    processed_data_file: str = _f("", "the training format directory (spec.json + *.npy), or the "
                                  "reference's .npz / MLPerf .bin files (converted once beside "
                                  "them, into NAME.dlrmx/)")
    mlperf_bin_loader: bool = _f(False, "read the MLPerf binary files beside "
                                 "--processed-data-file (NAME_train.bin, NAME_test.bin), even "
                                 "when NAME.npz exists; converted once to the training format")
    max_ind_range: int = _f(-1, "categorical ids modulo this when preprocessing (-1: off)", lo=-1)
    data_sub_sample_rate: float = _f(0.0, "drop each negative training row with this "
                                     "probability (the reference's Terabyte sub-sampling)",
                                     lo=0, hi=1, open_hi=True)
    data_randomize: str = _f("total", "training row order: total/day: shuffled (dlrmx shuffles "
                             "blocks of batches and rows within them); none: file order",
                             ("total", "day", "none"))
    data_size: int = _f(0, "random data: samples per epoch (0: --num-batches, default 1000 "
                        "batches)", lo=0)
    num_indices_per_lookup: int = _f(10, "random data: ids per bag (at most; see "
                                     "--num-indices-per-lookup-fixed)", lo=1)
    num_indices_per_lookup_fixed: bool = _f(False, "random data: every bag has exactly "
                                            "--num-indices-per-lookup ids")
    loss_function: str = _f("bce", "loss (the reference's default is mse; dlrmx's is bce; wbce: "
                            "BCE weighted per class by --loss-weights)", ("bce", "mse", "wbce"))
    loss_weights: str = _f("1.0-1.0", "wbce: weight of negatives-positives")
    loss_threshold: float = _f(0.0, "clamp predicted probabilities to [t, 1 - t] (0: off)",
                               lo=0, hi=0.5, open_hi=True)
    mlperf_logging: bool = _f(False, "write MLPerf-format log lines to RUN_DIR/mlperf_log.txt "
                              "(needs the mlperf-logging package)")
    mlperf_auc_threshold: float = _f(0.0, "stop when validation AUC reaches this (0: never)",
                                     lo=0, hi=1)
    mlperf_acc_threshold: float = _f(0.0, "stop when validation accuracy reaches this (0: never)",
                                     lo=0, hi=1)
    save_model: str = _f("", "also write the final checkpoint to this file")
    load_model: str = _f("", "start from the model weights in this checkpoint file")
    inference_only: bool = _f(False, "only evaluate (with --load-model)")
    enable_profiling: bool = _f(False, "profile the training steps with torch.profiler: prints "
                                "the top ops and writes RUN_DIR/profile.json (chrome trace)")
    numpy_rand_seed: int = _f(123, "seed for data, initialization and shuffling", lo=0,
                              hi=INT64_MAX)
    # --- dlrmx's own ---
    preset: str = _f("", "mlperf-dlrmv2: MLPerf's DLRMv2 (DCNv2, dim 128, multi-hot, Adagrad; "
                     "tables scaled to fit this machine, said so); flags given still override",
                     ("", "mlperf-dlrmv2"))
    preset_fixed: str = _f("", "(set by --preset: the scalable options the user gave)")
    dcn_num_layers: int = _f(3, "--arch-interaction-op dcn: cross layers", lo=1, hi=64)
    dcn_low_rank_dim: int = _f(512, "--arch-interaction-op dcn: rank of each cross layer", lo=1)
    multi_hot_sizes: str = _f("", "ids per bag of each table, dash-separated (or one number for "
                              "all; 'mlperf': MLPerf DLRMv2's 3-2-1-2-6-...): multi-hot inputs "
                              "made from one-hot ids by MLPerf's rule (empty: one-hot)")
    multi_hot_distribution: str = _f("uniform", "how the extra multi-hot ids are drawn (MLPerf's "
                                     "materialization)", ("uniform", "pareto"))
    optimizer: str = _f("sgd", "sgd: SGD everywhere (the reference); split_sgd: split-SGD "
                        "embeddings; rowwise_adagrad (the reference's rwsadagrad)/adagrad: "
                        "Adagrad (row-wise for tables); lamb: LAMB for the MLPs, SGD tables; "
                        "hybrid: LAMB MLPs, split-SGD tables", OPTIMIZERS)
    precision: str = _f("auto", "auto: bf16 where this CPU has native bf16 dot products and a "
                        "start-up measurement at the model's shapes finds it faster, else fp32; "
                        "bf16: bf16 MLP weights and tables with exact fp32 master weights "
                        "(split-SGD; LAMB/Adagrad MLPs stay fp32 under autocast)",
                        ("auto", "fp32", "bf16"))
    gemm_library: str = _f("auto", "library of the MLP and DCN GEMMs (forward and input "
                           "gradient): auto (raced per shape at start-up), onednn, or mkl "
                           "(torch's default: MKL for fp32)", ("auto", "onednn", "mkl"))
    device: str = _f("cpu", "where the model trains: cpu, or cuda (dlrmx's CUDA kernels on one "
                     "GPU, the whole model there; with --hot-cache-budget the tables stay in host "
                     "memory and only their hot rows and the MLPs go to the GPU: FAE's hybrid "
                     "mode). Untested on a GPU so far", ("cpu", "cuda"))
    hot_cache_budget: str = _f("", "bytes of fast memory for hot embedding rows and their "
                               "optimizer state (e.g. 64M, 1.5G; empty: no cache): the most looked-"
                               "up rows within it are replicated there and training batches are "
                               "scheduled hot or cold (dlrmx.cache; report in RUN_DIR/hotset.json)")
    hot_device: str = _f("auto", "where the hot rows live: cpu (a compact replica), cuda (on "
                         "the GPU, with --device cuda), none (no replica: every lookup reads the "
                         "tables, with the hot/cold schedule alone); auto: --device's",
                         ("auto", "cpu", "cuda", "none"))
    hot_schedule: str = _f("fae", "order of hot and cold batches: fae (each window's cold batches, "
                           "then its hot ones), interleaved (runs of --hot-switch-batches of each "
                           "kind in turn)", ("fae", "interleaved"))
    hot_switch_batches: int = _f(4, "--hot-schedule interleaved: batches per run of one kind", lo=1)
    hot_window_batches: int = _f(64, "train batches regrouped into hot and cold ones at a time",
                                 lo=1)
    profile_fraction: float = _f(0.05, "fraction of an epoch's batches profiled for popularity "
                                 "when the data has no preprocessor dictionaries", lo=0, hi=1,
                                 open_lo=True)
    dist_backend: str = _f("auto", "torch.distributed backend when a launcher (torchrun, mpirun, "
                           "Spark's TorchDistributor) started several processes: auto (gloo), "
                           "gloo, or mpi (a torch built with MPI)", ("auto", "gloo", "mpi"))
    dist_timeout: float = _f(300.0, "seconds a rank waits for the others before it fails, naming "
                             "the step", lo=1)
    sparse_dense_boundary: int = _f(2048, "distributed: tables with fewer rows are replicated on "
                                    "every rank, larger ones placed whole on one rank", lo=0)
    max_table_bytes_per_rank: str = _f("", "distributed: refuse a placement that puts more table "
                                       "and optimizer-state bytes on one rank (e.g. 64G)")
    threads: int = _f(0, "torch threads per process (0: torch's default alone; under a launcher "
                      "the cores shared among this node's ranks)", lo=0, hi=4096)
    run_dir: str = _f("runs/default", "where config, metrics.jsonl, plots and checkpoints go")
    resume: bool = _f(False, "continue the run in --run-dir from its checkpoint")
    config: str = _f("", "YAML file of options (flags given on the command line override it)")
    synthetic_preset: str = _f("kaggle", "table-size preset of the synthetic data (mlperf: "
                               "MLPerf DLRMv2's 40M-capped tables)", ("kaggle", "terabyte", "mlperf"))
    synthetic_scale: float = _f(0.01, "synthetic table sizes = preset x this", lo=1e-9, hi=1e3)
    synthetic_zipf: float = _f(1.05, "Zipf exponent of synthetic ids (> 0, not 1)", lo=1e-6,
                               hi=100)
    eval_samples: int = _f(200_000, "samples in the synthetic validation/test sets", lo=1)
    checkpoint_freq: int = _f(1000, "checkpoint every N steps (0: only at the end and on Ctrl-C)",
                              lo=0)
    data_workers: int = _f(1, "background threads producing batches", lo=1, hi=256)
    tensorboard: bool = _f(False, "also write TensorBoard logs (needs the tensorboard package)")
    progress: bool = _f(True, "show a progress bar on a terminal (elsewhere: one line per "
                        "--print-freq steps)")
    plots: bool = _f(True, "write PNG plots of loss and AUC")
    memory_check: bool = _f(True, "refuse a run whose estimated memory exceeds what is available")

    # ------------------------------------------------------------------ derived values
    @property
    def bottom_sizes(self) -> list[int]:
        return _sizes(self.arch_mlp_bot, "--arch-mlp-bot")

    @property
    def top_sizes(self) -> list[int]:
        return _sizes(self.arch_mlp_top, "--arch-mlp-top")

    @property
    def eval_batch_size(self) -> int:
        return self.test_mini_batch_size if self.test_mini_batch_size > 0 else 8 * self.mini_batch_size

    @property
    def hot_tier(self) -> str:
        """--hot-device with auto resolved (--device's)."""
        return self.device if self.hot_device == "auto" else self.hot_device

    @property
    def hot_budget_bytes(self) -> int:
        return parse_bytes(self.hot_cache_budget, "--hot-cache-budget")

    @property
    def class_weights(self) -> tuple[float, float]:
        w = _floats(self.loss_weights, "--loss-weights")
        if len(w) != 2 or any(x < 0 for x in w):
            raise ValueError(f"--loss-weights needs two non-negative weights like 1.0-3.0 "
                             f"(negatives-positives), got {self.loss_weights!r}")
        return w[0], w[1]

    def validate(self) -> "TrainConfig":
        """Check types and ranges (converting what YAML writes for a number or a boolean), then
        the flags' consistency; raise ValueError naming the option and the fix."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, _check_value(f, getattr(self, f.name)))
        self.optimizer = OPTIMIZER_ALIASES.get(self.optimizer, self.optimizer)
        bot, top = self.bottom_sizes, self.top_sizes
        if bot[0] != 13:
            raise ValueError(f"--arch-mlp-bot must start with 13 (the dense features), got {bot[0]}")
        if bot[-1] != self.arch_sparse_feature_size:
            raise ValueError(
                f"--arch-mlp-bot ends in {bot[-1]} but --arch-sparse-feature-size is "
                f"{self.arch_sparse_feature_size}: the bottom MLP's output must equal the embedding "
                f"size; set --arch-sparse-feature-size={bot[-1]} or end --arch-mlp-bot in "
                f"{self.arch_sparse_feature_size}")
        if top[-1] != 1:
            raise ValueError(f"--arch-mlp-top must end in 1 (the click logit), got {self.arch_mlp_top}")
        if self.test_freq < -1:
            raise ValueError(f"--test-freq must be -1 (end of each epoch), 0 (about 5 times per "
                             f"epoch) or a number of steps > 0, got {self.test_freq}")
        if self.synthetic_zipf == 1.0:
            raise ValueError("--synthetic-zipf must not be 1 (the Zipf normalisation diverges "
                             "there): use e.g. 1.05")
        if self.data_size and self.data_generation != "random":
            raise ValueError("--data-size sets the samples of --data-generation random (the "
                             "reference's default data; dlrmx's default is synthetic): add "
                             "--data-generation=random")
        if self.test_mini_batch_size == 0:
            raise ValueError("--test-mini-batch-size must be -1 (8 x --mini-batch-size) or > 0, got 0")
        if self.lr_num_decay_steps > 0 and self.lr_decay_start_step < self.lr_num_warmup_steps:
            raise ValueError(f"--lr-decay-start-step ({self.lr_decay_start_step}) must be >= "
                             f"--lr-num-warmup-steps ({self.lr_num_warmup_steps}): warm-up must "
                             "finish before the decay starts")
        if self.data_generation == "dataset" and not self.processed_data_file:
            raise ValueError("--data-generation dataset needs --processed-data-file DIR")
        if self.data_generation == "random" and not self.arch_embedding_size:
            raise ValueError("--data-generation random needs --arch-embedding-size (e.g. 1000-1000-...)")
        if self.arch_embedding_size:
            _sizes(self.arch_embedding_size, "--arch-embedding-size")
        if self.loss_function == "wbce":
            self.class_weights  # noqa: B018 (parses and checks --loss-weights)
        if self.hot_cache_budget:
            self.hot_budget_bytes  # noqa: B018 (parses and checks --hot-cache-budget)
            if (self.data_generation == "random" and not self.multi_hot_sizes
                    and (self.num_indices_per_lookup > 1 or not self.num_indices_per_lookup_fixed)):
                raise ValueError("--hot-cache-budget needs fixed-size bags: with --data-generation "
                                 "random give --num-indices-per-lookup 1 (or --multi-hot-sizes)")
        if self.hot_tier == "cuda" and self.device != "cuda":
            raise ValueError("--hot-device cuda puts the hot rows on the GPU beside the MLPs: "
                             "add --device cuda")
        if self.device == "cuda" and self.hot_cache_budget and self.hot_tier == "cpu":
            raise ValueError("--device cuda with --hot-cache-budget keeps the tables in host "
                             "memory: put the hot rows on the GPU (--hot-device cuda, FAE's hybrid "
                             "mode) or nowhere (--hot-device none)")
        if self.inference_only and not (self.load_model or self.resume):
            raise ValueError("--inference-only needs --load-model FILE (or --resume)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> "TrainConfig":
        """Build from a mapping (the Python API, YAML, a checkpoint): unknown keys are an error
        naming the nearest option."""
        from dlrmx.train import reference_flags

        from dlrmx.train import presets

        values = {known_key(k, where): v for k, v in values.items()}
        reference_flags.apply(values)  # the Python API accepts them too (their notes are for the CLI)
        return cls(**presets.expand(values))


def known_key(key: Any, where: str) -> str:
    """An option name as a field name (`--mini-batch-size` -> mini_batch_size); unknown names
    are an error naming the nearest option."""
    from dlrmx.train.reference_flags import BY_NAME

    name = str(key).lstrip("-").replace("-", "_")
    known = sorted([f.name for f in dataclasses.fields(TrainConfig)] + list(BY_NAME))
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{where}: unknown option {key!r}{hint}")
    return name


def _check_value(f: dataclasses.Field, value: Any) -> Any:
    """One option's value, converted to its declared type and checked against its range."""
    flag = "--" + f.name.replace("_", "-")
    kind, meta = str(f.type), f.metadata
    if kind == "bool":
        value = _to_bool(value, flag)
    elif kind in ("int", "float"):
        value = _to_number(value, flag, kind)
        lo, hi = meta.get("lo"), meta.get("hi")
        above_hi = hi is not None and (value >= hi if meta.get("open_hi") else value > hi)
        below_lo = lo is not None and (value <= lo if meta.get("open_lo") else value < lo)
        if below_lo or above_hi:
            num = (lambda x: str(int(x))) if kind == "int" else (lambda x: f"{x:g}")
            right = "" if hi is None else f", {num(hi)}" + (")" if meta.get("open_hi") else "]")
            left = "(" if meta.get("open_lo") else "["
            rng = f">= {num(lo)}" if hi is None else f"in {left}{num(lo)}{right}"
            raise ValueError(f"{flag} must be {rng}, got {value!r}")
    elif kind == "str":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"{flag} expects a string, got {type(value).__name__} {value!r}")
        value = str(value)
        choices = meta.get("choices")
        if f.name == "optimizer":
            choices = tuple(choices) + tuple(OPTIMIZER_ALIASES)
        if f.name == "dist_backend":
            if value in ("ccl", "nccl"):
                raise ValueError(f"{flag} {value}: dlrmx trains on CPUs with gloo (or mpi); "
                                 "Intel's oneCCL bindings are end-of-life: use gloo")
            value = value or "auto"  # the reference's default, ""
        if choices and value not in choices:
            raise ValueError(f"{flag} must be one of {list(choices)}, got {value!r}")
    return value


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _to_bool(value: Any, flag: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{flag} expects a boolean (true/false, yes/no, 1/0), got "
                     f"{type(value).__name__} {value!r}")


def _to_number(value: Any, flag: str, kind: str) -> int | float:
    """YAML 1.1 reads `1e-1` and quoted numbers as strings: accept a string that is exactly a
    number of the right kind, never a boolean or a non-finite value."""
    want = "an integer" if kind == "int" else "a number"
    bad = ValueError(f"{flag} expects {want}, got {type(value).__name__} {value!r}")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, str):
        try:
            value = int(value) if kind == "int" else float(value)
        except ValueError:
            raise bad from None
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise bad
        return value
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{flag} expects a finite number, got {value!r}")
    return float(value)


def _sizes(text: str, flag: str) -> list[int]:
    try:
        sizes = [int(x) for x in str(text).split("-")]
    except ValueError:
        raise ValueError(f"{flag} must be dash-separated integers like 13-512-256-64-16, "
                         f"got {text!r}") from None
    if len(sizes) < 2 and flag != "--arch-embedding-size" or any(s <= 0 for s in sizes):
        raise ValueError(f"{flag} needs positive sizes (at least 2 for an MLP), got {text!r}")
    return sizes


def _floats(text: str, flag: str) -> list[float]:
    try:
        vals = [float(x) for x in str(text).split("-")]
    except ValueError:
        raise ValueError(f"{flag} must be dash-separated numbers like 1.0-1.0, got {text!r}") from None
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{flag} must be finite numbers, got {text!r}")
    return vals


def build_parser() -> Parser:
    from dlrmx.train import reference_flags

    p = Parser(
        prog="python -m dlrmx.train", usage="%(prog)s [--FLAG VALUE ...]  (every flag below)",
        description="Train and evaluate a DLRM on CPU with dlrmx's fused kernels. Accepts every "
                    "flag of the reference DLRM (dlrm_s_pytorch.py); those dlrmx does differently "
                    "print a one-line note. With no arguments: a few minutes on synthetic "
                    "Criteo-like data with a known oracle AUC.")
    # Defaults are suppressed so that only the flags given override a --config file.
    for f in dataclasses.fields(TrainConfig):
        if f.name == "preset_fixed":  # bookkeeping of --preset, not an option
            continue
        flag = "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = {"help": f"{f.metadata['help']} (default: {f.default!r})",
                              "default": argparse.SUPPRESS}
        if str(f.type) == "bool":
            # --flag, --no-flag, and the reference's --flag=True / --flag=False
            p.add_argument(flag, nargs="?", const=True, type=_bool_arg, metavar="BOOL", **kw)
            p.add_argument("--no-" + flag[2:], dest=f.name, action="store_false",
                           default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            continue
        kw["type"] = {"int": int, "float": float, "str": str}[str(f.type)]
        kw["metavar"] = {"int": "N", "float": "X", "str": "TEXT"}[str(f.type)]
        if f.metadata.get("choices"):
            kw["metavar"] = "{" + ",".join(f.metadata["choices"]) + "}"
        p.add_argument(flag, **kw)
    reference_flags.add_to(p)
    return p


def _bool_arg(text: str) -> bool:
    return _to_bool(text, "value")


def parse_cli(argv: Sequence[str] | None = None) -> tuple[TrainConfig, list[str]]:
    """Flags > --config YAML > defaults. Returns the validated config and the notes for the
    reference flags that dlrmx handles differently (the CLI prints them)."""
    from dlrmx.train import reference_flags

    given = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    if given.get("config"):
        values.update(load_yaml(given["config"]))
    values.update(given)
    notes = reference_flags.apply(values)
    return TrainConfig.from_dict(values).validate(), notes


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    return parse_cli(argv)[0]


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--config {p}: no such file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ValueError(f"--config {p}: not UTF-8 text ({e})") from None
    except yaml.YAMLError as e:
        raise ValueError(f"--config {p}: not valid YAML ({e})".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {p}: expected a mapping of option: value")
    return {known_key(k, f"--config {p}"): v for k, v in data.items()}


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str, flag: str) -> int:
    """'65536', '64K', '1.5G' or '512MiB' -> bytes (binary units)."""
    s = str(text).strip().upper().removesuffix("B").removesuffix("I")
    unit = s[-1:] if s[-1:] in _UNITS and s[-1:] else ""
    try:
        value = float(s[:-1] if unit else s)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{flag} must be a positive number of bytes such as 65536, 64M or 1.5G, "
                         f"got {text!r}")
    return int(value * _UNITS[unit])
