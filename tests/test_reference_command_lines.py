"""The reference DLRM's two published command lines (its bench/ scripts for Criteo Kaggle and for
Terabyte/MLPerf), run as they are against `python -m dlrmx.train` on the real Criteo sample:
the raw log is preprocessed on first use into the directory beside the reference's .npz name,
reused on the second run, and the run trains and evaluates."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "criteo" / \
    "kaggle_head1000_trailing_fields_stripped.tsv"
pytestmark = pytest.mark.skipif(not SAMPLE.is_file(), reason="../shared/data is absent")

KAGGLE = ("--arch-sparse-feature-size=16 --arch-mlp-bot=13-512-256-64-16 --arch-mlp-top=512-256-1 "
          "--data-generation=dataset --data-set=kaggle --raw-data-file=./input/train.txt "
          "--processed-data-file=./input/kaggleAdDisplayChallenge_processed.npz "
          "--loss-function=bce --round-targets=True --learning-rate=0.1 --mini-batch-size=128 "
          "--print-freq=1024 --print-time --test-mini-batch-size=16384 --test-num-workers=16")
# The MLPerf line as published, except --mini-batch-size 2048 -> 64: the sample's training days
# hold about 660 rows, fewer than one 2048-row batch.
TERABYTE = ("--arch-sparse-feature-size=128 --arch-mlp-bot=13-512-256-128 "
            "--arch-mlp-top=1024-1024-512-256-1 --max-ind-range=40000000 "
            "--data-generation=dataset --data-set=terabyte --raw-data-file=./input/day "
            "--processed-data-file=./input/terabyte_processed.npz --loss-function=bce "
            "--round-targets=True --learning-rate=1.0 --mini-batch-size=64 --print-freq=2048 "
            "--print-time --test-freq=102400 --test-mini-batch-size=16384 --test-num-workers=16 "
            "--memory-map --mlperf-logging --mlperf-auc-threshold=0.8025 --mlperf-bin-loader "
            "--mlperf-bin-shuffle")


def _train(cwd: Path, line: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    p = subprocess.run([sys.executable, "-m", "dlrmx.train", *line.split(), "--threads=2"],
                       cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    return p.stdout + p.stderr


def test_reference_kaggle_command_line(tmp_path):
    (tmp_path / "input").mkdir()
    shutil.copy(SAMPLE, tmp_path / "input" / "train.txt")
    out = _train(tmp_path, KAGGLE)
    data = tmp_path / "input" / "kaggleAdDisplayChallenge_processed.dlrmx"
    spec = json.loads((data / "spec.json").read_text())
    assert sum(spec["rows"].values()) == 1000 and len(spec["table_sizes"]) == 26
    assert "preprocessing ./input/train.txt" in out
    assert "note: --round-targets" in out and "note: --test-num-workers" in out
    assert "final AUC" in out and "ms/it" in out
    again = _train(tmp_path, KAGGLE)  # the preprocessed directory is reused
    assert "preprocessing" not in again and "final AUC" in again
    capped = _train(tmp_path, KAGGLE + " --max-ind-range=50")  # ... unless asked otherwise
    assert "preprocessing" in capped
    sizes = json.loads((data / "spec.json").read_text())["table_sizes"]
    assert max(sizes) == 50 + 1  # ids modulo 50, plus the reserved id of unseen keys


def test_reference_terabyte_mlperf_command_line(tmp_path):
    (tmp_path / "input").mkdir()
    rows = SAMPLE.read_text().splitlines(keepends=True)
    for day, part in enumerate((rows[:333], rows[333:666], rows[666:])):
        (tmp_path / "input" / f"day_{day}").write_text("".join(part))
    out = _train(tmp_path, TERABYTE)
    data = tmp_path / "input" / "terabyte_processed.dlrmx"
    spec = json.loads((data / "spec.json").read_text())
    assert sum(spec["rows"].values()) == 1000
    assert spec["rows"]["train"] == 666  # days 0-1; the last day is halved into test and val
    assert "note: --memory-map" in out and "note: --mlperf-bin-shuffle" in out
    log = (tmp_path / "runs" / "default" / "mlperf_log.txt").read_text().splitlines()
    keys = [json.loads(ln.split(" ", 1)[1])["key"] for ln in log]
    assert keys[0] == "init_start" and keys[-1] == "run_stop" and "eval_accuracy" in keys
