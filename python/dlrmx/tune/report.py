"""`python -m dlrmx.tune report DIR`: the best assignments (the Pareto set of AUC and training
time when both are optimized; only trials meeting the AUC threshold count as feasible), a table
of every trial, and PNGs in DIR/report/: best AUC so far against trials, the AUC/time Pareto
front, parameter importance, parallel coordinates and the trials' learning curves.

Importance is model-free and needs no extra package: for a numeric parameter the absolute
Spearman rank correlation of its value with the AUC, for a categorical one the share of the AUC
variance between its categories (eta squared), normalized to sum to 1; over completed trials."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from dlrmx.tune.experiment import Experiment, load
from dlrmx.tune.runner import History


def completed(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [t for t in trials if t.get("status") == "completed"]


def feasible(exp: Experiment, t: dict[str, Any]) -> bool:
    target = exp.auc_target
    return target is None or t["values"]["auc"] >= target


def best(exp: Experiment, trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best trial (AUC only), or the Pareto set of (AUC up, time down)."""
    ok = [t for t in completed(trials) if feasible(exp, t)]
    names = [m.name for m in exp.optimized]
    if names == ["auc"] or len(names) == 1:
        key = names[0]
        sign = 1 if exp.optimized[0].objective == "maximize" else -1
        return [max(ok, key=lambda t: sign * t["values"][key])] if ok else []

    def dominates(a, b):
        ge = a["values"]["auc"] >= b["values"]["auc"] and a["values"]["train_time"] <= b["values"]["train_time"]
        return ge and a["values"] != b["values"]

    front = [t for t in ok if not any(dominates(o, t) for o in ok)]
    return sorted(front, key=lambda t: -t["values"]["auc"])


def importance(exp: Experiment, trials: list[dict[str, Any]]) -> dict[str, float]:
    done = completed(trials)
    out: dict[str, float] = {}
    for p in exp.parameters:
        have = [t for t in done if p.name in t["assignments"]]
        if len(have) < 3:
            continue
        auc = np.array([t["values"]["auc"] for t in have])
        if p.type == "categorical":
            groups = [auc[[str(t["assignments"][p.name]) == v for t in have]] for v in p.values]
            total = ((auc - auc.mean()) ** 2).sum()
            between = sum(len(g) * (g.mean() - auc.mean()) ** 2 for g in groups if len(g))
            out[p.name] = float(between / total) if total > 0 else 0.0
        else:
            x = np.array([float(t["assignments"][p.name]) for t in have])
            rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(auc))
            r = np.corrcoef(rx, ry)[0, 1] if rx.std() > 0 and ry.std() > 0 else 0.0
            out[p.name] = abs(float(r)) if math.isfinite(r) else 0.0
    s = sum(out.values())
    return {k: v / s for k, v in sorted(out.items(), key=lambda kv: -kv[1])} if s > 0 else out


def table(trials: list[dict[str, Any]]) -> str:
    lines = [f"{'trial':>5s} {'status':9s} {'AUC':>7s} {'time s':>7s}  assignments"]
    for t in trials:
        v = t.get("values") or t.get("partial") or {}
        auc = f"{v['auc']:.4f}" if "auc" in v else "-"
        sec = f"{v['train_time']:.1f}" if "train_time" in v else "-"
        args = ", ".join(f"{k}={x:.4g}" if isinstance(x, float) else f"{k}={x}"
                         for k, x in t["assignments"].items())
        lines.append(f"{t['number']:5d} {t.get('status', 'running'):9s} {auc:>7s} {sec:>7s}  {args}")
    return "\n".join(lines)


