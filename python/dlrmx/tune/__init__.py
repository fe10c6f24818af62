"""Hyperparameter tuning of DLRMs, offline: `python -m dlrmx.tune init | run | report`.

experiment.py (SigOpt's experiment schema + how trials train), advisor.py (the ranges that work,
with their sources), backends.py (sigoptlite, optuna, random, sigopt), runner.py (the loop,
parallel trials, persistence and resume), trial.py (one trial's process), pruning.py (median,
percentile, ASHA), report.py (best assignments, Pareto set, plots). Only the backends need the
`tune` extra; nothing else in dlrmx imports this package."""
