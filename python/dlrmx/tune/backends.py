"""The optimizers that suggest trials, all reading the same experiment:

- `sigoptlite` (default): SigOpt's own engine offline (random start, then a Gaussian process with
  expected improvement; thresholds as probability of feasibility), through the `sigopt` client's
  Connection API with sigoptlite's in-memory driver. It holds one open suggestion and no state
  on disk, so every suggestion comes from a fresh in-memory experiment that replays the finished
  observations and, for trials still running, a "constant liar": their assignments observed at
  the worst value seen so far. The running points then look bad to the GP, so a parallel slot is
  never given the point another slot is training (Ginsbourger et al. 2010).
- `optuna`: Optuna's TPE (its defaults: multivariate, constant liar) or GP sampler, one
  objective or two (AUC and time), the AUC target as a constraint (`Trial.set_constraint`).
- `random`: uniform sampling (log-uniform where transformed), seeded per trial.
- `sigopt`: a SigOpt-compatible server at SIGOPT_API_URL with SIGOPT_API_TOKEN; the server keeps
  the experiment (its id in the experiment directory) and hands out parallel suggestions.

A pruned trial is a failed observation for SigOpt (its way of marking a region not worth
sampling), TrialState.PRUNED for Optuna. A backend is rebuilt from the history on resume."""

from __future__ import annotations

import json
import os
import random
import warnings
from pathlib import Path
from typing import Any

from dlrmx.tune.experiment import Experiment, ExperimentError

_EXTRA = "install the tune extra: bash ci/setup.sh does (README, 'Tuning')"


def sigopt_connection(**kwargs):
    """The sigopt 8.8.3 client, with the one shim its offline engine needs: libsigopt 1.0.0
    calls numpy.product, which numpy 2 removed (same function as numpy.prod). The install
    pins are in ci/setup.sh and pyproject.toml's `tune` extra."""
    import numpy

    if not hasattr(numpy, "product"):
        numpy.product = numpy.prod
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"qmcpy.*")
    try:
        from sigopt import Connection
    except ImportError:
        raise ExperimentError(f"the sigopt backends need the sigopt client: {_EXTRA}") from None
    return Connection(**kwargs)


def _values(exp: Experiment, trial: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": m.name, "value": float(trial["values"][m.name])} for m in exp.metrics]


class Backend:
    name = ""

    def __init__(self, exp: Experiment, directory: Path) -> None:
        self.exp, self.dir = exp, directory

    def replay(self, trials: list[dict[str, Any]]) -> None:
        """The finished trials of an earlier run of this experiment, in order."""
        for t in trials:
            self.observe(t)

    def suggest(self, number: int, running: list[dict[str, Any]]) -> tuple[dict[str, Any], Any]:
        """(assignments, token) for trial `number`, given the trials still running."""
        raise NotImplementedError

    def resume(self, trial: dict[str, Any]) -> Any:
        """A trial suggested before an interruption runs again: its new token."""
        return trial.get("token")

    def observe(self, trial: dict[str, Any]) -> None:
        raise NotImplementedError


class RandomBackend(Backend):
    name = "random"

    def suggest(self, number, running):
        rng = random.Random(self.exp.settings["seed"] * 1_000_003 + number)
        return self.exp.sample(rng), None

    def observe(self, trial):
        pass


class SigoptLite(Backend):
    name = "sigoptlite"

    def __init__(self, exp, directory):
        super().__init__(exp, directory)
        self.done: list[dict[str, Any]] = []
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"qmcpy.*")
        try:
            import sigoptlite  # noqa: F401
        except ImportError:
            raise ExperimentError(f"backend sigoptlite needs sigoptlite: {_EXTRA}") from None
        import numpy

        numpy.random.seed(exp.settings["seed"])  # the engine draws from numpy's global stream

    def observe(self, trial):
        self.done.append(trial)

    def _observation(self, trial: dict[str, Any], values: dict[str, float] | None = None):
        obs: dict[str, Any] = {"assignments": trial["assignments"]}
        if values is None and trial["status"] != "completed":
            obs["failed"] = True
        else:
            v = values or trial["values"]
            obs["values"] = [{"name": m.name, "value": float(v[m.name])} for m in self.exp.metrics]
        return obs

    def suggest(self, number, running):
        conn = sigopt_connection(driver="lite")
        e = conn.experiments().create(**self.exp.sigopt_body(lite=True))
        for t in self.done:
            conn.experiments(e.id).observations().create(**self._observation(t))
        good = [t["values"] for t in self.done if t["status"] == "completed"]
        if running and good:  # the constant liar: the worst value of each metric
            lie = {m.name: (min if m.objective == "maximize" else max)(v[m.name] for v in good)
                   for m in self.exp.metrics}
            for t in running:
                conn.experiments(e.id).observations().create(**self._observation(t, lie))
        s = conn.experiments(e.id).suggestions().create()
        return dict(s.assignments), None


