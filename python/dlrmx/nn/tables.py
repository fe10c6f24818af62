"""Allocation of large embedding tables and their optimizer state."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from dlrmx import native

if TYPE_CHECKING:
    from dlrmx.nn.sparse_optim import SparseOptimizer

_HUGE_PAGES_FROM = 1 << 22  # bytes; smaller tensors stay in the TLB anyway
DEVICES = ("cpu", "cuda", "meta")  # meta: shapes only, materialized later with .to_empty(...)


def new_table(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, fill: float | None = None,
              device: torch.device | str | None = None) -> torch.Tensor:
    """A tensor for a table (or per-row state) backed by transparent huge pages where the OS
    allows it: random row lookups then stop missing the TLB on every row (forward lookups over
    2 GiB of tables ran 1.9x faster here). Advised before first touch; filled with `fill` if
    given, else left uninitialized. `device` None follows torch's default device (meta inside
    `with torch.device("meta")`)."""
    t = torch.empty(shape, dtype=dtype, device=device)
    if t.device.type == "cpu" and t.numel() * t.element_size() >= _HUGE_PAGES_FROM:
        native.advise_huge_pages(t)
    if fill is not None:
        t.fill_(fill)
    return t


def table_device(device, who: str) -> torch.device:
    """The device argument of a module's constructor: None (the CPU), 'cpu', 'meta', or a CUDA
    device where dlrmx's CUDA kernels are available."""
    dev = torch.device("cpu" if device is None else device)
    if dev.type not in DEVICES:
        raise NotImplementedError(f"{who} does not support device={device!r}: its kernels run on "
                                  f"the CPU and CUDA; use 'cpu', 'cuda', or 'meta' to "
                                  f"materialize later")
    if dev.type == "cuda":
        from dlrmx import cuda

        why = cuda.unavailable()
        if why:
            raise NotImplementedError(f"{who}: device={device!r} needs dlrmx's CUDA kernels and a "
                                      f"GPU: {why}")
    return dev


def prepare(optimizer: "SparseOptimizer", fp32: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """optimizer.prepare (the table as the fused optimizer stores it, and its state) with every
    new tensor on the table's device, so a meta table gets meta state."""
    with torch.device(fp32.device):
        return optimizer.prepare(fp32)


CHUNK_ELEMENTS = 1 << 18  # 1 MiB of fp32 at a time: small transients are reused, not left as holes


def allocate(optimizer: "SparseOptimizer | None", shape: tuple[int, int], device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An uninitialized table as `optimizer` stores it, and its state: shapes and dtypes come
    from a meta dry run of optimizer.prepare, so no fp32 copy of the table is ever made."""
    if optimizer is None:
        return new_table(shape, device=device), None
    with torch.device("meta"):
        stored, state = optimizer.prepare(torch.empty(shape))
    weight = new_table(tuple(stored.shape), stored.dtype, device=device)
    return weight, None if state is None else new_table(tuple(state.shape), state.dtype, device=device)


def fill_rows(optimizer: "SparseOptimizer | None", weight: torch.Tensor,
              state: torch.Tensor | None, make_fp32) -> None:
    """Fill a table chunk by chunk: `make_fp32(r0, r1)` gives the fp32 values of rows r0..r1,
    stored as the optimizer keeps them (with fresh state). Peak extra memory: one chunk."""
    for r0, r1 in row_chunks(*weight.shape):
        write_fp32(optimizer, weight[r0:r1], None if state is None else state[r0:r1],
                   make_fp32(r0, r1))


def row_chunks(rows: int, dim: int):
    """The (r0, r1) row ranges of about CHUNK_ELEMENTS elements that `fill_rows` fills in order
    (a sharded model draws the same chunks of the tables it does not hold, to stay in step
    with a single process's random stream)."""
    step = max(1, CHUNK_ELEMENTS // max(1, dim))
    for r0 in range(0, rows, step):
        yield r0, min(rows, r0 + step)


def write_fp32(optimizer: "SparseOptimizer | None", weight: torch.Tensor,
               state: torch.Tensor | None, fp32: torch.Tensor) -> None:
    """Store fp32 values into a table as `optimizer` keeps it, in place (split-SGD: bf16 upper
    halves and the int16 trail, exact), and reset its optimizer state (`reset_parameters`)."""
    if optimizer is None:
        weight.data.copy_(fp32)
        return
    stored, fresh = prepare(optimizer, fp32)
    weight.data.copy_(stored)
    if state is not None and fresh is not None:
        state.copy_(fresh)
