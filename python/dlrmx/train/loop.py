"""The training loop, top to bottom: build data and model, train with the reference LR schedule,
evaluate, log, checkpoint; `run(config)` returns a `TrainResult`."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

import dlrmx.distributed.data
from dlrmx.distributed import checkpoint as dist_ckpt
import dlrmx.nn as dnn
from dlrmx import atomic, distributed
from dlrmx.data.loader import BatchSource, Prefetcher
from dlrmx.data.synthetic import table_sizes
from dlrmx.models import DLRM, gemm_widths
from dlrmx.models.mlp import apply_plan, plan_gemms
from dlrmx.optim import Lamb, SplitSGD, WarmupPolyDecay
from dlrmx.optim._common import all_finite
from dlrmx.train import checkpoint as ckpt
from dlrmx.train import device as devices
from dlrmx.train import hot, precision, presets
from dlrmx.train.config import TrainConfig, parse_bytes
from dlrmx.train.memory import available_bytes, check_fits, estimate_bytes
from dlrmx.train.metrics import evaluate, roc_auc
from dlrmx.train.mlperf import MLPerfLog
from dlrmx.train.progress import Progress
from dlrmx.train.sources import make_source

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
    final: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> end-of-run metrics
    oracle_auc: float | None = None
    last_eval: dict[str, dict[str, float]] = field(default_factory=dict)  # the last periodic one
    stopped: str = "completed"  # completed | auc_threshold | interrupted | pruned | inference_only
    run_dir: str = ""
    cache: dict[str, Any] = field(default_factory=dict)  # --hot-cache-budget: the cache's counters
    rank: int = 0  # this process's rank under a launcher (only rank 0's result is the run's)
    communication: dict[str, float] = field(default_factory=dict)  # distributed: see comm.Traffic


# ------------------------------------------------------------------------------------ build
def make_model(cfg: TrainConfig, sizes: list[int], make_embeddings=None,
               device: torch.device = torch.device("cpu")) -> tuple[DLRM, torch.optim.Optimizer]:
    """The model (placed on `device` as --device says) and its dense (MLP) optimizer; the
    tables train themselves in the backward.

    --precision bf16 with SGD MLPs is the native bf16 path (Kalamkar et al.): the MLP weights
    become bf16 with an int16 trail (dlrmx.optim.SplitSGD, exact fp32 master weights), the
    tables are split-SGD bf16, and the only cast is the dense input's. LAMB and Adagrad keep
    fp32 MLP weights (their kernels are fp32), so with bf16 those run the MLPs under autocast.
    """
    opt = cfg.optimizer
    sparse = dnn.make_sparse_optimizer(sparse_optimizer_name(cfg), lr=cfg.learning_rate)
    model = DLRM(sizes, cfg.arch_sparse_feature_size, cfg.bottom_sizes, cfg.top_sizes,
                 interaction=cfg.arch_interaction_op, sparse_optimizer=sparse,
                 seed=cfg.numpy_rand_seed, dcn_num_layers=cfg.dcn_num_layers,
                 dcn_low_rank_dim=cfg.dcn_low_rank_dim,
                 make_embeddings=make_embeddings or dnn.EmbeddingBagCollection)
    devices.place(cfg, model, device)
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


def sparse_optimizer_name(cfg: TrainConfig) -> str:
    name = {"sgd": "sgd", "split_sgd": "split_sgd", "rowwise_adagrad": "rowwise_adagrad",
            "adagrad": "adagrad", "lamb": "sgd", "hybrid": "split_sgd"}[cfg.optimizer]
    if cfg.precision == "bf16" and name == "sgd":
        name = "split_sgd"  # bf16 tables with exact fp32 master weights
    return name


def needs_autocast(cfg: TrainConfig, model: DLRM) -> bool:
    """bf16 requested but the MLP weights stayed fp32 (LAMB/Adagrad): cast per layer."""
    return cfg.precision == "bf16" and model.dense_parameters()[0].dtype == torch.float32


def make_schedule(cfg: TrainConfig, model: DLRM, dense: torch.optim.Optimizer) -> WarmupPolyDecay:
    """The reference's LR policy for the MLPs and the tables together (floor 1e-7 as the
    reference's LRPolicyScheduler)."""
    return WarmupPolyDecay([dense], [model.embeddings.optimizer], warmup_steps=cfg.lr_num_warmup_steps,
                           decay_start_step=cfg.lr_decay_start_step,
                           decay_steps=cfg.lr_num_decay_steps, min_lr=1e-7)


