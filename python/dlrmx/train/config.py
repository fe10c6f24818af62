"""`TrainConfig`: every option of `python -m dlrmx.train`, with the reference DLRM's flag names
(`--arch-mlp-bot` is the field `arch_mlp_bot`). Flags, a YAML file (`--config`) and the Python API
all fill the same dataclass; `validate()` reports inconsistent flags by name with the fix."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

OPTIMIZERS = ("sgd", "split_sgd", "rowwise_adagrad", "adagrad", "lamb", "hybrid")


def _f(default: Any, help: str, choices: Sequence[str] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainConfig:
    # --- the reference DLRM's flags (same meaning) ---
    arch_sparse_feature_size: int = _f(16, "embedding dimension of every table")
    arch_embedding_size: str = _f("", "table sizes, dash-separated (e.g. 4-3-2), for "
                                  "--data-generation random; otherwise taken from the data")
    arch_mlp_bot: str = _f("13-512-256-64-16", "bottom MLP sizes including the 13 dense inputs; "
                           "the last must equal --arch-sparse-feature-size")
    arch_mlp_top: str = _f("512-256-1", "top MLP sizes after the interaction; must end in 1")
    arch_interaction_op: str = _f("dot", "feature interaction", ("dot", "cat"))
    mini_batch_size: int = _f(1024, "training batch size")
    test_mini_batch_size: int = _f(-1, "evaluation batch size (-1: 8 x --mini-batch-size)")
    learning_rate: float = _f(0.2, "learning rate (dense and embeddings)")
    lr_num_warmup_steps: int = _f(0, "linear warm-up from 0 to --learning-rate over this many steps")
    lr_decay_start_step: int = _f(0, "step at which the polynomial (power 2) decay starts")
    lr_num_decay_steps: int = _f(0, "steps of decay to 0 (0: no decay)")
    nepochs: int = _f(1, "number of epochs")
    num_batches: int = _f(0, "batches per epoch (0: the whole training split; synthetic data: 2000)")
    print_freq: int = _f(100, "log training loss every N steps")
    test_freq: int = _f(0, "evaluate on the validation split every N steps (-1: at the end of each "
                           "epoch, as the reference; 0: about 5 times per epoch)")
    data_generation: str = _f("synthetic", "synthetic: planted-teacher Criteo-like data (dlrmx); "
                              "random: the reference's random data; dataset: --processed-data-file",
                              ("synthetic", "random", "dataset"))
    processed_data_file: str = _f("", "directory in the training format (spec.json + *.npy), "
                                  "for --data-generation dataset")
    loss_function: str = _f("bce", "loss (the reference's default is mse; dlrmx's is bce)",
                            ("bce", "mse"))
    mlperf_auc_threshold: float = _f(0.0, "stop when validation AUC reaches this (0: never)")
    save_model: str = _f("", "also write the final checkpoint to this file")
    load_model: str = _f("", "start from the model weights in this checkpoint file")
    inference_only: bool = _f(False, "only evaluate (with --load-model)")
    numpy_rand_seed: int = _f(123, "seed for data, initialization and shuffling")
    # --- dlrmx's own ---
    optimizer: str = _f("sgd", "sgd: SGD everywhere (the reference); split_sgd: split-SGD "
                        "embeddings; rowwise_adagrad/adagrad: Adagrad (row-wise for tables); "
                        "lamb: LAMB for the MLPs, SGD tables; hybrid: LAMB MLPs, split-SGD tables",
                        OPTIMIZERS)
    precision: str = _f("fp32", "bf16: bf16 MLP weights and tables with exact fp32 master "
                        "weights (split-SGD; LAMB/Adagrad MLPs stay fp32 under autocast)",
                        ("fp32", "bf16"))
    threads: int = _f(0, "torch threads (0: leave torch's default)")
    run_dir: str = _f("runs/default", "where config, metrics.jsonl, plots and checkpoints go")
    resume: bool = _f(False, "continue the run in --run-dir from its checkpoint")
    config: str = _f("", "YAML file of options (flags given on the command line override it)")
    synthetic_preset: str = _f("kaggle", "table-size preset of the synthetic data",
                               ("kaggle", "terabyte"))
    synthetic_scale: float = _f(0.01, "synthetic table sizes = preset x this")
    synthetic_zipf: float = _f(1.05, "Zipf exponent of synthetic ids")
    eval_samples: int = _f(200_000, "samples in the synthetic validation/test sets")
    checkpoint_freq: int = _f(1000, "checkpoint every N steps (0: only at the end and on Ctrl-C)")
    data_workers: int = _f(1, "background threads producing batches")
    tensorboard: bool = _f(False, "also write TensorBoard logs (needs the tensorboard package)")
    progress: bool = _f(True, "show a progress bar")
    plots: bool = _f(True, "write PNG plots of loss and AUC")

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

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the offending flags and the fix."""
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
        for name in ("mini_batch_size", "nepochs", "print_freq"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if self.test_freq < -1:
            raise ValueError(f"--test-freq must be -1 (end of each epoch), 0 (about 5 times per "
                             f"epoch) or a number of steps > 0, got {self.test_freq}")
        if self.learning_rate < 0:
            raise ValueError(f"--learning-rate must be >= 0, got {self.learning_rate}")
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
        if self.inference_only and not (self.load_model or self.resume):
            raise ValueError("--inference-only needs --load-model FILE (or --resume)")
        for name, choices in ((f.name, f.metadata.get("choices")) for f in dataclasses.fields(self)):
            if choices and getattr(self, name) not in choices:
                raise ValueError(f"--{name.replace('_', '-')} must be one of {list(choices)}, "
                                 f"got {getattr(self, name)!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _sizes(text: str, flag: str) -> list[int]:
    try:
        sizes = [int(x) for x in str(text).split("-")]
    except ValueError:
        raise ValueError(f"{flag} must be dash-separated integers like 13-512-256-64-16, "
                         f"got {text!r}") from None
    if len(sizes) < 2 and flag != "--arch-embedding-size" or any(s <= 0 for s in sizes):
        raise ValueError(f"{flag} needs positive sizes (at least 2 for an MLP), got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dlrmx.train",
        description="Train and evaluate a DLRM on CPU with dlrmx's fused kernels. Accepts the "
                    "reference DLRM's flags (dlrm_s_pytorch.py) with the same meaning. With no "
                    "arguments: a few minutes on synthetic Criteo-like data with a known oracle AUC.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = {"help": f.metadata["help"], "default": argparse.SUPPRESS}
        if f.type in ("bool", bool):
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = {"int": int, "float": float, "str": str}[str(f.type)]
            if f.metadata.get("choices"):
                kw["choices"] = f.metadata["choices"]
        p.add_argument(flag, **kw)
    return p


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Flags > --config YAML > defaults."""
    given = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    if given.get("config"):
        values.update(load_yaml(given["config"]))
    values.update(given)
    return TrainConfig(**values).validate()


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--config {p}: no such file")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {p}: expected a mapping of option: value")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {}
    for k, v in data.items():
        key = str(k).lstrip("-").replace("-", "_")
        if key not in known:
            raise ValueError(f"--config {p}: unknown option {k!r}")
        out[key] = v
    return out
