"""--device in the trainer: where the model's parts live and how a batch gets there.

--device cpu: everything on the host (nothing here moves anything).
--device cuda: the whole model on the GPU, batches copied there from pinned memory.
--device cuda with --hot-cache-budget (FAE's hybrid mode): the tables stay in host memory, the
MLPs and the hot rows (CachedEmbeddingBagCollection's replica) on the GPU; a batch's ids stay on
the host, where the cache classifies and remaps them, and only its dense features and labels go
to the GPU.

The CUDA path has not run on a GPU yet (tests/test_cuda.py and bench/cuda.py hold its checks).
"""

from __future__ import annotations

import dataclasses

import torch

from dlrmx.data.loader import Batch
from dlrmx.train.config import TrainConfig


def target(cfg: TrainConfig, distributed: bool) -> torch.device:
    """The MLPs' device, after checking that it can run here."""
    if cfg.device == "cpu":
        return torch.device("cpu")
    from dlrmx import cuda

    if distributed:
        raise ValueError("--device cuda trains in one process; several processes train on the "
                         "CPU (drop --device cuda, or run one process)")
    why = cuda.unavailable()
    if why:
        raise ValueError(f"--device cuda needs dlrmx's CUDA kernels and a GPU: {why}")
    return torch.device("cuda", torch.cuda.current_device())


def host_tables(cfg: TrainConfig) -> bool:
    """Whether the tables stay in host memory while the MLPs run on the GPU (hybrid mode)."""
    return cfg.device == "cuda" and bool(cfg.hot_cache_budget)


def place(cfg: TrainConfig, model: torch.nn.Module, device: torch.device) -> None:
    """Move the model where --device puts it (before its optimizer is built: the optimizer's
    state follows the parameters)."""
    if device.type == "cpu":
        return
    if not host_tables(cfg):
        _check_fits(model, device)
        model.to(device)
        return
    for name, child in model.named_children():
        if name != "embeddings":
            child.to(device)


def _check_fits(model: torch.nn.Module, device: torch.device) -> None:
    need = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    free, _ = torch.cuda.mem_get_info(device)
    if need > 0.9 * free:
        raise ValueError(f"the model needs {need / 2**30:.2f} GiB, {device} has "
                         f"{free / 2**30:.2f} GiB free: keep the tables in host memory and only "
                         "their hot rows on the GPU (--hot-cache-budget SIZE, FAE's hybrid mode)")


def to_device(batch: Batch, cfg: TrainConfig, device: torch.device) -> Batch:
    """The batch as the model takes it on `device` (ids stay on the host in hybrid mode)."""
    if device.type == "cpu":
        return batch
    moved = {"dense": batch.dense, "label": batch.label}
    if not host_tables(cfg):
        moved.update(values=batch.values, offsets=batch.offsets)
    return dataclasses.replace(batch, **{k: _copy(v, device) for k, v in moved.items()})


def _copy(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    return t.pin_memory().to(device, non_blocking=True)
