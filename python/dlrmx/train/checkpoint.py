"""Checkpoints: one torch.save file of tensors and plain values (loadable with
`torch.load(weights_only=True)`), written atomically: a temporary file in the same directory
(`dlrmx.atomic`'s names: host and pid), fsync, then rename over the old one. A failed write
leaves the previous checkpoint intact, and temporaries left by a killed writer are removed by the
next run."""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from dlrmx import atomic

CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, empty, truncated, corrupt, refused by
    torch's safe loader, or not one this run can continue from."""


def save_atomic(state: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{atomic.temp_tag()}", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"version": CHECKPOINT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (RuntimeError, OSError) as e:  # torch's zip writer wraps a full disk in a RuntimeError
        _unlink(tmp)
        detail = " ".join(str(e).split())[:160]
        free = shutil.disk_usage(path.parent).free / 2**20
        raise OSError(getattr(e, "errno", None) or errno.EIO, f"could not write the checkpoint "
                      f"({detail}; {free:.0f} MiB free there)", str(path)) from None
    except BaseException:
        _unlink(tmp)
        raise
    return path


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def load(path: str | Path) -> dict[str, Any]:
    """Read a dlrmx checkpoint; every way a file can be unusable is a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path}: the file is empty (an interrupted copy?)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        refused = [ln for ln in lines if "GLOBAL" in ln]
        if not refused:  # not a pickle of allowed types at all: damaged bytes
            raise CheckpointError(f"checkpoint {path}: truncated or corrupt (not a torch.save "
                                  f"file: {(lines[-2] if len(lines) > 1 else str(e))[:200]})") from None
        raise CheckpointError(f"checkpoint {path}: refused by torch's safe loader: it holds "
                              f"objects other than tensors and plain values ({refused[0][:200]}); "
                              "only dlrmx.train's own checkpoints can be resumed") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: truncated or corrupt "
                              f"({type(e).__name__}: {str(e).strip()[:200]})") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path}: not a dlrmx v{CHECKPOINT_VERSION} checkpoint")
    return state


def load_state(module: torch.nn.Module | torch.optim.Optimizer, state: Any, path: str | Path,
               what: str) -> None:
    """load_state_dict with the mismatch (wrong shapes, missing or extra keys) named."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        msg = " ".join(str(e).split())[:400]
        raise CheckpointError(f"checkpoint {path}: its {what} does not fit this model ({msg}); "
                              "was it written with other --arch-* flags or data?") from None
