"""A tuning experiment: SigOpt's experiment schema (parameters, conditionals, metrics, budget,
parallel bandwidth, metadata) plus a `dlrmx` block that says how each trial trains. Read from
YAML, checked field by field before any trial runs (errors name the field and the reason),
written back as YAML.

A parameter's name is the `dlrmx.train` option it sets (`learning_rate`), or `OPTION__TAG` for
one of several copies of it (`learning_rate__lamb`, under a condition), or `mlp`: the name of
one of `dlrmx.mlp_presets` (bottom hidden layers + top MLP; the bottom MLP always ends in the
embedding dimension). A conditional's name is an option too (`optimizer`)."""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dlrmx.train.config import TrainConfig, known_key

METRICS = {"auc": "maximize", "train_time": "minimize"}  # what a trial reports
BACKENDS = ("sigoptlite", "optuna", "random", "sigopt")
RULES = ("none", "median", "percentile", "asha")
_SIGOPT_KEYS = ("name", "type", "project", "parameters", "conditionals", "metrics",
                "observation_budget", "parallel_bandwidth", "metadata")
DEFAULTS: dict[str, Any] = {
    "backend": "sigoptlite",
    "seed": 0,
    "train": {},  # dlrmx.train options every trial shares
    "mlp_presets": {},  # name -> {"bottom": "13-512-256", "top": "512-256-1"}
    "trial_timeout": 600.0,  # seconds; a trial still running then is killed and failed
    "threads": 0,  # cores the experiment may use (0: all); each trial gets its share
    "pruning": {"rule": "none", "startup_trials": 3, "warmup_evals": 1, "percentile": 25.0,
                "reduction_factor": 3},
    "optuna": {"sampler": "tpe"},
}


class ExperimentError(ValueError):
    """An experiment file that cannot run: the message names the field and the reason."""


@dataclass
class Parameter:
    name: str
    type: str  # double | int | categorical
    lo: float = 0.0
    hi: float = 0.0
    log: bool = False
    values: list[str] = field(default_factory=list)
    conditions: dict[str, list[str]] = field(default_factory=dict)

    @property
    def option(self) -> str:
        return self.name.split("__", 1)[0]

    def active(self, assignments: dict[str, Any]) -> bool:
        return all(str(assignments.get(k)) in v for k, v in self.conditions.items())

    def sample(self, rng: random.Random) -> Any:
        if self.type == "categorical":
            return rng.choice(self.values)
        if self.type == "int":
            return rng.randint(int(self.lo), int(self.hi))
        if self.log:
            return math.exp(rng.uniform(math.log(self.lo), math.log(self.hi)))
        return rng.uniform(self.lo, self.hi)

    def unit(self, value: Any) -> float:
        """The value on [0, 1] (log scale where transformed; a category's index), for plots."""
        if self.type == "categorical":
            return self.values.index(str(value)) / max(1, len(self.values) - 1)
        lo, hi, v = self.lo, self.hi, float(value)
        if self.log:
            lo, hi, v = math.log(lo), math.log(hi), math.log(v)
        return 0.0 if hi == lo else (v - lo) / (hi - lo)


@dataclass
class Metric:
    name: str
    objective: str
    strategy: str = "optimize"
    threshold: float | None = None