class SigoptServer(SigoptLite):
    name = "sigopt"

    def __init__(self, exp, directory):  # noqa: D401 - no sigoptlite needed
        Backend.__init__(self, exp, directory)
        token, url = os.environ.get("SIGOPT_API_TOKEN"), os.environ.get("SIGOPT_API_URL")
        if not token:
            raise ExperimentError("backend sigopt needs SIGOPT_API_TOKEN (and SIGOPT_API_URL for "
                                  "a self-hosted server); for no server use backend sigoptlite")
        self.conn = sigopt_connection(client_token=token)
        if url:
            self.conn.set_api_url(url)
        ref = directory / "sigopt_experiment.json"
        if ref.exists():
            self.id = json.loads(ref.read_text())["id"]
        else:
            self.id = self.conn.experiments().create(**self.exp.sigopt_body(lite=False)).id
            ref.write_text(json.dumps({"id": self.id, "url": url}))

    def replay(self, trials):
        pass  # the server has them

    def suggest(self, number, running):
        s = self.conn.experiments(self.id).suggestions().create()
        return dict(s.assignments), s.id

    def observe(self, trial):
        obs = self._observation(trial)
        del obs["assignments"]
        self.conn.experiments(self.id).observations().create(suggestion=trial["token"], **obs)


class OptunaBackend(Backend):
    name = "optuna"

    def __init__(self, exp, directory):
        super().__init__(exp, directory)
        try:
            import optuna
        except ImportError:
            raise ExperimentError(f"backend optuna needs optuna: {_EXTRA}") from None
        self.optuna = optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        seed = exp.settings["seed"]
        kind = exp.settings["optuna"]["sampler"]
        sampler = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed),
                   "gp": lambda: optuna.samplers.GPSampler(seed=seed),
                   "random": lambda: optuna.samplers.RandomSampler(seed=seed)}[kind]()
        self.study = optuna.create_study(
            directions=[m.objective for m in exp.optimized], sampler=sampler)
        self.open: dict[int, Any] = {}

    def _distributions(self, assignments: dict[str, Any]) -> dict[str, Any]:
        d = self.optuna.distributions
        out = {c: d.CategoricalDistribution(v) for c, v in self.exp.conditionals.items()
               if c in assignments}
        for p in self.exp.parameters:
            if p.name not in assignments:
                continue
            if p.type == "categorical":
                out[p.name] = d.CategoricalDistribution(p.values)
            elif p.type == "int":
                out[p.name] = d.IntDistribution(int(p.lo), int(p.hi))
            else:
                out[p.name] = d.FloatDistribution(p.lo, p.hi, log=p.log)
        return out

    def _constraints(self, trial: dict[str, Any]) -> dict[str, float]:
        target = self.exp.auc_target
        if target is None or trial["status"] != "completed":
            return {}
        return {"auc_target": target - float(trial["values"]["auc"])}  # feasible when <= 0

    def _ask(self, number: int) -> dict[str, Any]:
        t = self.study.ask()
        out: dict[str, Any] = {c: t.suggest_categorical(c, v) for c, v in self.exp.conditionals.items()}
        for p in self.exp.parameters:
            if not p.active(out):
                continue
            if p.type == "categorical":
                out[p.name] = t.suggest_categorical(p.name, p.values)
            elif p.type == "int":
                out[p.name] = t.suggest_int(p.name, int(p.lo), int(p.hi))
            else:
                out[p.name] = t.suggest_float(p.name, p.lo, p.hi, log=p.log)
        self.open[number] = t
        return out

    def suggest(self, number, running):
        return self._ask(number), None

    def resume(self, trial):
        self.study.enqueue_trial(trial["assignments"])
        self._ask(trial["number"])
        return None

    def replay(self, trials):
        state = self.optuna.trial.TrialState
        for t in trials:
            done = t["status"] == "completed"
            self.study.add_trial(self.optuna.trial.create_trial(
                state={"completed": state.COMPLETE, "pruned": state.PRUNED}.get(t["status"], state.FAIL),
                values=[float(t["values"][m.name]) for m in self.exp.optimized] if done else None,
                params=t["assignments"], distributions=self._distributions(t["assignments"]),
                constraints=self._constraints(t) or None))

    def observe(self, trial):
        t = self.open.pop(trial["number"])
        state = self.optuna.trial.TrialState
        for k, v in self._constraints(trial).items():
            t.set_constraint(k, v)
        if trial["status"] == "completed":
            self.study.tell(t, [float(trial["values"][m.name]) for m in self.exp.optimized])
        else:
            self.study.tell(t, state=state.PRUNED if trial["status"] == "pruned" else state.FAIL)


def make(exp: Experiment, directory: Path, name: str | None = None) -> Backend:
    name = name or exp.settings["backend"]
    kinds = {k.name: k for k in (SigoptLite, OptunaBackend, RandomBackend, SigoptServer)}
    if name not in kinds:
        raise ExperimentError(f"unknown backend {name!r}: choose one of {', '.join(kinds)}")
    return kinds[name](exp, directory)
