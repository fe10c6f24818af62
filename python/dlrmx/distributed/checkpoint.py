"""Sharded checkpoints: each rank writes the pieces it holds, rank 0 writes the rest (MLPs,
replicated tables, optimizer and run state) with a manifest of the pieces, and that file is the
commit: it is written (atomically) only after every rank's shard file is on disk, and older
shard directories are removed only after it. A killed save leaves the previous checkpoint whole.

A checkpoint loads on any world size: a sharded run reads, for each piece it holds, the
overlapping regions of the saved pieces (memory-mapped, so a rank reads only what it needs); a
single process assembles whole tables."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from dlrmx.distributed.plan import Piece
from dlrmx.train import checkpoint as ckpt

PREFIX = "embeddings."  # where the DLRM holds its collection


def shard_dir_name(checkpoint: Path, step: int) -> str:
    return f"{checkpoint.stem}.shards-{step:09d}"


def write_shards(emb, checkpoint: Path, step: int) -> dict[str, Any] | None:
    """Every rank writes its pieces into CHECKPOINT.shards-STEP/rank<r>.pt; returns, on rank 0
    once every rank's file is on disk, the manifest to put into the checkpoint."""
    d = checkpoint.parent / shard_dir_name(checkpoint, step)
    d.mkdir(parents=True, exist_ok=True)
    rank = emb.ctx.rank
    pieces = [{"table": p.table, "rows": [p.row_lo, p.row_hi], "cols": [p.col_lo, p.col_hi],
               "weight": w.detach(), "state": s} for p, w, s in emb._held() if p.rank >= 0]
    name = f"rank{rank}.pt"
    ckpt.save_atomic({"version": ckpt.CHECKPOINT_VERSION, "pieces": pieces}, d / name)
    meta = [{**{k: v for k, v in p.items() if k not in ("weight", "state")}, "file": name,
             "index": i, "weight_dtype": str(p["weight"].dtype).removeprefix("torch."),
             "state_dtype": None if p["state"] is None else str(p["state"].dtype).removeprefix("torch."),
             "state_rows_only": p["state"] is not None and p["state"].dim() == 1}
            for i, p in enumerate(pieces)]
    parts = [None] * emb.ctx.world if rank == 0 else None
    dist.gather_object(meta, parts, dst=0)
    dist.barrier()  # every shard file is on disk before rank 0 commits
    if rank != 0:
        return None
    tables = [[t.num_embeddings, t.embedding_dim] for t in emb.tables]
    return {"dir": d.name, "path": str(d.resolve()), "tables": tables,
            "pieces": [m for part in parts for m in part]}


def remove_old_shards(checkpoint: Path, keep: str) -> None:
    """After the commit: the shard directories no checkpoint refers to any more."""
    for d in checkpoint.parent.glob(f"{checkpoint.stem}.shards-*"):
        if d.name != keep and d.is_dir():
            shutil.rmtree(d, ignore_errors=True)


class SavedTable:
    """One table (its weights, or its optimizer state) of a sharded checkpoint, read region by
    region from the memory-mapped shard files."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, which: str, pieces: list,
                 files: dict[str, Any]) -> None:
        self.shape, self.dtype, self.which, self.pieces, self._files = shape, dtype, which, pieces, files

    def region(self, p: Piece) -> torch.Tensor:
        """Rows [row_lo, row_hi) and columns [col_lo, col_hi) (per-row state: the rows)."""
        rows_only = len(self.shape) == 1
        out = torch.empty((p.row_hi - p.row_lo,) if rows_only else p.shape, dtype=self.dtype)
        for m in self.pieces:
            (r0, r1), (c0, c1) = m["rows"], m["cols"]
            a, z = max(r0, p.row_lo), min(r1, p.row_hi)
            lo, hi = max(c0, p.col_lo), min(c1, p.col_hi)
            if a >= z or lo >= hi:
                continue
            src = self._files[m["file"]]["pieces"][m["index"]][self.which]
            if rows_only:
                out[a - p.row_lo:z - p.row_lo] = src[a - r0:z - r0]
            else:
                out[a - p.row_lo:z - p.row_lo, lo - p.col_lo:hi - p.col_lo] = \
                    src[a - r0:z - r0, lo - c0:hi - c0]
        return out

    def full(self) -> torch.Tensor:
        n, d = self.shape[0], self.shape[1] if len(self.shape) > 1 else 1
        return self.region(Piece(-1, -1, 0, n, 0, d))


def attach(state: dict[str, Any], path: Path, whole: bool) -> None:
    """Put a sharded checkpoint's tables into state['model'] under their single-process keys:
    SavedTable readers (a sharded model reads its regions), or whole tensors (`whole`: a single
    process)."""
    man = state.get("shards")
    if not man:
        return
    d = Path(path).parent / man["dir"]
    if not d.is_dir():
        d = Path(man["path"])
    if not d.is_dir():
        raise ckpt.CheckpointError(f"checkpoint {path}: its shard directory {man['dir']} is "
                                   "missing (copy it beside the checkpoint)")
    files: dict[str, Any] = {}
    for m in man["pieces"]:
        if m["file"] not in files:
            f = d / m["file"]
            try:
                files[m["file"]] = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
            except (OSError, RuntimeError) as e:
                raise ckpt.CheckpointError(f"checkpoint {path}: shard {f} unreadable ({e})") from None
    by_table: dict[int, list] = {}
    for m in man["pieces"]:
        by_table.setdefault(m["table"], []).append(m)
    for t, pieces in by_table.items():
        n, dim = man["tables"][t]
        entries = [(f"{PREFIX}weights.{t}", (n, dim), pieces[0]["weight_dtype"], "weight")]
        if pieces[0]["state_dtype"] is not None:
            shape = (n,) if pieces[0]["state_rows_only"] else (n, dim)
            entries.append((f"{PREFIX}state_{t}", shape, pieces[0]["state_dtype"], "state"))
        for key, shape, dtype, which in entries:
            table = SavedTable(shape, getattr(torch, dtype), which, pieces, files)
            state["model"][key] = table.full() if whole else table
