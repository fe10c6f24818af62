"""PNG plots of a run's metrics.jsonl (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path


def plot_run(run_dir: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
               if line.strip()]
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    out = []
    if train:
        loss = _loss_name(run_dir)
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label=f"train ({loss})")
        ax.set(xlabel="step", ylabel=f"training loss ({loss})",
               title=f"Training loss ({loss}, mean per logged window)")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(run_dir / "loss.png", dpi=100)
        plt.close(fig)
        out.append(run_dir / "loss.png")
    if evals:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        for i, split in enumerate(sorted({r["split"] for r in evals})):
            rs = [r for r in evals if r["split"] == split]
            color = f"C{i}"  # a split's curve and its oracle line share one colour
            a1.plot([r["step"] for r in rs], [r["auc"] for r in rs], marker="o", color=color,
                    label=split)
            a2.plot([r["step"] for r in rs], [r["logloss"] for r in rs], marker="o", color=color,
                    label=split)
            oracle = [r["oracle_auc"] for r in rs if r.get("oracle_auc") is not None]
            if oracle:
                a1.axhline(oracle[-1], ls=("--", ":")[i % 2], color=color,
                           label=f"oracle AUC ({split}): {oracle[-1]:.4f}")
        a1.set(xlabel="step", ylabel="AUC", title="Eval AUC")
        a2.set(xlabel="step", ylabel="log loss", title="Eval log loss")
        for a in (a1, a2):
            a.grid(alpha=0.3)
            a.legend()
        fig.tight_layout()
        fig.savefig(run_dir / "eval.png", dpi=100)
        plt.close(fig)
        out.append(run_dir / "eval.png")
    return out


_LOSS_NAMES = {"bce": "BCE", "mse": "MSE", "wbce": "weighted BCE"}


def _loss_name(run_dir: Path) -> str:
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return "loss"
    return _LOSS_NAMES.get(cfg.get("loss_function"), str(cfg.get("loss_function", "loss")))