def write(directory: str | Path) -> str:
    d = Path(directory)
    if not (d / "experiment.yaml").exists():
        raise FileNotFoundError(f"{d}: not an experiment directory (no experiment.yaml); "
                                "`python -m dlrmx.tune run EXPERIMENT.yaml` makes one")
    exp = load(d / "experiment.yaml")
    trials = [t for _, t in sorted(History(d).trials().items())]
    out = d / "report"
    out.mkdir(exist_ok=True)
    text = [f"experiment {exp.raw['name']}: {len(trials)} trials "
            f"({len(completed(trials))} completed, "
            f"{sum(t.get('status') == 'pruned' for t in trials)} pruned, "
            f"{sum(t.get('status') == 'failed' for t in trials)} failed)"]
    top = best(exp, trials)
    text.append("best" if len(exp.optimized) == 1 else "Pareto set (AUC up, training time down)")
    for t in top:
        text.append(f"  trial {t['number']}: AUC {t['values']['auc']:.4f}, "
                    f"{t['values']['train_time']:.1f} s: {t['assignments']}")
    imp = importance(exp, trials)
    if imp:
        text.append("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in imp.items()))
    text += ["", table(trials)]
    report = "\n".join(text)
    (out / "report.txt").write_text(report + "\n")
    _plots(exp, trials, top, imp, out)
    return report


def _plots(exp: Experiment, trials, top, imp, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = completed(trials)
    fig, ax = plt.subplots(figsize=(6, 4))  # best so far
    best_auc, xs, ys = -math.inf, [], []
    for t in trials:
        if t in done and feasible(exp, t):
            best_auc = max(best_auc, t["values"]["auc"])
        if best_auc > -math.inf:
            xs.append(t["number"] + 1)
            ys.append(best_auc)
    ax.step(xs, ys, where="post")
    ax.scatter([t["number"] + 1 for t in done], [t["values"]["auc"] for t in done], s=12, c="gray")
    if exp.auc_target is not None:
        ax.axhline(exp.auc_target, ls="--", c="red", lw=1, label="AUC target")
        ax.legend()
    ax.set(xlabel="trials", ylabel="validation AUC", title="best AUC so far")
    fig.tight_layout()
    fig.savefig(out / "best_so_far.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))  # Pareto front
    ax.scatter([t["values"]["train_time"] for t in done], [t["values"]["auc"] for t in done],
               s=14, c="gray", label="trials")
    if len(top) > 1 or len(exp.optimized) > 1:
        front = sorted(top, key=lambda t: t["values"]["train_time"])
        ax.plot([t["values"]["train_time"] for t in front], [t["values"]["auc"] for t in front],
                "o-", c="C1", label="Pareto front")
    ax.set(xlabel="training time (s)", ylabel="validation AUC", title="AUC against time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.4 * len(imp) + 1)))  # importance
    names = list(imp)[::-1]
    ax.barh(names, [imp[n] for n in names])
    ax.set(xlabel="importance (share)", title="parameter importance (AUC)")
    fig.tight_layout()
    fig.savefig(out / "importance.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))  # parallel coordinates
    params = [p for p in exp.parameters if any(p.name in t["assignments"] for t in done)]
    if done and params:
        aucs = np.array([t["values"]["auc"] for t in done])
        lo, hi = aucs.min(), max(aucs.max(), aucs.min() + 1e-9)
        cmap = plt.get_cmap("viridis")
        for t, a in zip(done, aucs):
            pts = [(i, p.unit(t["assignments"][p.name])) for i, p in enumerate(params)
                   if p.name in t["assignments"]]
            ax.plot([x for x, _ in pts], [y for _, y in pts], c=cmap((a - lo) / (hi - lo)),
                    alpha=0.8, marker=".")
        ax.set_xticks(range(len(params)), [p.name for p in params], rotation=20, ha="right",
                      fontsize=7)
        ax.figure.colorbar(plt.cm.ScalarMappable(norm=plt.Normalize(lo, hi), cmap=cmap), ax=ax,
                           label="AUC")
    ax.set(ylabel="position in range", title="parallel coordinates")
    fig.tight_layout()
    fig.savefig(out / "parallel.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))  # learning curves
    for t in trials:
        curve = t.get("curve") or []
        if curve:
            style = {"pruned": ":", "failed": "--"}.get(t.get("status"), "-")
            ax.plot(range(1, len(curve) + 1), curve, style, lw=1)
    ax.set(xlabel="evaluation", ylabel="validation AUC",
           title="learning curves (dotted: pruned, dashed: failed)")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)