@dataclass
class Experiment:
    raw: dict[str, Any]
    parameters: list[Parameter]
    conditionals: dict[str, list[str]]
    metrics: list[Metric]
    budget: int
    parallel: int
    settings: dict[str, Any]

    @property
    def optimized(self) -> list[Metric]:
        return [m for m in self.metrics if m.strategy == "optimize"]

    @property
    def auc_target(self) -> float | None:
        return next((m.threshold for m in self.metrics if m.name == "auc"), None)

    def sigopt_body(self, lite: bool) -> dict[str, Any]:
        """What SigOpt's `experiments().create` takes (sigoptlite: no metadata, no project,
        parallel bandwidth 1; dlrmx runs the parallel trials itself)."""
        body = {k: copy.deepcopy(self.raw[k]) for k in _SIGOPT_KEYS if k in self.raw}
        body.pop("type", None)
        if lite:
            for k in ("metadata", "project"):
                body.pop(k, None)
            body["parallel_bandwidth"] = 1
        return body

    def active(self, assignments: dict[str, Any]) -> dict[str, Any]:
        """The assignments of the conditionals and the parameters their conditions enable."""
        out = {k: str(assignments[k]) for k in self.conditionals if k in assignments}
        for p in self.parameters:
            if p.name in assignments and p.active(out):
                out[p.name] = assignments[p.name]
        return out

    def sample(self, rng: random.Random) -> dict[str, Any]:
        out: dict[str, Any] = {k: rng.choice(v) for k, v in self.conditionals.items()}
        for p in self.parameters:
            if p.active(out):
                out[p.name] = p.sample(rng)
        return out

    def trial_config(self, assignments: dict[str, Any]) -> dict[str, Any]:
        """The dlrmx.train options of one trial: the shared `train` ones, then the assignments."""
        cfg = dict(self.settings["train"])
        mlp = None
        for name, value in self.active(assignments).items():
            if name == "mlp":
                mlp = self.settings["mlp_presets"][str(value)]
            else:
                cfg[name.split("__", 1)[0]] = value
        dim = int(TrainConfig.from_dict(cfg, where="trial").arch_sparse_feature_size)
        if mlp is not None:
            cfg["arch_mlp_bot"], cfg["arch_mlp_top"] = f"{mlp['bottom']}-{dim}", mlp["top"]
        elif "arch_sparse_feature_size" in assignments:  # the bottom MLP ends in the dim
            bot = str(cfg.get("arch_mlp_bot", TrainConfig().arch_mlp_bot)).split("-")
            cfg["arch_mlp_bot"] = "-".join(bot[:-1] + [str(dim)])
        return cfg


# ---------------------------------------------------------------------------------- reading

