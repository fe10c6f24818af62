"""The reference DLRM's learning-rate policy: linear warm-up, then polynomial (power 2) decay."""

from __future__ import annotations


def lr_at(step: int, base_lr: float, warmup: int, decay_start: int, decay_steps: int) -> float:
    """Learning rate for 0-based `step`. Warm-up ramps linearly to base_lr over `warmup` steps;
    from `decay_start`, lr = base * ((decay_steps - k) / decay_steps)^2 after k decay steps; after
    the decay it stays at its last value, as the reference's LRPolicyScheduler does."""
    s = step + 1  # the reference counts scheduler steps from 1
    if warmup > 0 and s < warmup:
        return base_lr * (1.0 - (warmup - s) / warmup)
    if decay_steps > 0 and s >= decay_start:
        k = min(s - decay_start, decay_steps - 1)
        return max(1e-7, base_lr * ((decay_steps - k) / decay_steps) ** 2)  # reference floor
    return base_lr