def compute_loss(cfg: TrainConfig, logits: torch.Tensor, label: torch.Tensor,
                 denominator: int | None = None) -> torch.Tensor:
    """The batch's loss: the mean over its samples, or (`denominator`, a rank's slice of a
    global batch) their sum over the global batch size, which gives each sample the gradient a
    single process gives it."""
    if denominator is not None:
        return _loss(cfg, logits, label, "sum") / denominator
    return _loss(cfg, logits, label, "mean")


def _loss(cfg: TrainConfig, logits: torch.Tensor, label: torch.Tensor, reduction: str
          ) -> torch.Tensor:
    z = logits.float()
    weight = None
    if cfg.loss_function == "wbce":
        w_neg, w_pos = cfg.class_weights
        weight = w_neg + (w_pos - w_neg) * label
    if cfg.loss_threshold > 0:  # the reference's --loss-threshold clamps the probability
        p = torch.sigmoid(z).clamp(cfg.loss_threshold, 1 - cfg.loss_threshold)
        if cfg.loss_function == "mse":
            return F.mse_loss(p, label, reduction=reduction)
        return F.binary_cross_entropy(p, label, weight=weight, reduction=reduction)
    if cfg.loss_function == "mse":
        return F.mse_loss(torch.sigmoid(z), label, reduction=reduction)
    # stable for any logit
    return F.binary_cross_entropy_with_logits(z, label, weight=weight, reduction=reduction)


