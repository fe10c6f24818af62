"""Early stopping of unpromising trials from their intermediate validation AUCs, the same rules
for every backend (a trial checks itself after each of its evaluations; dlrmx.tune.trial):

- median: stop at the k-th evaluation when the AUC is below the median of the other trials'
  k-th evaluations (Optuna's MedianPruner);
- percentile: below their `percentile`-th percentile (PercentilePruner: 25 stops the bottom 25%);
- asha: at rungs k = w*eta, w*eta^2, ... (w = max(1, warmup_evals)) keep a trial only if its
  AUC is in the top 1/eta of all trials that reached the rung (asynchronous successive halving,
  Li et al. 2020); between rungs it runs on.

Nothing stops before `warmup_evals` evaluations, and median/percentile wait for
`startup_trials` peers at that evaluation. A NaN AUC always stops."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def should_stop(settings: dict[str, Any], curve: Sequence[float],
                others: Sequence[Sequence[float]]) -> bool:
    rule, k = settings["rule"], len(curve)
    if rule == "none" or k == 0:
        return False
    value = float(curve[-1])
    if math.isnan(value):
        return True
    if k <= settings["warmup_evals"]:
        return False
    peers = [float(c[k - 1]) for c in others if len(c) >= k and not math.isnan(c[k - 1])]
    if rule in ("median", "percentile"):
        if len(peers) < max(1, settings["startup_trials"]):
            return False
        q = 50.0 if rule == "median" else float(settings["percentile"])
        return value < float(np.percentile(peers, q))
    eta = int(settings["reduction_factor"])
    base = max(1, int(settings["warmup_evals"]))
    rung = base
    while rung < k:
        rung *= eta
    if rung != k:
        return False
    everyone = sorted(peers + [value], reverse=True)
    if len(everyone) < eta:
        return False
    return value < everyone[math.ceil(len(everyone) / eta) - 1]
