"""Joining a `torch.distributed` job from what the launcher set: torchrun (and any `env://`
launcher: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE), mpirun (OpenMPI's OMPI_COMM_WORLD_* or
PMI's PMI_RANK/PMI_SIZE), or Spark's TorchDistributor (which runs torchrun)."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch.distributed as dist

BACKENDS = ("auto", "gloo", "mpi")


@dataclass
class Dist:
    """This process's place in the job."""

    rank: int
    world: int
    local_rank: int
    local_world: int
    backend: str
    timeout_s: float = 300.0
    step: int = -1  # the trainer's current step, for the message of a failed job

    @property
    def writer(self) -> bool:
        """Only rank 0 writes logs, plots, checkpoints and the progress bar."""
        return self.rank == 0

    def mark(self, step: int) -> None:
        """Note the step this rank is at, here and in the job's store (so that a failure
        report can say which rank fell behind)."""
        self.step = step
        try:
            dist.distributed_c10d._get_default_store().set(f"dlrmx/step/{self.rank}", str(step))
        except RuntimeError:
            pass  # the report then names no rank

    def laggards(self) -> str:
        """The ranks whose last noted step is behind this one's (the ones that died or hung)."""
        try:
            store = dist.distributed_c10d._get_default_store()
            store.set_timeout(datetime.timedelta(seconds=2))
            steps = {r: int(store.get(f"dlrmx/step/{r}")) for r in range(self.world)
                     if store.check([f"dlrmx/step/{r}"])}
        except RuntimeError:
            return ""
        behind = [f"rank {r} (last at step {s})" for r, s in sorted(steps.items())
                  if s < self.step and r != self.rank]
        missing = [f"rank {r} (never started)" for r in range(self.world) if r not in steps]
        return ", ".join(behind + missing)

    def slice(self, n: int) -> tuple[int, int]:
        """This rank's rows [lo, hi) of n: contiguous, sizes differing by at most one."""
        return split_bounds(n, self.world)[self.rank:self.rank + 2]


def split_bounds(n: int, world: int) -> list[int]:
    """Bounds of the world's contiguous slices of n rows (the first n % world get one more)."""
    base, extra = divmod(int(n), world)
    out = [0]
    for r in range(world):
        out.append(out[-1] + base + (r < extra))
    return out


def _env_int(*names: str) -> int | None:
    for n in names:
        if os.environ.get(n, "") != "":
            return int(os.environ[n])
    return None


def from_env() -> tuple[int, int, int, int] | None:
    """(rank, world, local rank, local world) from the launcher's variables, or None when this
    process was started alone."""
    rank = _env_int("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
    world = _env_int("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
    if rank is None or world is None or world <= 1:
        return None
    local = _env_int("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID") or 0
    local_world = _env_int("LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE") or world
    return rank, world, local, local_world


def init(backend: str = "auto", timeout_s: float = 300.0) -> Dist | None:
    """Join the job the launcher started (None when there is none). gloo over TCP by default;
    "mpi" needs a torch built with MPI. mpirun sets no rendezvous address: 127.0.0.1:29500
    unless MASTER_ADDR/MASTER_PORT say otherwise (one node; set them for several)."""
    found = from_env()
    if found is None:
        return None
    rank, world, local, local_world = found
    if backend not in BACKENDS:
        raise ValueError(f"--dist-backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "mpi" and not dist.is_mpi_available():
        raise ValueError("--dist-backend mpi: this torch was built without MPI; use gloo (the "
                         "default), which runs under mpirun too")
    chosen = "gloo" if backend == "auto" else backend
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), str(world)
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world, timeout=timeout))
        # Each attempt of a restarted job under its own keys: a restarted round must not read
        # the addresses its dead predecessors left in a store that outlived them.
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(chosen, store=dist.PrefixStore(f"dlrmx/attempt-{attempt}", store),
                                rank=rank, world_size=world, timeout=timeout)
    return Dist(rank, world, local, local_world, chosen, timeout_s)


class DistributedError(RuntimeError):
    """A collective with the other ranks failed: one died, hung past --dist-timeout, or left."""

    @classmethod
    def of(cls, d: Dist, e: BaseException) -> "DistributedError":
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = f"at step {d.step}" if d.step >= 0 else "before training started"
        who = d.laggards() if d.step >= 0 else ""
        who = f"behind it: {who}" if who else "one of them died, hung or left"
        return cls(f"rank {d.rank} of {d.world} stopped {where}: a collective with the other "
                   f"ranks failed within --dist-timeout {d.timeout_s:g} s ({who}; see its "
                   f"log): {first}")


def threads_per_rank(requested: int, d: Dist | None) -> int:
    """--threads, or (0) the cores shared among this node's ranks: torchrun's default of
    OMP_NUM_THREADS=1 must not silently leave the other cores idle."""
    if requested > 0 or d is None:
        return requested
    return max(1, (os.cpu_count() or 1) // d.local_world)


def finish(d: Dist | None, ok: bool = True) -> None:
    """Leave the job: after a barrier when the run ended normally, so no rank tears its
    connections down while another still uses them."""
    if d is None or not dist.is_initialized():
        return
    if ok:
        dist.barrier()
    dist.destroy_process_group()
