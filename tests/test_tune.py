"""python -m dlrmx.tune: the advisor's files, schema errors, the pruning rules, and real small
experiments (trials of a few seconds, each its own process) on sigoptlite, Optuna and random
search, with pruning, parallel trials, a failed trial and kill-and-resume."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from dlrmx.tune import advisor, report
from dlrmx.tune.__main__ import main as tune_main
from dlrmx.tune.experiment import ExperimentError, dump, load, parse
from dlrmx.tune.pruning import should_stop
from dlrmx.tune.runner import History, Runner, prepare

TRAIN = {"synthetic_scale": 0.0002, "eval_samples": 2000, "arch_mlp_bot": "13-16-8",
         "arch_sparse_feature_size": 8, "arch_mlp_top": "16-1"}


def _experiment(tmp_path, backend="random", trials=3, parallel=2, **dlrmx):
    exp = advisor.advise(name="t", optimizers=["sgd"], steps=30, batch=128, train=TRAIN,
                         trials=trials, parallel=parallel, auc_target=0.5, backend=backend,
                         tune_dim=False, tune_mlp=False)
    exp["dlrmx"].update(dlrmx)
    path = tmp_path / "exp.yaml"
    dump(exp, path)
    return path


def _observed(d):
    return [e for e in History(d).events if e["event"] == "observe"]


# ---- files and schema ---------------------------------------------------------------------

def test_init_writes_a_valid_experiment_that_round_trips(tmp_path):
    out = tmp_path / "e.yaml"
    assert tune_main(["init", "-o", str(out), "--trial-steps", "200", "--optimizer", "sgd,lamb",
                      "--auc-target", "0.78", "--batch", "2048", "--parallel", "2"]) == 0
    raw = yaml.safe_load(out.read_text())
    exp = load(out)
    assert exp.raw == raw and exp.parallel == 2 and exp.auc_target == 0.78
    assert exp.conditionals == {"optimizer": ["sgd", "lamb"]}
    lr = {p.name: p for p in exp.parameters}
    # LAMB's range a decade below SGD's; SGD's through the reference's lr 1.0 at batch 2048
    assert lr["learning_rate__sgd"].lo <= 1.0 <= lr["learning_rate__sgd"].hi
    assert lr["learning_rate__lamb"].hi == pytest.approx(lr["learning_rate__sgd"].hi / 10, rel=0.01)
    assert lr["learning_rate__lamb"].conditions == {"optimizer": ["lamb"]}
    # warm-up always ends before the decay starts
    assert lr["lr_num_warmup_steps"].hi < lr["lr_decay_start_step"].lo
    dump(exp, tmp_path / "again.yaml")
    assert load(tmp_path / "again.yaml").raw == raw
    cfg = exp.trial_config({"optimizer": "lamb", "learning_rate__lamb": 0.01, "learning_rate__sgd": 9,
                            "mlp": "small", "arch_sparse_feature_size": "32",
                            "lr_num_warmup_steps": 1, "lr_decay_start_step": 80,
                            "lr_num_decay_steps": 100})
    assert cfg["optimizer"] == "lamb" and cfg["learning_rate"] == 0.01  # sgd's copy inactive
    assert cfg["arch_mlp_bot"] == "13-64-32" and cfg["arch_mlp_top"] == "64-1"


@pytest.mark.parametrize("edit,message", [
    (lambda e: e.pop("observation_budget"), r"observation_budget: must be an integer >= 1"),
    (lambda e: e["parameters"][0]["bounds"].update(min=5), r"parameters\[0\]\.bounds: min must be below max"),
    (lambda e: e["parameters"][0].update(name="learnig_rate"), r"did you mean 'learning_rate'"),
    (lambda e: e["parameters"][1].update(type="float"), r"parameters\[1\]\.type: must be double, int or categorical"),
    (lambda e: e["metrics"].append({"name": "loss"}), r"metrics\[2\]\.name: a trial reports auc, train_time"),
    (lambda e: e["metrics"].pop(1), r"takes a threshold only with two optimized metrics"),
    (lambda e: e["dlrmx"].update(backend="hyperopt"), r"dlrmx\.backend: unknown backend 'hyperopt'"),
    (lambda e: e["dlrmx"]["pruning"].update(rule="hyperband"), r"dlrmx\.pruning\.rule: must be one of"),
    (lambda e: e["dlrmx"]["train"].update(mini_batch_size=0), r"dlrmx\.train: .*--mini-batch-size must be >= 1"),
    (lambda e: e["parameters"][0].update(conditions={"optimizer": ["sgd"]}), r"conditions\.optimizer: is not one of the experiment's conditionals"),
    (lambda e: e.update(paralel_bandwidth=2), r"experiment\.paralel_bandwidth: unknown field"),
])
def test_invalid_experiments_name_the_field_and_the_reason(tmp_path, edit, message):
    exp = yaml.safe_load(_experiment(tmp_path).read_text())
    edit(exp)
    with pytest.raises(ExperimentError, match=message):
        parse(exp)


def test_cli_errors_before_any_trial(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nparameters: [}\n")
    assert tune_main(["run", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert tune_main(["run", str(tmp_path / "none.yaml")]) == 2
    assert "no such experiment file" in capsys.readouterr().err
    monkeypatch.delenv("SIGOPT_API_TOKEN", raising=False)
    assert tune_main(["run", str(_experiment(tmp_path)), "--backend", "sigopt"]) == 2
    assert "needs SIGOPT_API_TOKEN" in capsys.readouterr().err
    assert not (tmp_path / "exp" / "trials" / "0000").exists()


# ---- pruning rules ------------------------------------------------------------------------

RULE = {"rule": "median", "startup_trials": 3, "warmup_evals": 1, "percentile": 25.0,
        "reduction_factor": 3}


def test_pruning_rules():
    peers = [[0.70, 0.74, 0.76], [0.69, 0.73, 0.75], [0.71, 0.75, 0.77], [0.60, 0.62, 0.63]]
    med = dict(RULE)
    assert not should_stop(med, [0.5], peers)  # the warm-up evaluation never stops
    assert should_stop(med, [0.5, 0.70], peers)  # below the peers' median at evaluation 2
    assert not should_stop(med, [0.5, 0.745], peers)
    assert not should_stop(med, [0.5, 0.1], peers[:2])  # fewer than startup_trials peers
    pct = dict(RULE, rule="percentile", percentile=25.0)
    assert not should_stop(pct, [0.5, 0.71], peers) and should_stop(pct, [0.5, 0.69], peers)  # q25 0.7025
    asha = dict(RULE, rule="asha")
    assert not should_stop(asha, [0.5, 0.1], peers)  # evaluation 2 is no rung (rungs 3, 9, ...)
    assert should_stop(asha, [0.5, 0.6, 0.74], peers)  # not in the top third at rung 3
    assert not should_stop(asha, [0.5, 0.6, 0.78], peers)
    assert should_stop(dict(RULE, warmup_evals=5), [math.nan], [])  # NaN stops, even in warm-up


# ---- real experiments ---------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["sigoptlite", "optuna"])
def test_experiment_runs_end_to_end_with_parallel_trials(tmp_path, backend):
    """Three trials, two at a time, then the report: values, Pareto set, plots."""
    exp, d = prepare(_experiment(tmp_path, backend, trials=3, parallel=2), None)
    trials = Runner(exp, d, quiet=True).run()
    assert [t["number"] for t in trials] == [0, 1, 2]
    assert all(t["status"] == "completed" and 0.5 < t["values"]["auc"] <= 1 for t in trials), trials
    assert all(len(t["curve"]) >= 4 for t in trials)  # test_freq = steps / 5: the learning curves
    assert len({json.dumps(t["assignments"], sort_keys=True) for t in trials}) == 3  # distinct
    # parallel: trial 1 was suggested before trial 0 was observed
    events = [(e["event"], e["number"]) for e in History(d).events]
    assert events.index(("suggest", 1)) < events.index(("observe", 0))
    text = report.write(d)
    front = report.best(exp, trials)  # no trial of the front dominated by another trial
    assert front and "Pareto set" in text and all(f"trial {t['number']}:" in text for t in front)
    for t in front:
        assert not any(o["values"]["auc"] > t["values"]["auc"] and
                       o["values"]["train_time"] < t["values"]["train_time"] for o in trials)
    for png in ("best_so_far", "pareto", "importance", "parallel", "curves"):
        assert (d / "report" / f"{png}.png").stat().st_size > 1000


def test_pruning_stops_a_planted_bad_trial(tmp_path):
    """A trial with a learning rate of 1e-7 (barely trains) against three good peers' curves:
    the median rule stops it at its second evaluation; the runner records it as pruned."""
    path = _experiment(tmp_path, "random", trials=1, parallel=1,
                       pruning=dict(RULE, startup_trials=3))
    exp, d = prepare(path, None)
    for i, auc in enumerate((0.70, 0.71, 0.72)):  # planted peers
        peer = d / "trials" / f"peer{i}"
        peer.mkdir(parents=True)
        (peer / "curve.jsonl").write_text("".join(json.dumps({"auc": auc + k / 100}) + "\n"
                                                  for k in range(5)))
    exp.parameters[0].lo, exp.parameters[0].hi = 1e-8, 1e-7  # the bad trial
    trials = Runner(exp, d, quiet=True).run()
    assert trials[0]["status"] == "pruned" and len(trials[0]["curve"]) == 2, trials[0]
    assert _observed(d)[0]["partial"]["auc"] < 0.70


def test_a_diverging_trial_is_a_failed_observation(tmp_path):
    exp, d = prepare(_experiment(tmp_path, "random", trials=1, parallel=1), None)
    exp.parameters[0].lo, exp.parameters[0].hi = 1e5, 1e6  # SGD at lr 1e5: the loss overflows
    trials = Runner(exp, d, quiet=True).run()
    assert trials[0]["status"] == "failed" and "not finite" in trials[0]["reason"], trials[0]


def test_a_hung_trial_fails_and_the_experiment_goes_on(tmp_path):
    path = _experiment(tmp_path, "random", trials=2, parallel=2, trial_timeout=1.0)
    exp, d = prepare(path, None)
    trials = Runner(exp, d, quiet=True).run()
    assert [t["status"] for t in trials] == ["failed", "failed"]
    assert all("timed out after 1 s" in t["reason"] for t in trials)


def test_killed_runner_resumes_without_repeating_finished_trials(tmp_path):
    path = _experiment(tmp_path, "sigoptlite", trials=2, parallel=1)
    d = tmp_path / "exp"
    cmd = [sys.executable, "-m", "dlrmx.tune", "run", str(path), "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (d.exists() and _observed(d)):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its running trial
    proc.wait()
    first = _observed(d)
    assert len(first) == 1 and first[0]["status"] == "completed"
    kept = (d / "trials" / "0000" / "result.json").stat().st_mtime_ns
    exp, _ = prepare(path, None)
    trials = Runner(exp, d, quiet=True).run()
    assert [t["number"] for t in trials] == [0, 1]
    assert [e["number"] for e in _observed(d)].count(0) == 1  # trial 0 not run again
    assert (d / "trials" / "0000" / "result.json").stat().st_mtime_ns == kept
    assert trials[0]["values"] == first[0]["values"]
    assert all(t["status"] == "completed" for t in trials)


@pytest.mark.parametrize("backend", ["sigoptlite", "optuna", "random"])
def test_backends_replay_history_and_suggest_within_the_space(tmp_path, backend):
    """What resume does: finished trials (completed, pruned, failed) replayed into a fresh
    optimizer, then suggestions that respect the bounds and the conditionals."""
    from dlrmx.tune import backends

    exp = advisor.advise(name="b", optimizers=["sgd", "lamb"], steps=100, batch=256, train=TRAIN,
                         trials=10, parallel=2, auc_target=0.6, backend=backend, tune_mlp=False)
    exp = parse(exp)
    rng = __import__("random").Random(1)
    history = []
    for n, status in enumerate(["completed", "completed", "pruned", "failed", "completed"]):
        t = {"number": n, "assignments": exp.sample(rng), "status": status}
        if status == "completed":
            t["values"] = {"auc": 0.6 + 0.01 * n, "train_time": 1.0 + n}
        history.append(t)
    b = backends.make(exp, tmp_path)
    b.replay(history)
    running = []
    for n in range(5, 8):
        a, _ = b.suggest(n, running)
        assert a["optimizer"] in ("sgd", "lamb")
        lr = exp.active(a)
        assert set(k for k in lr if k.startswith("learning_rate")) == {f"learning_rate__{a['optimizer']}"}
        for p in exp.parameters:
            if p.name in lr and p.type != "categorical":
                assert p.lo <= float(lr[p.name]) <= p.hi, (p.name, lr[p.name])
        running.append({"number": n, "assignments": a, "status": "running"})
    assert len({json.dumps(r["assignments"], sort_keys=True) for r in running}) == 3