def load(path: str | Path) -> Experiment:
    path = Path(path)
    if not path.is_file():
        raise ExperimentError(f"{path}: no such experiment file (write one with "
                              "`python -m dlrmx.tune init`)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ExperimentError(f"{path}: not valid YAML ({e})") from None
    return parse(raw, str(path))


def dump(exp: Experiment | dict[str, Any], path: str | Path) -> None:
    raw = exp.raw if isinstance(exp, Experiment) else exp
    Path(path).write_text(yaml.safe_dump(raw, sort_keys=False, width=100))


def _err(where: str, msg: str) -> ExperimentError:
    return ExperimentError(f"{where}: {msg}")


def _num(x: Any, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise _err(where, f"must be a finite number, got {x!r}")
    return float(x)


def _int(x: Any, where: str, lo: int = 1) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < lo:
        raise _err(where, f"must be an integer >= {lo}, got {x!r}")
    return x


def parse(raw: Any, where: str = "experiment") -> Experiment:
    if not isinstance(raw, dict):
        raise _err(where, f"must be a mapping of SigOpt experiment fields, got {type(raw).__name__}")
    unknown = [k for k in raw if k not in _SIGOPT_KEYS + ("dlrmx",)]
    if unknown:
        raise _err(f"{where}.{unknown[0]}", f"unknown field (known: {', '.join(_SIGOPT_KEYS)}, dlrmx)")
    if not isinstance(raw.get("name"), str) or not raw["name"]:
        raise _err(f"{where}.name", "required: a non-empty string")
    settings = _settings(raw.get("dlrmx", {}), f"{where}.dlrmx")
    conds = _conditionals(raw.get("conditionals", []), f"{where}.conditionals")
    params = _parameters(raw.get("parameters"), conds, settings, f"{where}.parameters")
    metrics = _metrics(raw.get("metrics"), f"{where}.metrics")
    budget = _int(raw.get("observation_budget"), f"{where}.observation_budget")
    parallel = _int(raw.get("parallel_bandwidth", 1), f"{where}.parallel_bandwidth")
    if "metadata" in raw and not isinstance(raw["metadata"], dict):
        raise _err(f"{where}.metadata", "must be a mapping")
    exp = Experiment(raw, params, conds, metrics, budget, parallel, settings)
    try:  # the options every trial shares: a typo fails here, not in every trial
        TrainConfig.from_dict(settings["train"], where="trial").validate()
    except (ValueError, KeyError) as e:
        raise _err(f"{where}.dlrmx.train", f"a trial's dlrmx.train options are invalid: {e}") from None
    return exp


def _settings(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _err(where, "must be a mapping")
    unknown = [k for k in raw if k not in DEFAULTS]
    if unknown:
        raise _err(f"{where}.{unknown[0]}", f"unknown field (known: {', '.join(DEFAULTS)})")
    out = copy.deepcopy(DEFAULTS)
    for k, v in raw.items():
        if isinstance(out[k], dict) and k not in ("train", "mlp_presets"):
            if not isinstance(v, dict):
                raise _err(f"{where}.{k}", "must be a mapping")
            bad = [x for x in v if x not in out[k]]
            if bad:
                raise _err(f"{where}.{k}.{bad[0]}", f"unknown field (known: {', '.join(out[k])})")
            out[k].update(v)
        else:
            out[k] = v
    if out["backend"] not in BACKENDS:
        raise _err(f"{where}.backend", f"unknown backend {out['backend']!r} (choose one of "
                   f"{', '.join(BACKENDS)})")
    if out["pruning"]["rule"] not in RULES:
        raise _err(f"{where}.pruning.rule", f"must be one of {', '.join(RULES)}, got "
                   f"{out['pruning']['rule']!r}")
    if out["optuna"]["sampler"] not in ("tpe", "gp", "random"):
        raise _err(f"{where}.optuna.sampler", "must be tpe, gp or random")
    if not 0 < _num(out["pruning"]["percentile"], f"{where}.pruning.percentile") < 100:
        raise _err(f"{where}.pruning.percentile", "must be in (0, 100)")
    _int(out["pruning"]["reduction_factor"], f"{where}.pruning.reduction_factor", 2)
    _int(out["pruning"]["startup_trials"], f"{where}.pruning.startup_trials", 0)
    _int(out["pruning"]["warmup_evals"], f"{where}.pruning.warmup_evals", 0)
    if _num(out["trial_timeout"], f"{where}.trial_timeout") <= 0:
        raise _err(f"{where}.trial_timeout", "must be > 0 seconds")
    _int(out["threads"], f"{where}.threads", 0)
    if not isinstance(out["train"], dict):
        raise _err(f"{where}.train", "must be a mapping of dlrmx.train options")
    for name, preset in out["mlp_presets"].items():
        if not (isinstance(preset, dict) and set(preset) == {"bottom", "top"}):
            raise _err(f"{where}.mlp_presets.{name}", "must be {bottom: '13-...', top: '...-1'}")
    return out


def _conditionals(raw: Any, where: str) -> dict[str, list[str]]:
    if not isinstance(raw, list):
        raise _err(where, "must be a list")
    out = {}
    for i, c in enumerate(raw):
        w = f"{where}[{i}]"
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise _err(w, "must be {name: OPTION, values: [...]}")
        vals = c.get("values")
        if not isinstance(vals, list) or len(vals) < 2:
            raise _err(f"{w}.values", "must list at least two values")
        out[c["name"]] = [str(v) for v in vals]
    return out


def _parameters(raw: Any, conds: dict[str, list[str]], settings: dict[str, Any],
                where: str) -> list[Parameter]:
    if not isinstance(raw, list) or not raw:
        raise _err(where, "required: a non-empty list")
    out, names = [], set(conds)
    for i, p in enumerate(raw):
        w = f"{where}[{i}]"
        if not isinstance(p, dict):
            raise _err(w, "must be a mapping")
        name, kind = p.get("name"), p.get("type")
        if not isinstance(name, str) or not name:
            raise _err(f"{w}.name", "required: a string")
        if name in names:
            raise _err(f"{w}.name", f"{name!r} is defined twice")
        names.add(name)
        if kind not in ("double", "int", "categorical"):
            raise _err(f"{w}.type", f"must be double, int or categorical, got {kind!r}")
        param = Parameter(name, kind)
        if kind == "categorical":
            vals = p.get("categorical_values")
            if not isinstance(vals, list) or len(vals) < 2:
                raise _err(f"{w}.categorical_values", "must list at least two values")
            param.values = [str(v["name"] if isinstance(v, dict) else v) for v in vals]
            if name == "mlp":
                missing = [v for v in param.values if v not in settings["mlp_presets"]]
                if missing:
                    raise _err(f"{w}.categorical_values", f"{missing[0]!r} is not in "
                               "dlrmx.mlp_presets")
        else:
            b = p.get("bounds")
            if not isinstance(b, dict):
                raise _err(f"{w}.bounds", "required for a double or int: {min: ..., max: ...}")
            param.lo, param.hi = _num(b.get("min"), f"{w}.bounds.min"), _num(b.get("max"), f"{w}.bounds.max")
            if kind == "int" and not (param.lo.is_integer() and param.hi.is_integer()):
                raise _err(f"{w}.bounds", "an int's bounds must be integers")
            if param.lo >= param.hi:
                raise _err(f"{w}.bounds", f"min must be below max (got {b.get('min')} >= {b.get('max')})")
            if p.get("transformation") not in (None, "none", "log"):
                raise _err(f"{w}.transformation", "must be log or none")
            param.log = p.get("transformation") == "log"
            if param.log and (kind != "double" or param.lo <= 0):
                raise _err(f"{w}.transformation", "log applies to a double with min > 0")
        conditions = p.get("conditions", {})
        if not isinstance(conditions, dict):
            raise _err(f"{w}.conditions", "must map a conditional to its values")
        for c, v in conditions.items():
            if c not in conds:
                raise _err(f"{w}.conditions.{c}", "is not one of the experiment's conditionals")
            vals = [str(x) for x in (v if isinstance(v, list) else [v])]
            bad = [x for x in vals if x not in conds[c]]
            if bad:
                raise _err(f"{w}.conditions.{c}", f"{bad[0]!r} is not a value of {c}")
            param.conditions[c] = vals
        if name != "mlp":
            try:
                known_key(param.option, f"{w}.name")
            except ValueError as e:
                raise ExperimentError(f"{e} (a parameter names the dlrmx.train option it sets)") from None
        out.append(param)
    return out


def _metrics(raw: Any, where: str) -> list[Metric]:
    if not isinstance(raw, list) or not raw:
        raise _err(where, "required: a non-empty list")
    out = []
    for i, m in enumerate(raw):
        w = f"{where}[{i}]"
        if not isinstance(m, dict):
            raise _err(w, "must be a mapping")
        name = m.get("name")
        if name not in METRICS:
            raise _err(f"{w}.name", f"a trial reports {', '.join(METRICS)}; got {name!r}")
        objective = m.get("objective", METRICS[name])
        if objective != METRICS[name]:
            raise _err(f"{w}.objective", f"{name} is to {METRICS[name]}, got {objective!r}")
        strategy = m.get("strategy", "optimize")
        if strategy not in ("optimize", "constraint"):
            raise _err(f"{w}.strategy", "must be optimize or constraint")
        threshold = m.get("threshold")
        if threshold is not None:
            threshold = _num(threshold, f"{w}.threshold")
        if strategy == "constraint" and threshold is None:
            raise _err(f"{w}.threshold", "a constraint metric needs a threshold")
        out.append(Metric(name, objective, strategy, threshold))
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise _err(where, "a metric is listed twice")
    optimized = [m for m in out if m.strategy == "optimize"]
    if not 1 <= len(optimized) <= 2:
        raise _err(where, "needs one or two metrics with strategy optimize")
    if len(optimized) == 1 and optimized[0].threshold is not None:
        raise _err(where, "SigOpt takes a threshold only with two optimized metrics: optimize "
                   "train_time too, or drop the threshold")
    return out
