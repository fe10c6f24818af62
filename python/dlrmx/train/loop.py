"""The training loop, top to bottom: build data and model, train with the reference LR schedule,
evaluate, log, checkpoint; `run(config)` returns a `TrainResult`."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

import dlrmx.nn as dnn
from dlrmx.data.loader import BatchSource, FileSource, Prefetcher, RandomSource, SyntheticSource
from dlrmx.data.synthetic import SyntheticCriteo, table_sizes
from dlrmx.models import DLRM
from dlrmx.optim import Lamb, SplitSGD, WarmupPolyDecay
from dlrmx.train import checkpoint as ckpt
from dlrmx.train.config import TrainConfig, _sizes
from dlrmx.train.metrics import evaluate, roc_auc

SYNTHETIC_DEFAULT_BATCHES = 2000
CHECKPOINT_NAME = "checkpoint.pt"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the run stopped before that step touched any weight."""


@dataclass
class TrainResult:
    steps: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    samples_per_s: float = 0.0
    best_auc: float = float("nan")
    best_step: int = -1
    final: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> metrics
    oracle_auc: float | None = None
    stopped: str = "completed"  # completed | auc_threshold | interrupted | inference_only
    run_dir: str = ""


# ------------------------------------------------------------------------------------ build
def make_source(cfg: TrainConfig) -> BatchSource:
    if cfg.data_generation == "dataset":
        return FileSource(cfg.processed_data_file, seed=cfg.numpy_rand_seed)
    if cfg.data_generation == "random":
        return RandomSource(_sizes(cfg.arch_embedding_size, "--arch-embedding-size"),
                            cfg.num_batches or 1000, cfg.numpy_rand_seed)
    sizes = (_sizes(cfg.arch_embedding_size, "--arch-embedding-size") if cfg.arch_embedding_size
             else table_sizes(cfg.synthetic_preset, cfg.synthetic_scale))
    if len(sizes) != 26:
        raise ValueError(f"--arch-embedding-size: synthetic data has 26 tables, got {len(sizes)}")
    gen = SyntheticCriteo(sizes, seed=cfg.numpy_rand_seed, zipf=cfg.synthetic_zipf)
    return SyntheticSource(gen, cfg.num_batches or SYNTHETIC_DEFAULT_BATCHES, cfg.eval_samples)


def make_model(cfg: TrainConfig, sizes: list[int]) -> tuple[DLRM, torch.optim.Optimizer]:
    """The model and its dense (MLP) optimizer; the tables train themselves in the backward.

    --precision bf16 with SGD MLPs is the native bf16 path (Kalamkar et al.): the MLP weights
    become bf16 with an int16 trail (dlrmx.optim.SplitSGD, exact fp32 master weights), the
    tables are split-SGD bf16, and the only cast is the dense input's. LAMB and Adagrad keep
    fp32 MLP weights (their kernels are fp32), so with bf16 those run the MLPs under autocast.
    """
    opt = cfg.optimizer
    sparse_name = {"sgd": "sgd", "split_sgd": "split_sgd", "rowwise_adagrad": "rowwise_adagrad",
                   "adagrad": "adagrad", "lamb": "sgd", "hybrid": "split_sgd"}[opt]
    if cfg.precision == "bf16" and sparse_name == "sgd":
        sparse_name = "split_sgd"  # bf16 tables with exact fp32 master weights
    sparse = dnn.make_sparse_optimizer(sparse_name, lr=cfg.learning_rate)
    model = DLRM(sizes, cfg.arch_sparse_feature_size, cfg.bottom_sizes, cfg.top_sizes,
                 interaction=cfg.arch_interaction_op, sparse_optimizer=sparse,
                 seed=cfg.numpy_rand_seed)
    params = model.dense_parameters()
    if opt in ("lamb", "hybrid"):
        dense: torch.optim.Optimizer = Lamb(params, lr=cfg.learning_rate)
    elif opt in ("rowwise_adagrad", "adagrad"):
        dense = torch.optim.Adagrad(params, lr=cfg.learning_rate)
    elif cfg.precision == "bf16":
        dense = SplitSGD(params, lr=cfg.learning_rate)  # converts the MLP weights to bf16
    else:
        dense = torch.optim.SGD(params, lr=cfg.learning_rate)
    return model, dense


def needs_autocast(cfg: TrainConfig, model: DLRM) -> bool:
    """bf16 requested but the MLP weights stayed fp32 (LAMB/Adagrad): cast per layer."""
    return cfg.precision == "bf16" and model.dense_parameters()[0].dtype == torch.float32


