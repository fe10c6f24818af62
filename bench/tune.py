"""A cheap DLRM tuning task, tuned five ways: the planted-teacher synthetic data (its oracle AUC is
known), a fixed step budget per trial, target = oracle AUC - margin. For each way and seed:
trials and wall time until a trial reaches the target, and the best AUC after 10 and 20 trials.

    advisor+sigoptlite  the advisor's space (python -m dlrmx.tune init), SigOpt's engine
    advisor+tpe         the same space, Optuna's TPE with its defaults
    wide+sigoptlite     a naive wide space (lr 1e-4..10, any schedule, dim 4..64), SigOpt's engine
    advisor+random      the advisor's space, random search
    auc-only            advisor+sigoptlite optimizing AUC alone (the others: AUC and time)

Two experiments run at a time, one trial each, one thread per trial (2 cores). Medians over seeds.

    python bench/tune.py                       # 3 seeds, 20 trials, all five
    python bench/tune.py --seeds 1 --trials 10 --ways advisor+sigoptlite,advisor+tpe
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roofline import cpu_line  # noqa: E402

from dlrmx.tune import advisor  # noqa: E402
from dlrmx.tune.experiment import dump, parse  # noqa: E402
from dlrmx.tune.runner import Runner, prepare  # noqa: E402

TRAIN = {"synthetic_preset": "kaggle", "synthetic_scale": 0.001, "eval_samples": 20_000,
         "arch_mlp_bot": "13-64-16", "arch_sparse_feature_size": 16, "arch_mlp_top": "64-1"}
WAYS = ["advisor+sigoptlite", "advisor+tpe", "wide+sigoptlite", "advisor+random", "auc-only"]


def experiment(way: str, seed: int, steps: int, batch: int, trials: int) -> dict:
    backend = {"tpe": "optuna", "random": "random"}.get(way.split("+")[-1], "sigoptlite")
    exp = advisor.advise(name=f"{way}-{seed}", optimizers=["sgd"], steps=steps, batch=batch,
                         train=TRAIN, trials=trials, parallel=1, auc_target=None, backend=backend,
                         metrics="auc" if way == "auc-only" else "auc,train_time",
                         pruning="none", seed=seed, trial_timeout=300)
    exp["dlrmx"]["threads"] = 1
    if way.startswith("wide"):  # what one would write knowing nothing about DLRM
        exp["parameters"] = [
            {"name": "learning_rate", "type": "double", "bounds": {"min": 1e-4, "max": 10.0},
             "transformation": "log"},
            {"name": "lr_num_warmup_steps", "type": "int", "bounds": {"min": 0, "max": steps}},
            {"name": "lr_decay_start_step", "type": "int", "bounds": {"min": 0, "max": steps}},
            {"name": "lr_num_decay_steps", "type": "int", "bounds": {"min": 0, "max": steps}},
            {"name": "arch_sparse_feature_size", "type": "categorical",
             "categorical_values": ["4", "8", "16", "32", "64"]},
            copy.deepcopy(next(p for p in exp["parameters"] if p["name"] == "mlp")),
        ]
    parse(exp)
    return exp


def run_one(way: str, seed: int, a, root: Path) -> dict:
    path = root / f"{way}-{seed}.yaml"
    dump(experiment(way, seed, a.steps, a.batch, a.trials), path)
    exp, d = prepare(path, None)
    t0 = time.monotonic()
    trials = Runner(exp, d, quiet=True).run()
    wall = time.monotonic() - t0
    return {"way": way, "seed": seed, "trials": trials, "wall": wall}


def summarize(res: dict, target: float) -> dict:
    trials, hit = res["trials"], None
    best = []
    for t in trials:
        elapsed = t.get("finished_at", trials[0]["time"]) - trials[0]["time"]
        auc = t["values"]["auc"] if t.get("status") == "completed" else float("-inf")
        best.append(max(best[-1] if best else float("-inf"), auc))
        if hit is None and auc >= target:
            hit = (t["number"] + 1, elapsed, t["values"]["train_time"])
    reached = [t for t in trials if t.get("status") == "completed" and t["values"]["auc"] >= target]
    fastest = min((t["values"]["train_time"] for t in reached), default=float("nan"))
    return {"hit": hit, "best10": best[min(9, len(best) - 1)], "best20": best[-1],
            "fastest_at_target": fastest}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--margin", type=float, default=0.03, help="target = oracle AUC - margin")
    p.add_argument("--ways", default=",".join(WAYS))
    p.add_argument("--save", default="", help="write every trial to this JSON file")
    p.add_argument("--load", default="", help="summarize a --save file again (e.g. another margin)")
    a = p.parse_args()
    ways = a.ways.split(",")
    print(cpu_line())
    if a.load:
        results = json.loads(Path(a.load).read_text())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            jobs = [(w, s) for s in range(a.seeds) for w in ways]
            with ThreadPoolExecutor(2) as pool:
                results = list(pool.map(lambda j: run_one(j[0], j[1], a, Path(tmp)), jobs))
    if a.save:
        Path(a.save).write_text(json.dumps(results))
    oracle = next(t.get("oracle_auc") for r in results for t in r["trials"] if t.get("oracle_auc"))
    target = oracle - a.margin
    print(f"task: {a.steps} steps of batch {a.batch} per trial, oracle AUC {oracle:.4f}, "
          f"target {target:.4f}; {a.trials} trials, {a.seeds} seeds; medians over seeds "
          "(a way that misses the target in a seed counts as trials+1 there)")
    print(f"{'way':20s} {'reached':>7s} {'trials to target':>16s} {'(per seed)':>12s} "
          f"{'wall s':>7s} {'best@10':>8s} {'best@20':>8s} {'fastest trial at target, s':>27s}")
    nan = float("nan")
    for w in ways:
        rs = [summarize(r, target) for r in results if r["way"] == w]
        hits = [r["hit"] for r in rs]
        n = [h[0] if h else a.trials + 1 for h in hits]
        wall = [h[1] for h in hits if h]
        fast = [r["fastest_at_target"] for r in rs if r["hit"]]
        print(f"{w:20s} {sum(h is not None for h in hits):3d}/{len(hits):<3d} "
              f"{statistics.median(n):16.1f} {','.join(map(str, n)):>12s} "
              f"{(statistics.median(wall) if wall else nan):7.1f} "
              f"{statistics.median(r['best10'] for r in rs):8.4f} "
              f"{statistics.median(r['best20'] for r in rs):8.4f} "
              f"{(statistics.median(fast) if fast else nan):27.2f}")
    print(json.dumps({"oracle": oracle, "target": target}))


if __name__ == "__main__":
    main()
