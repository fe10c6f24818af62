"""Outputs that appear whole or not at all: build beside the final path under a temporary name
that says whose it is (`.NAME.tmp-HOST-PID-XXXX`), then rename into place. A run that is killed
leaves only such a temporary, and the next run writing the same output removes it once its
process is gone."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import uuid
from pathlib import Path
from typing import Iterator


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"


def temp_name(out: Path, kind: str = "tmp") -> Path:
    """`.NAME.tmp-HOST-PID-XXXXXXXX` (or `.old-...`) beside `out`."""
    return out.with_name(f".{out.name}.{kind}-{temp_tag()}{uuid.uuid4().hex[:8]}")


def temp_tag() -> str:
    """The `HOST-PID-` part of a temporary name (for tempfile.mkstemp prefixes)."""
    return f"{_host()}-{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:  # a zombie has exited: it only waits for its parent to reap it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale(out: Path) -> tuple[list[Path], list[Path]]:
    """Remove the temporaries (files or directories) beside `out` left by runs on this host
    whose process is gone. Returns (removed, left): `left` are temporaries whose owner cannot be
    checked (another host, or older names without a pid); they stay."""
    pat = re.compile(rf"\.{re.escape(out.name)}\.(?:tmp|old)-(?:(.+)-(\d+)-)?\w+(?:\.tmp)?")
    removed: list[Path] = []
    left: list[Path] = []
    if not out.parent.is_dir():
        return removed, left
    for q in sorted(out.parent.iterdir()):
        m = pat.fullmatch(q.name)
        if not m or q.is_symlink():
            continue
        if m[1] == _host() and not pid_alive(int(m[2])):
            if q.is_dir():
                shutil.rmtree(q, ignore_errors=True)
            else:
                q.unlink(missing_ok=True)
            removed.append(q)
        elif m[1] != _host():
            left.append(q)
    return removed, left


def replace_dir(tmp: Path, out: Path) -> None:
    """Rename the finished `tmp` to `out`, replacing an earlier `out`; if that fails halfway the
    earlier one is put back."""
    old = None
    if out.exists():
        old = temp_name(out, "old")
        out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)  # what stays has our pid: the next run removes it


@contextlib.contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """A fresh temporary directory beside `out` (after removing what a killed run left there)
    that replaces `out` when the block completes, and is removed if it raises: readers see the
    old `out` or the finished new one, never a half-written one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    tmp = temp_name(out)
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