def make_schedule(cfg: TrainConfig, model: DLRM, dense: torch.optim.Optimizer) -> WarmupPolyDecay:
    """The reference's LR policy for the MLPs and the tables together (floor 1e-7 as the
    reference's LRPolicyScheduler)."""
    return WarmupPolyDecay([dense], [model.embeddings.optimizer], warmup_steps=cfg.lr_num_warmup_steps,
                           decay_start_step=cfg.lr_decay_start_step,
                           decay_steps=cfg.lr_num_decay_steps, min_lr=1e-7)


def compute_loss(cfg: TrainConfig, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    z = logits.float()
    if cfg.loss_function == "mse":
        return F.mse_loss(torch.sigmoid(z), label)
    return F.binary_cross_entropy_with_logits(z, label)  # stable for any logit


@torch.no_grad()
def run_eval(cfg: TrainConfig, model: DLRM, source: BatchSource, split: str) -> dict[str, Any] | None:
    autocast = needs_autocast(cfg, model)
    bs = cfg.eval_batch_size
    n = source.num_batches(split, bs)
    if n <= 0:
        return None
    logits, labels, probs = [], [], []
    for batch in Prefetcher(lambda i: source.get(split, i, bs), range(n), cfg.data_workers):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits.append(model(batch.dense, batch.values, batch.offsets).float().numpy())
        labels.append(batch.label.numpy())
        if batch.prob is not None:
            probs.append(batch.prob.numpy())
    y = np.concatenate(labels)
    out: dict[str, Any] = evaluate(y, np.concatenate(logits))
    out["oracle_auc"] = roc_auc(y, np.concatenate(probs)) if probs else None
    out["samples"] = int(y.size)
    return out


# ------------------------------------------------------------------------------------- run
def run(config: TrainConfig | dict[str, Any],
        on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train (or only evaluate) as `config` says. `on_step(step)` is called after every completed
    step (tests use it to interrupt a run). Ctrl-C writes a checkpoint and returns with
    stopped='interrupted'; `resume=True` continues from it with the same result as an
    uninterrupted run."""
    cfg = (TrainConfig(**config) if isinstance(config, dict) else config).validate()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / CHECKPOINT_NAME

    state = None
    if cfg.resume:
        state = ckpt.load(ckpt_path)
        saved = TrainConfig(**state["config"])
        # the run continues as it was configured; only where and how to report may change
        for keep in ("run_dir", "resume", "progress", "plots", "tensorboard", "data_workers",
                     "inference_only"):
            setattr(saved, keep, getattr(cfg, keep))
        cfg = saved.validate()
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))

    torch.manual_seed(cfg.numpy_rand_seed)
    source = make_source(cfg)
    model, dense_opt = make_model(cfg, source.table_sizes)
    schedule = make_schedule(cfg, model, dense_opt)  # reads the base rates: before any state loads
    start_step, best_auc, best_step = 0, float("nan"), -1
    if state is not None:
        model.load_state_dict(state["model"])
        dense_opt.load_state_dict(state["dense_optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start_step, best_auc, best_step = state["step"], state["best_auc"], state["best_step"]
    elif cfg.load_model:
        model.load_state_dict(ckpt.load(cfg.load_model)["model"])

    log = _Log(run_dir, cfg.tensorboard, append=state is not None)
    result = TrainResult(run_dir=str(run_dir))
    per_epoch = source.num_batches("train", cfg.mini_batch_size)
    if per_epoch <= 0:
        raise ValueError(f"the training split has fewer than --mini-batch-size "
                         f"({cfg.mini_batch_size}) rows")
    total = per_epoch * cfg.nepochs

    def save(step: int) -> None:
        ck = {"step": step, "model": model.state_dict(), "dense_optimizer": dense_opt.state_dict(),
              "torch_rng": torch.get_rng_state(), "best_auc": best_auc, "best_step": best_step,
              "config": cfg.to_dict()}
        ckpt.save_atomic(ck, ckpt_path)
        if cfg.save_model:
            ckpt.save_atomic(ck, cfg.save_model)

    def do_eval(step: int, splits: tuple[str, ...] = ("val",)) -> dict[str, Any] | None:
        nonlocal best_auc, best_step
        model.eval()
        first = None
        for split in splits:
            m = run_eval(cfg, model, source, split)
            if m is None:
                continue
            log.write({"kind": "eval", "step": step, "split": split, **m})
            result.final[split] = m
            if m.get("oracle_auc") is not None:
                result.oracle_auc = m["oracle_auc"]
            if first is None:
                first = m
                if not math.isnan(m["auc"]) and not (m["auc"] <= best_auc):
                    best_auc, best_step = m["auc"], step
        model.train()
        return first

    if cfg.inference_only:
        do_eval(start_step, ("val", "test"))
        result.stopped, result.steps = "inference_only", start_step
        return _finish(cfg, result, best_auc, best_step, log)

    autocast = needs_autocast(cfg, model)
    schedule.set_step(start_step)
    test_freq = {-1: per_epoch, 0: max(1, per_epoch // 5)}.get(cfg.test_freq, cfg.test_freq)
    bar = None
    if cfg.progress:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=start_step, unit="step", dynamic_ncols=True)

    def fetch(step: int):
        epoch, index = divmod(step, per_epoch)
        return source.get("train", index, cfg.mini_batch_size, epoch)

    step = start_step
    t0, window_t, window_samples, loss_sum, loss_n = time.perf_counter(), time.perf_counter(), 0, 0.0, 0
    prefetch = Prefetcher(fetch, range(start_step, total), cfg.data_workers)
    try:
        for batch in prefetch:
            lr = schedule.get_last_lr()[0]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                logits = model(batch.dense, batch.values, batch.offsets)
            loss = compute_loss(cfg, logits, batch.label)
            loss_value = loss.item()
            if not math.isfinite(loss_value):  # checked before backward: no weight touched yet
                raise NonFiniteLossError(
                    f"loss is {loss_value} at step {step} (lr {lr:g}); stopping. The last good "
                    f"checkpoint is kept in {ckpt_path}. Try a lower --learning-rate or warm-up.")
            dense_opt.zero_grad(set_to_none=True)
            loss.backward()  # also updates the embedding rows in place
            dense_opt.step()
            schedule.step()
            step += 1
            result.samples += batch.size
            window_samples += batch.size
            loss_sum, loss_n = loss_sum + loss_value, loss_n + 1
            if bar is not None:
                bar.update(1)
            if step % cfg.print_freq == 0 or step == total:
                now = time.perf_counter()
                sps = window_samples / max(now - window_t, 1e-9)
                log.write({"kind": "train", "step": step, "loss": loss_sum / loss_n, "lr": lr,
                           "samples_per_s": sps})
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}", samples_s=f"{sps:,.0f}")
                window_t, window_samples, loss_sum, loss_n = now, 0, 0.0, 0
            if step % test_freq == 0 and step < total:
                m = do_eval(step)
                if m and cfg.mlperf_auc_threshold > 0 and m["auc"] >= cfg.mlperf_auc_threshold:
                    result.stopped = "auc_threshold"
                    break
            if cfg.checkpoint_freq > 0 and step % cfg.checkpoint_freq == 0:
                save(step)
            if on_step is not None:
                on_step(step)
    except KeyboardInterrupt:
        result.stopped = "interrupted"
    finally:
        prefetch.close()
        if bar is not None:
            bar.close()
    result.train_seconds = time.perf_counter() - t0
    result.steps = step
    save(step)
    if result.stopped != "interrupted":
        do_eval(step, ("val", "test"))
    return _finish(cfg, result, best_auc, best_step, log)


def _finish(cfg: TrainConfig, result: TrainResult, best_auc: float, best_step: int,
            log: "_Log") -> TrainResult:
    result.best_auc, result.best_step = best_auc, best_step
    if result.train_seconds > 0:
        result.samples_per_s = result.samples / result.train_seconds
    log.close()
    run_dir = Path(result.run_dir)
    (run_dir / "summary.json").write_text(json.dumps(asdict(result), indent=1, default=str))
    if cfg.plots:
        from dlrmx.train.plots import plot_run
        plot_run(run_dir)
    return result


class _Log:
    """metrics.jsonl (one JSON object per line) and, optionally, TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool, append: bool) -> None:
        self.f = open(run_dir / "metrics.jsonl", "a" if append else "w")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ValueError(f"--tensorboard needs the tensorboard package ({e})") from e
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, rec: dict[str, Any]) -> None:
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        if self.tb is not None:
            prefix = rec["kind"] if rec["kind"] == "train" else f"eval_{rec['split']}"
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"{prefix}/{k}", v, rec["step"])

    def close(self) -> None:
        self.f.close()
        if self.tb is not None:
            self.tb.close()
