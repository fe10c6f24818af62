"""One trial, in its own process: `python -m dlrmx.tune.trial TRIAL_DIR` trains with the
options in TRIAL_DIR/spec.json, appends each periodic evaluation to curve.jsonl, checks the
pruning rule against the other trials' curves after each one (stopping there if it says so),
and writes result.json: status completed | pruned | failed, the metrics, the curve."""

from __future__ import annotations

import json
import math
import sys
import time
import traceback
from pathlib import Path

from dlrmx.tune.pruning import should_stop


def read_curve(path: Path) -> list[float]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for ln in lines:
        try:
            out.append(float(json.loads(ln)["auc"]))
        except (ValueError, KeyError):
            break  # a line being written
    return out


def main(trial_dir: str) -> int:
    from dlrmx.train import NonFiniteLossError, TrainConfig, run

    here = Path(trial_dir)
    spec = json.loads((here / "spec.json").read_text())
    curve_path = here / "curve.jsonl"
    curve_path.unlink(missing_ok=True)
    curve: list[float] = []
    t0 = time.perf_counter()

    def on_eval(step: int, m: dict) -> bool:
        curve.append(float(m["auc"]))
        with open(curve_path, "a") as f:
            f.write(json.dumps({"step": step, "auc": curve[-1],
                                "seconds": time.perf_counter() - t0}) + "\n")
        others = [read_curve(p / "curve.jsonl") for p in here.parent.iterdir()
                  if p.is_dir() and p != here]
        return should_stop(spec["pruning"], curve, [c for c in others if c])

    result: dict = {"status": "failed", "curve": curve}
    try:
        res = run(TrainConfig.from_dict(spec["config"], where="trial"), on_eval=on_eval)
        auc = res.final.get("val", {}).get("auc", curve[-1] if curve else math.nan)
        if res.stopped == "pruned":
            result.update(status="pruned", auc=curve[-1], train_time=res.train_seconds,
                          steps=res.steps)
        elif not math.isfinite(auc):
            result.update(reason=f"the validation AUC is {auc}")
        else:
            result.update(status="completed", auc=auc, train_time=res.train_seconds,
                          steps=res.steps, oracle_auc=res.oracle_auc)
    except NonFiniteLossError as e:
        result["reason"] = str(e)
    except Exception as e:  # noqa: BLE001 - any error is this trial's failed observation
        result["reason"] = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    tmp = here / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(here / "result.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
