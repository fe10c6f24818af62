"""python -m dlrmx.tune init | run | report (see README, 'Tuning')."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dlrmx.tune.experiment import BACKENDS, RULES, ExperimentError, dump


def _init(a: argparse.Namespace) -> None:
    from dlrmx.tune import advisor

    if a.model != "dlrm":
        raise ExperimentError(f"--model {a.model!r}: the advisor knows dlrm")
    train = ({"data_generation": "dataset", "processed_data_file": a.data} if a.data else
             {"data_generation": "synthetic", "synthetic_preset": a.synthetic_preset,
              "synthetic_scale": a.synthetic_scale, "eval_samples": a.eval_samples})
    optimizers = [o.strip() for o in a.optimizer.split(",") if o.strip()]
    steps = a.trial_steps
    if steps <= 0:  # the time budget -> steps per trial, from a short run here
        slots = max(1, advisor.cores() // a.parallel)
        rate = advisor.measure_steps_per_second({**train, "optimizer": optimizers[0],
                                                 "threads": slots}, a.batch)
        seconds = 60 * a.budget_minutes * a.parallel / a.trials
        steps = max(20, int(0.6 * rate * seconds))  # the rest: start-up and evaluations
        print(f"{rate:.1f} steps/s here at batch {a.batch}: {a.trials} trials in "
              f"{a.budget_minutes:g} min on {a.parallel} slot(s) -> {steps} steps per trial")
    exp = advisor.advise(name=a.name or Path(a.output).stem, optimizers=optimizers, steps=steps,
                         batch=a.batch, train=train, trials=a.trials, parallel=a.parallel,
                         auc_target=a.auc_target, backend=a.backend, metrics=a.metrics,
                         pruning=a.pruning, seed=a.seed, tune_dim=not a.fixed_dim,
                         tune_mlp=not a.fixed_mlp, trial_timeout=a.trial_timeout)
    dump(exp, a.output)
    print(f"wrote {a.output}: {len(exp['parameters'])} parameters, {a.trials} trials; run it "
          f"with: python -m dlrmx.tune run {a.output}")


def _run(a: argparse.Namespace) -> None:
    from dlrmx.tune import report, runner

    exp, d = runner.prepare(a.experiment, a.dir)
    name = a.backend or exp.settings["backend"]
    print(f"experiment {exp.raw['name']} in {d}: backend {name}, {exp.budget} trials, "
          f"{exp.parallel} at a time")
    runner.Runner(exp, d, a.backend, quiet=a.quiet).run()
    print(report.write(d).split("\n\n")[0])
    print(f"report: python -m dlrmx.tune report {d}")


def _report(a: argparse.Namespace) -> None:
    from dlrmx.tune import report

    print(report.write(a.dir))
    print(f"plots in {Path(a.dir) / 'report'}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dlrmx.tune", description=(
        "Tune a DLRM offline: `init` writes an experiment (SigOpt's schema) from what is known "
        "to work, `run` optimizes it with SigOpt's engine (sigoptlite), Optuna or random "
        "search, `report` shows the best assignments and plots."))
    sub = p.add_subparsers(dest="command", required=True)
    i = sub.add_parser("init", help="write an experiment file (the advisor)")
    i.add_argument("-o", "--output", default="experiment.yaml")
    i.add_argument("--name", default="")
    i.add_argument("--model", default="dlrm")
    i.add_argument("--data", default="", help="a processed dataset directory (default: synthetic)")
    i.add_argument("--synthetic-preset", default="kaggle")
    i.add_argument("--synthetic-scale", type=float, default=0.001)
    i.add_argument("--eval-samples", type=int, default=20_000)
    i.add_argument("--optimizer", default="sgd",
                   help="one, or a comma list to choose among (a conditional): sgd,lamb")
    i.add_argument("--batch", type=int, default=1024, help="training batch of every trial")
    i.add_argument("--budget-minutes", type=float, default=30.0,
                   help="wall time for the whole experiment, to size each trial")
    i.add_argument("--trials", type=int, default=20, help="observation budget")
    i.add_argument("--parallel", type=int, default=1, help="trials at a time (parallel_bandwidth)")
    i.add_argument("--trial-steps", type=int, default=0,
                   help="training steps per trial (0: from --budget-minutes, measured here)")
    i.add_argument("--auc-target", type=float, default=None,
                   help="a threshold on AUC (with two metrics)")
    i.add_argument("--metrics", default="auc,train_time", help="auc, or auc,train_time")
    i.add_argument("--backend", default="sigoptlite", choices=BACKENDS)
    i.add_argument("--pruning", default="median", choices=RULES)
    i.add_argument("--trial-timeout", type=float, default=600.0)
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--fixed-dim", action="store_true", help="do not tune the embedding dimension")
    i.add_argument("--fixed-mlp", action="store_true", help="do not tune the MLP shapes")
    i.set_defaults(fn=_init)
    r = sub.add_parser("run", help="run (or resume) an experiment")
    r.add_argument("experiment")
    r.add_argument("--dir", default=None, help="experiment directory (default: the file's name)")
    r.add_argument("--backend", default=None, choices=BACKENDS, help="override dlrmx.backend")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(fn=_run)
    s = sub.add_parser("report", help="best assignments, table and plots of an experiment")
    s.add_argument("dir")
    s.set_defaults(fn=_report)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        a.fn(a)
    except (ExperimentError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
