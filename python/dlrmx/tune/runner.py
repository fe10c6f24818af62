"""`python -m dlrmx.tune run EXPERIMENT.yaml`: the optimization loop.

Up to `parallel_bandwidth` trials run at once, each `python -m dlrmx.tune.trial` in its own
process (its own process group) with its share of the cores. Everything is written to the
experiment directory as it happens:

    DIR/experiment.yaml   the validated experiment (a resumed run checks it is unchanged)
    DIR/history.jsonl     one line per suggestion and per observation, flushed and fsynced
    DIR/trials/NNNN/      spec.json, log.txt (the trial's output), curve.jsonl, result.json,
                          and the trial's run directory

`run` on an existing directory resumes: finished trials are replayed into the optimizer, and a
trial that was suggested but not observed (the runner was killed) runs again from the start
with the same assignments. A crashed, hung (killed after `trial_timeout`) or non-finite trial is
a failed observation; the experiment goes on."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dlrmx.tune import backends
from dlrmx.tune.experiment import Experiment, ExperimentError, dump, load
from dlrmx.tune.advisor import cores


class History:
    """The append-only record of an experiment directory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "history.jsonl"
        self.events: list[dict[str, Any]] = []
        if self.path.exists():
            for ln in self.path.read_text().splitlines():
                try:
                    self.events.append(json.loads(ln))
                except json.JSONDecodeError:
                    break  # the line a killed runner was writing

    def write(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        with open(self.path, "a") as f:
            f.write(json.dumps(event) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def trials(self) -> dict[int, dict[str, Any]]:
        """number -> the trial (its suggestion merged with its observation, if any)."""
        out: dict[int, dict[str, Any]] = {}
        for e in self.events:
            if e["event"] == "suggest":
                out[e["number"]] = {k: v for k, v in e.items() if k != "event"}
            elif e["event"] == "observe" and e["number"] in out:
                out[e["number"]].update({k: v for k, v in e.items() if k != "event"})
        return out


def finished(trial: dict[str, Any]) -> bool:
    return "status" in trial


class Runner:
    def __init__(self, exp: Experiment, directory: Path, backend: str | None = None,
                 quiet: bool = False) -> None:
        self.exp, self.dir, self.quiet = exp, directory, quiet
        self.history = History(directory)
        self.backend = backends.make(exp, directory, backend)
        self.trials_dir = directory / "trials"
        self.trials_dir.mkdir(exist_ok=True)
        total = exp.settings["threads"] or cores()
        self.threads = max(1, total // exp.parallel)
        self.running: dict[int, tuple[subprocess.Popen, float, dict[str, Any]]] = {}

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    # ---- one trial ---------------------------------------------------------------------------

    def _launch(self, trial: dict[str, Any]) -> None:
        here = self.trials_dir / f"{trial['number']:04d}"
        shutil.rmtree(here, ignore_errors=True)  # a trial the killed runner left half done
        here.mkdir(parents=True)
        config = {**self.exp.trial_config(trial["assignments"]), "threads": self.threads,
                  "run_dir": str(here / "run"), "progress": False, "plots": False}
        config.setdefault("numpy_rand_seed", 123)
        spec = {"config": config, "pruning": self.exp.settings["pruning"]}
        (here / "spec.json").write_text(json.dumps(spec, indent=1))
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "PYTHONUNBUFFERED": "1"}
        log = open(here / "log.txt", "w")
        proc = subprocess.Popen([sys.executable, "-m", "dlrmx.tune.trial", str(here)],
                                stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        log.close()
        self.running[trial["number"]] = (proc, time.monotonic(), trial)
        self.say(f"trial {trial['number']}: {_short(trial['assignments'])}")

    def _collect(self, number: int, proc: subprocess.Popen, started: float,
                 trial: dict[str, Any], timed_out: bool) -> None:
        here = self.trials_dir / f"{number:04d}"
        result = {"status": "failed"}
        if timed_out:
            _kill(proc)
            result["reason"] = f"timed out after {self.exp.settings['trial_timeout']:g} s (killed)"
        elif (here / "result.json").exists():
            result = json.loads((here / "result.json").read_text())
        else:
            tail = (here / "log.txt").read_text()[-600:] if (here / "log.txt").exists() else ""
            result["reason"] = f"the trial process exited with {proc.returncode}: {tail.strip()}"
        obs = {"event": "observe", "number": number, "status": result["status"],
               "wall_seconds": round(time.monotonic() - started, 3), "finished_at": time.time(),
               "curve": result.get("curve", [])}
        if result["status"] == "completed":
            obs["values"] = {"auc": result["auc"], "train_time": result["train_time"]}
            if result.get("oracle_auc") is not None:
                obs["oracle_auc"] = result["oracle_auc"]
        elif result["status"] == "pruned":
            obs["partial"] = {"auc": result["auc"], "train_time": result["train_time"]}
        if result.get("reason"):
            obs["reason"] = result["reason"]
        self.history.write(obs)
        done = {**trial, **{k: v for k, v in obs.items() if k != "event"}}
        self.backend.observe(done)
        what = {"completed": lambda: f"AUC {result['auc']:.4f}, {result['train_time']:.1f} s",
                "pruned": lambda: f"pruned at evaluation {len(obs['curve'])} (AUC {result['auc']:.4f})",
                "failed": lambda: f"failed: {obs.get('reason', '')[:200]}"}[result["status"]]()
        self.say(f"trial {number}: {what}")

    # ---- the loop ----------------------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        trials = self.history.trials()
        done = [t for _, t in sorted(trials.items()) if finished(t)]
        again = [t for _, t in sorted(trials.items()) if not finished(t)]
        self.backend.replay(done)
        if done or again:
            self.say(f"resuming: {len(done)} trials done, {len(again)} to run again")
        number = max(trials, default=-1) + 1
        try:
            while True:
                self._reap()
                free = self.exp.parallel - len(self.running)
                if again and free > 0:
                    t = again.pop(0)
                    t["token"] = self.backend.resume(t)
                    self._launch(t)
                    continue
                budget_left = self.exp.budget - len(self.history.trials())
                if free > 0 and budget_left > 0:
                    running = [r[2] for r in self.running.values()]
                    assignments, token = self.backend.suggest(number, running)
                    trial = {"number": number, "assignments": assignments, "token": token,
                             "time": time.time()}
                    self.history.write({"event": "suggest", **trial})
                    self._launch(trial)
                    number += 1
                    continue
                if not self.running:
                    break
                time.sleep(0.2)
        finally:
            for proc, _, _ in self.running.values():  # interrupted: stop the trials too
                _kill(proc)
        return [t for _, t in sorted(self.history.trials().items())]

    def _reap(self) -> None:
        limit = float(self.exp.settings["trial_timeout"])
        for number, (proc, started, trial) in list(self.running.items()):
            timed_out = proc.poll() is None and time.monotonic() - started > limit
            if proc.poll() is not None or timed_out:
                del self.running[number]
                self._collect(number, proc, started, trial, timed_out)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _short(assignments: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in assignments.items())


def prepare(experiment: str | Path, directory: str | Path | None) -> tuple[Experiment, Path]:
    """The experiment and its directory (default: next to the file, named after it). A
    directory that holds another experiment is refused."""
    exp = load(experiment)
    d = Path(directory) if directory else Path(experiment).with_suffix("")
    d.mkdir(parents=True, exist_ok=True)
    saved = d / "experiment.yaml"
    if saved.exists():
        if load(saved).raw != exp.raw:
            raise ExperimentError(f"{d} holds a different experiment ({saved}); give another "
                                  "--dir, or delete it to start over")
    else:
        dump(exp, saved)
    return exp, d