@torch.no_grad()
def run_eval(cfg: TrainConfig, model: DLRM, source: BatchSource, split: str,
             ctx: distributed.Dist | None = None) -> dict[str, Any] | None:
    autocast = needs_autocast(cfg, model)
    dev = model.dense_parameters()[0].device
    bs = cfg.eval_batch_size
    n = source.num_batches(split, bs)
    if n <= 0:
        return None
    logits, labels, probs = [], [], []
    for batch in Prefetcher(lambda i: source.get(split, i, bs), range(n), cfg.data_workers):
        x = devices.to_device(batch, cfg, dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            logits.append(model(x.dense, x.values, x.offsets).float().cpu().numpy())
        labels.append(batch.label.numpy())
        if batch.prob is not None:
            probs.append(batch.prob.numpy())
    y, z = np.concatenate(labels), np.concatenate(logits)
    p = np.concatenate(probs) if probs else None
    if ctx:  # every rank's slices: one global AUC, the same on every rank
        y, z, p = distributed.data.gather_arrays([y, z, p if p is not None else y[:0]])
        p = p if p.size else None
    out: dict[str, Any] = evaluate(y, z)
    out["oracle_auc"] = roc_auc(y, p) if p is not None else None
    out["samples"] = int(y.size)
    return out


# ------------------------------------------------------------------------------------- run
def run(config: TrainConfig | dict[str, Any],
        on_step: Callable[[int], None] | None = None,
        on_eval: Callable[[int, dict[str, Any]], bool] | None = None) -> TrainResult:
    """Train (or only evaluate) as `config` says. `on_step(step)` is called after every completed
    step (tests use it to interrupt a run). `on_eval(step, val_metrics)` after every periodic
    evaluation: True stops the run there with stopped='pruned' (a checkpoint, no final
    evaluation; dlrmx.tune's early stopping). Ctrl-C writes a checkpoint and returns with
    stopped='interrupted'; `resume=True` continues from it with the same result as an
    uninterrupted run."""
    cfg = (TrainConfig.from_dict(config) if isinstance(config, dict) else config).validate()
    ctx = distributed.init(cfg.dist_backend, cfg.dist_timeout)  # None for a single process
    ok = False
    try:
        with contextlib.redirect_stdout(io.StringIO()) if ctx and not ctx.writer else _nothing():
            result = _run(cfg, ctx, on_step, on_eval)
        ok = True
        return result
    except RuntimeError as e:
        if ctx is None or isinstance(e, NonFiniteLossError):
            raise
        raise distributed.DistributedError.of(ctx, e) from e
    finally:
        distributed.finish(ctx, ok)


def _run(cfg: TrainConfig, ctx: distributed.Dist | None,
         on_step: Callable[[int], None] | None,
         on_eval: Callable[[int, dict[str, Any]], bool] | None = None) -> TrainResult:
    threads = distributed.threads_per_rank(cfg.threads, ctx)
    if threads > 0:
        torch.set_num_threads(threads)
    run_dir = Path(cfg.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--run-dir {run_dir} is a file, not a directory: give a directory for "
                         "the run's config, metrics, plots and checkpoints")
    ckpt_path = run_dir / CHECKPOINT_NAME
    if ctx and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0 and ckpt_path.exists():
        cfg.resume = True  # torchrun --max-restarts restarted the job: continue where it was
        print(f"note: restart {os.environ['TORCHELASTIC_RESTART_COUNT']} of the job: resuming "
              f"from {ckpt_path}", file=sys.stderr)
    if cfg.save_model:
        _check_writable_file(Path(cfg.save_model), "--save-model")
    if not cfg.resume and ckpt_path.exists():
        print(f"note: {run_dir} holds an earlier run's checkpoint; this run starts over and "
              "replaces it (use --resume to continue it instead)", file=sys.stderr)
    if cfg.resume and not ckpt_path.exists():
        raise ValueError(f"--resume: {run_dir} holds no {CHECKPOINT_NAME} to continue from "
                         "(start the run without --resume, or name its --run-dir)")
    run_dir.mkdir(parents=True, exist_ok=True)
    if ctx is None or ctx.writer:
        atomic.remove_stale(ckpt_path)  # what a killed checkpoint write left
    state = None
    if cfg.resume:
        state = ckpt.load(ckpt_path)
        dist_ckpt.attach(state, ckpt_path, whole=ctx is None)
        cfg = _resumed_config(cfg, state, ckpt_path)
    loaded = None
    if cfg.load_model and state is None:
        loaded = ckpt.load(cfg.load_model)
        dist_ckpt.attach(loaded, Path(cfg.load_model), whole=ctx is None)
        if "model" not in loaded:
            raise ckpt.CheckpointError(f"checkpoint {cfg.load_model}: holds no 'model' weights")
        conf = loaded.get("config")
        saved_precision = conf.get("precision") if isinstance(conf, dict) else None
        if cfg.precision == "auto" and saved_precision in ("fp32", "bf16"):
            cfg.precision = saved_precision  # its tables' storage (bf16 keeps split-SGD trails)
    # Only rank 0 writes into the run dir; the other ranks' logs go to a private scratch dir.
    out_dir = run_dir if ctx is None or ctx.writer else Path(tempfile.mkdtemp(prefix="dlrmx-rank"))
    if out_dir != run_dir:
        cfg.progress = cfg.plots = cfg.tensorboard = False
    mlperf = MLPerfLog(cfg.mlperf_logging and out_dir == run_dir, run_dir / "mlperf_log.txt")
    mlperf.start("init_start")

    torch.manual_seed(cfg.numpy_rand_seed)
    plan = loaded.get("gemms") if loaded is not None and cfg.gemm_library == "auto" else None
    source, model, dense_opt, chosen = build(cfg, state, out_dir, ctx, plan)
    dev = model.dense_parameters()[0].device
    schedule = make_schedule(cfg, model, dense_opt)  # reads the base rates: before any state loads
    per_epoch = batches_per_epoch(cfg, source)
    total = per_epoch * cfg.nepochs
    result = TrainResult(run_dir=str(out_dir), rank=ctx.rank if ctx else 0)
    start_step, best_auc, best_step, prior_seconds = 0, float("nan"), -1, 0.0
    if state is not None:
        start_step = _checked_step(state, total, ckpt_path)
        ckpt.load_state(model, state["model"], ckpt_path, "model")
        ckpt.load_state(dense_opt, state["dense_optimizer"], ckpt_path, "dense optimizer state")
        torch.set_rng_state(state["torch_rng"])
        try:
            best_auc, best_step = float(state["best_auc"]), int(state["best_step"])
            result.samples = int(state.get("samples", start_step * cfg.mini_batch_size))
            prior_seconds = float(state.get("train_seconds", 0.0))
        except (TypeError, ValueError):
            raise ckpt.CheckpointError(f"checkpoint {ckpt_path}: best_auc, best_step, samples "
                                       "or train_seconds is not a number") from None
    elif loaded is not None:
        ckpt.load_state(model, loaded["model"], cfg.load_model, "model")

    log = _Log(out_dir, cfg.tensorboard, resume_step=start_step if state is not None else None)
    progress = Progress(total, start_step, cfg.progress and not cfg.inference_only,
                        cfg.print_time, cfg.print_wall_time)
    val_rows = source.rows("val") if hasattr(source, "rows") else cfg.eval_samples
    mlperf.run_header(cfg, per_epoch * cfg.mini_batch_size, val_rows)

    def save(step: int, seconds: float) -> None:
        ck = {"step": step, "model": model.state_dict(), "dense_optimizer": dense_opt.state_dict(),
              "torch_rng": torch.get_rng_state(), "best_auc": best_auc, "best_step": best_step,
              "samples": result.samples, "train_seconds": seconds, "config": cfg.to_dict(),
              "gemms": chosen["gemms"],
              "precision": {k: v for k, v in chosen.items() if k != "gemms"},
              **hot.checkpoint_fields(model)}
        if ctx:  # each rank writes its pieces; rank 0's file below is the commit
            ck["shards"] = dist_ckpt.write_shards(model.embeddings, ckpt_path, step)
        if out_dir != run_dir:
            return
        ckpt.save_atomic(ck, ckpt_path)
        if cfg.save_model:
            ckpt.save_atomic(ck, cfg.save_model)
        if ctx:
            dist_ckpt.remove_old_shards(ckpt_path, ck["shards"]["dir"])

    def do_eval(step: int, splits: tuple[str, ...] = ("val",), final: bool = False):
        """Evaluate `splits`; return the validation metrics (None without a val split)."""
        nonlocal best_auc, best_step
        model.eval()
        epoch = 1 + step / per_epoch  # MLPerf's epoch_num, as the reference logs it
        val = None
        for split in splits:
            if split == "val":
                mlperf.start("eval_start", epoch_num=epoch)
            m = run_eval(cfg, model, source, split, ctx)
            if m is None:
                continue
            log.write({"kind": "eval", "step": step, "split": split, "final": final, **m})
            progress.eval(split, step, m)
            (result.final if final else result.last_eval)[split] = m
            if m.get("oracle_auc") is not None:
                result.oracle_auc = m["oracle_auc"]
            if split == "val":
                val = m
                mlperf.event("eval_accuracy", m["auc"], epoch_num=epoch)
                mlperf.end("eval_stop", epoch_num=epoch)
                if not math.isnan(m["auc"]) and not (m["auc"] <= best_auc):
                    best_auc, best_step = m["auc"], step
        model.train()
        return val

    mlperf.end("init_stop")
    if cfg.inference_only:
        do_eval(start_step, ("val", "test"), final=True)
        result.stopped, result.steps = "inference_only", start_step
        progress.close()
        mlperf.close()
        return _finish(cfg, result, best_auc, best_step, log)

    mlperf.start("run_start")
    autocast = needs_autocast(cfg, model)
    schedule.set_step(start_step)
    test_freq = {-1: per_epoch, 0: max(1, per_epoch // 5)}.get(cfg.test_freq, cfg.test_freq)

    def fetch(step: int):
        epoch, index = divmod(step, per_epoch)
        return source.get("train", index, cfg.mini_batch_size, epoch)

    step = start_step
    dense_params = model.dense_parameters()
    grad_sum = distributed.data.GradientSum(dense_params) if ctx else None
    traffic = distributed.comm.TRAFFIC
    traffic.reset()
    t0 = time.perf_counter()
    window_t, window_samples, loss_sum, correct, loss_n = t0, 0, 0.0, 0, 0
    prefetch = Prefetcher(fetch, range(start_step, total), cfg.data_workers)
    profiler = _profiler(cfg.enable_profiling)
    try:
        with profiler:
            for batch in prefetch:
                batch = devices.to_device(batch, cfg, dev)
                if ctx:
                    ctx.mark(step)
                if step % per_epoch == 0:
                    mlperf.start("epoch_start", epoch_num=step // per_epoch + 1)
                lr = schedule.get_last_lr()[0]
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                    logits = model(batch.dense, batch.values, batch.offsets)
                loss = compute_loss(cfg, logits, batch.label,
                                    cfg.mini_batch_size if ctx else None)
                loss_value = loss.item()
                if ctx:  # the global batch's loss; a NaN on any rank stops every rank
                    loss_value = distributed.data.sum_over_ranks(
                        loss_value + (0.0 if bool(torch.isfinite(logits).all()) else math.nan))
                # Checked before backward (no weight touched yet). The logits too: a saturated
                # logit (-inf for a negative) gives a finite loss but NaN gradients.
                if not (math.isfinite(loss_value) and bool(torch.isfinite(logits).all())):
                    _stop_non_finite(f"the loss ({loss_value}) or a logit", step, lr, ckpt_path)
                dense_opt.zero_grad(set_to_none=True)
                loss.backward()  # also updates the embedding rows in place
                if grad_sum:
                    grad_sum.wait()  # the all-reduces the backward started
                    model.embeddings.finish_step()  # the replicated tables' update
                if not all_finite([p.grad for p in dense_params if p.grad is not None]):
                    _stop_non_finite("an MLP gradient", step, lr, ckpt_path)  # before the MLPs take it
                dense_opt.step()
                schedule.step()
                step += 1
                seen = cfg.mini_batch_size if ctx else batch.size  # the global batch
                result.samples += seen
                window_samples += seen
                loss_sum, loss_n = loss_sum + loss_value, loss_n + 1
                hits = int(((logits.detach().reshape(-1) > 0) == (batch.label > 0.5)).sum())
                correct += hits * seen // max(1, batch.size)  # distributed: rank 0's slice's rate
                progress.step()
                if step % cfg.print_freq == 0 or step == total:
                    now = time.perf_counter()
                    sps = window_samples / max(now - window_t, 1e-9)
                    log.write({"kind": "train", "step": step, "loss": loss_sum / loss_n, "lr": lr,
                               "accuracy": correct / window_samples, "samples_per_s": sps})
                    progress.train(step, (step - 1) // per_epoch, loss_sum / loss_n,
                                   correct / window_samples, sps, lr,
                                   1000 * (now - window_t) / loss_n)
                    window_t, window_samples, loss_sum, correct, loss_n = now, 0, 0.0, 0, 0
                if step % per_epoch == 0:
                    mlperf.end("epoch_stop", epoch_num=step // per_epoch)
                if step % test_freq == 0 and step < total:
                    t_eval = time.perf_counter()
                    with traffic.paused():
                        m = do_eval(step)
                    window_t += time.perf_counter() - t_eval  # ms/it and samples/s: training only
                    if m and _target_reached(cfg, m):
                        result.stopped = "auc_threshold"
                        break
                    if m and on_eval is not None and on_eval(step, m):
                        result.stopped = "pruned"
                        break
                if cfg.checkpoint_freq > 0 and step % cfg.checkpoint_freq == 0:
                    save(step, prior_seconds + time.perf_counter() - t0)
                if on_step is not None:
                    on_step(step)
                profiler.step()
    except KeyboardInterrupt:
        result.stopped = "interrupted"
    finally:
        prefetch.close()
        progress.close()
    result.train_seconds = prior_seconds + time.perf_counter() - t0
    result.steps = step
    if ctx:  # this run's share of the training time blocked in collectives (rank 0's)
        result.communication = {"seconds": traffic.seconds, "bytes": traffic.bytes,
                                "share": traffic.seconds / max(time.perf_counter() - t0, 1e-9)}
    save(step, result.train_seconds)
    if result.stopped not in ("interrupted", "pruned"):
        m = do_eval(step, ("val", "test"), final=True)
        if m and result.stopped == "completed" and _target_reached(cfg, m):
            result.stopped = "auc_threshold"
    reached = result.stopped == "auc_threshold" or (
        result.stopped == "completed" and not cfg.mlperf_auc_threshold and not cfg.mlperf_acc_threshold)
    mlperf.end("run_stop", status="success" if reached else "aborted")
    mlperf.close()
    _profile_report(profiler, out_dir)
    result.cache = hot.summary(model, source)
    result = _finish(cfg, result, best_auc, best_step, log)
    if out_dir != run_dir:
        shutil.rmtree(out_dir, ignore_errors=True)
    return result


def build(cfg: TrainConfig, state: dict[str, Any] | None, run_dir: Path,
          ctx: distributed.Dist | None = None, saved_plan: list[dict[str, Any]] | None = None):
    """The data, the model and its dense optimizer, on this machine's fast path: --preset fitted
    to memory, --precision auto resolved and the GEMM libraries planned (a resumed run keeps
    the first run's, so it computes the same numbers); writes config.json and precision.json."""
    dev = devices.target(cfg, ctx is not None)
    source = make_source(cfg, progress=cfg.progress and sys.stderr.isatty())
    if state is None and presets.fit(cfg, lambda c: _estimate(c, source)["total"], available_bytes()):
        source = make_source(cfg)  # the synthetic tables at the fitted scale
    chosen = distributed.data.shared(ctx, _resolve_precision(cfg, len(source.table_sizes)))
    cfg.precision = chosen["precision"]  # rank 0's: every rank must store tables alike
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    check_fits(cfg, source.table_sizes, sparse_optimizer_name(cfg), source.multi_hot_sizes)
    per_epoch = batches_per_epoch(cfg, source)
    if ctx:
        if cfg.hot_cache_budget:
            raise ValueError("--hot-cache-budget is not supported with several processes yet")
        make = sharded_collection(cfg, source.table_sizes, ctx, run_dir)
        model, dense_opt = make_model(cfg, source.table_sizes, make, dev)
        source = distributed.data.RankSlice(source, ctx)
    else:
        rows = hot.hot_rows(cfg, source, per_epoch, sparse_optimizer_name(cfg), state, run_dir)
        model, dense_opt = make_model(cfg, source.table_sizes, hot.cached_collection(cfg, rows),
                                      dev)
        if rows is not None:
            source = hot.scheduled(cfg, source, model, per_epoch)
    if state is not None and "gemms" in state:
        chosen = {**chosen, **state.get("precision", {}), "gemms": apply_plan(model, state["gemms"])}
    elif saved_plan is not None:  # --load-model: the checkpoint's GEMMs, so it computes the same
        chosen["gemms"] = apply_plan(model, distributed.data.shared(ctx, saved_plan))
    else:  # measured on each rank, rank 0's plan used by all (a GPU's GEMMs are torch's)
        library = cfg.gemm_library if dev.type == "cpu" else "mkl"
        plan = distributed.data.shared(ctx, plan_gemms(model, cfg.mini_batch_size, library))
        chosen["gemms"] = apply_plan(model, plan) if ctx else plan
    (run_dir / "precision.json").write_text(json.dumps(chosen, indent=1))
    print(f"GEMMs: {_gemm_summary(chosen['gemms'], cfg.gemm_library, dev)}")
    return source, model, dense_opt, chosen


def sharded_collection(cfg: TrainConfig, sizes: list[int], ctx: distributed.Dist, run_dir: Path):
    """The placement of the tables over the ranks (printed, and in placement.json) and the
    sharded collection's class with it bound."""
    from dlrmx.distributed.plan import report

    name = sparse_optimizer_name(cfg)
    limit = parse_bytes(cfg.max_table_bytes_per_rank, "--max-table-bytes-per-rank") \
        if cfg.max_table_bytes_per_rank else 0
    plan = distributed.place(sizes, ctx.world, cfg.sparse_dense_boundary,
                             cfg.arch_sparse_feature_size, name, limit)
    dense = sum(a * b + b for w in gemm_widths(cfg.bottom_sizes, cfg.top_sizes,
                                               cfg.arch_interaction_op, cfg.arch_sparse_feature_size,
                                               len(sizes), cfg.dcn_num_layers, cfg.dcn_low_rank_dim)
                for a, b in zip(w, w[1:]))
    rep = report(plan, sizes, cfg.arch_sparse_feature_size, name, cfg.mini_batch_size, dense)
    (run_dir / "placement.json").write_text(json.dumps(rep, indent=1))
    held = [len(plan.pieces_of(r)) for r in range(ctx.world)]
    print(f"distributed: {ctx.world} ranks ({ctx.backend}), table pieces per rank {held}, "
          f"{len(plan.replicated)} replicated; {max(rep['bytes_per_rank']):,} table bytes on the "
          f"fullest rank; per step the busiest rank sends {sum(rep['bytes_per_step'].values()):,} "
          f"bytes (placement.json)")
    return functools.partial(distributed.ShardedEmbeddingBagCollection, placement=plan,
                             dist_ctx=ctx, shard_files=True)


def batches_per_epoch(cfg: TrainConfig, source: BatchSource) -> int:
    per_epoch = source.num_batches("train", cfg.mini_batch_size)
    if cfg.num_batches > 0:  # the reference's --num-batches: at most this many per epoch
        per_epoch = min(per_epoch, cfg.num_batches)
    if per_epoch <= 0:
        raise ValueError(f"the training split has fewer than --mini-batch-size "
                         f"({cfg.mini_batch_size}) rows")
    return per_epoch


def _estimate(cfg: TrainConfig, source: BatchSource) -> dict[str, int]:
    """The memory estimate of this config (synthetic tables at its current scale)."""
    sizes = (table_sizes(cfg.synthetic_preset, cfg.synthetic_scale)
             if cfg.data_generation == "synthetic" and not cfg.arch_embedding_size
             else source.table_sizes)
    return estimate_bytes(cfg, sizes, sparse_optimizer_name(cfg), multi_hot_sizes=source.multi_hot_sizes)


def _resolve_precision(cfg: TrainConfig, num_tables: int) -> dict[str, Any]:
    """--precision auto -> fp32 or bf16 (kept in cfg, so config.json, checkpoints and a resume
    see what ran), printed with the reason."""
    widths = gemm_widths(cfg.bottom_sizes, cfg.top_sizes, cfg.arch_interaction_op,
                         cfg.arch_sparse_feature_size, num_tables, cfg.dcn_num_layers,
                         cfg.dcn_low_rank_dim)
    autocast = cfg.optimizer in ("lamb", "hybrid", "adagrad", "rowwise_adagrad")
    if cfg.device == "cuda" and cfg.precision == "auto":  # the CPU measurement says nothing here
        rec = {"requested": "auto", "precision": "fp32",
               "reason": "--device cuda: fp32 unless --precision bf16 is given"}
    else:
        rec = precision.resolve(cfg.precision, widths, cfg.mini_batch_size, autocast)
    cfg.precision = rec["precision"]
    print(f"precision: {rec['precision']} ({'auto: ' if rec['requested'] == 'auto' else ''}"
          f"{rec['reason']})")
    return rec


def _gemm_summary(plan: list[dict[str, Any]], library: str, dev: torch.device) -> str:
    if dev.type != "cpu":
        return f"torch's (cuBLAS) on {dev}"
    picks = [p[k] for p in plan for k in ("forward", "input_grad")]
    how = "measured per shape" if library == "auto" else "--gemm-library"
    return (f"oneDNN for {picks.count('onednn')} of {len(picks)} forward/input-gradient GEMMs, "
            f"torch's default for the rest ({how}; weight gradients on torch's)")


def _stop_non_finite(what: str, step: int, lr: float, ckpt_path: Path) -> None:
    raise NonFiniteLossError(
        f"{what} is not finite at step {step} (lr {lr:g}; an input row out of range?); "
        f"stopping. The last good checkpoint is kept in {ckpt_path}. Try a lower "
        "--learning-rate or warm-up.")


def _target_reached(cfg: TrainConfig, m: dict[str, Any]) -> bool:
    return ((cfg.mlperf_auc_threshold > 0 and m["auc"] >= cfg.mlperf_auc_threshold) or
            (cfg.mlperf_acc_threshold > 0 and m["accuracy"] >= cfg.mlperf_acc_threshold))


def _resumed_config(cfg: TrainConfig, state: dict[str, Any], path: Path) -> TrainConfig:
    """The run continues as it was configured; only where and how to report may change."""
    missing = [k for k in ("step", "model", "dense_optimizer", "torch_rng", "best_auc",
                           "best_step", "config") if k not in state]
    if missing:
        raise ckpt.CheckpointError(f"checkpoint {path}: missing {missing}: not written by "
                                   "dlrmx.train, so it cannot be resumed")
    saved = TrainConfig.from_dict(state["config"], where=f"checkpoint {path}")
    for keep in ("run_dir", "resume", "progress", "plots", "tensorboard", "data_workers",
                 "inference_only", "print_time", "print_wall_time", "memory_check",
                 # how many processes run it (any world size resumes)
                 "dist_backend", "dist_timeout", "sparse_dense_boundary",
                 "max_table_bytes_per_rank"):
        setattr(saved, keep, getattr(cfg, keep))
    if cfg.threads:  # given again: the new machine's; else the first run's (same arithmetic)
        saved.threads = cfg.threads
    return saved.validate()


def _checked_step(state: dict[str, Any], total: int, path: Path) -> int:
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= total:
        raise ckpt.CheckpointError(f"checkpoint {path}: step {step!r} is not within this run's "
                                   f"0..{total} steps (another run's checkpoint, or edited?)")
    if not isinstance(state["torch_rng"], torch.Tensor) or state["torch_rng"].dtype != torch.uint8:
        raise ckpt.CheckpointError(f"checkpoint {path}: torch_rng is not a random-number "
                                   "generator state")
    return step


def _profiler(enabled: bool):
    """--enable-profiling: torch.profiler over steps 5-25 (a short, steady window)."""
    if not enabled:
        return _NoProfiler()
    from torch.profiler import ProfilerActivity, profile, schedule
    return profile(activities=[ProfilerActivity.CPU],
                   schedule=schedule(wait=2, warmup=3, active=20, repeat=1))


class _NoProfiler:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def step(self) -> None:
        pass


def _profile_report(profiler, run_dir: Path) -> None:
    if isinstance(profiler, _NoProfiler):
        return
    try:
        table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    except (AssertionError, RuntimeError):  # the run ended before the profiled window
        print("profiling: the run ended before the profiled steps (5-25)")
        return
    print(table)
    profiler.export_chrome_trace(str(run_dir / "profile.json"))


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
    """metrics.jsonl (one JSON object per line) and, optionally, TensorBoard. A resumed run
    first drops what was logged after its checkpoint (it is about to be logged again) and the
    earlier run's final evaluation."""

    def __init__(self, run_dir: Path, tensorboard: bool, resume_step: int | None) -> None:
        path = run_dir / "metrics.jsonl"
        if resume_step is not None and path.is_file():
            kept = [line for line in path.read_text().splitlines()
                    if _keep_record(line, resume_step)]
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)
        self.f = open(path, "a" if resume_step is not None else "w")
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


def _keep_record(line: str, resume_step: int) -> bool:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:  # a line cut by a kill
        return False
    return isinstance(rec, dict) and rec.get("step", 0) <= resume_step and not rec.get("final")


def _check_writable_file(path: Path, flag: str) -> None:
    """Refuse up front (not after training) a file that cannot be written."""
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a directory: give a file name, e.g. {path / 'model.pt'}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ValueError(f"{flag} {path}: cannot create it (no writable directory {parent})")


@contextlib.contextmanager
def _nothing():
    yield
