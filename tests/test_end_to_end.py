"""Raw Criteo logs -> `dlrmx.preprocess` -> `dlrmx.train`: the whole data path on real rows."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlrmx.data import open_split, read_spec
from dlrmx.preprocess import preset
from dlrmx.preprocess import run as preprocess
from dlrmx.train import TrainConfig, run

KAGGLE_HEAD = (Path(__file__).resolve().parents[2] / "shared" / "data" / "criteo"
               / "kaggle_head1000_trailing_fields_stripped.tsv")


@pytest.mark.skipif(not KAGGLE_HEAD.is_file(), reason="../shared/data Criteo sample absent")
def test_preprocessed_criteo_sample_trains(tmp_path):
    out = tmp_path / "criteo"
    preprocess(preset("criteo-kaggle"), [str(KAGGLE_HEAD)], out, engine="polars")
    spec = read_spec(out)
    assert sum(spec["rows"].values()) == 1000
    train = open_split(out, "train")
    assert np.all(train.sparse < np.asarray(spec["table_sizes"]))

    res = run(TrainConfig(data_generation="dataset", processed_data_file=str(out),
                          run_dir=str(tmp_path / "run"), mini_batch_size=64, nepochs=2,
                          learning_rate=0.1, arch_sparse_feature_size=8, arch_mlp_bot="13-16-8",
                          arch_mlp_top="16-1", threads=1, progress=False, plots=False))
    assert res.steps == 2 * (spec["rows"]["train"] // 64)
    for split in ("val", "test"):
        metrics = res.final[split]
        assert 0.0 <= metrics["auc"] <= 1.0 and np.isfinite(metrics["logloss"])


@pytest.mark.skipif(not KAGGLE_HEAD.is_file(), reason="../shared/data Criteo sample absent")
def test_command_lines_chain(tmp_path):
    """The two CLIs as a user runs them."""
    out = tmp_path / "criteo"
    py = [sys.executable, "-m"]
    subprocess.run(py + ["dlrmx.preprocess", "--preset", "criteo-kaggle", "--engine", "polars",
                         "--output", str(out), str(KAGGLE_HEAD)], check=True, timeout=300)
    res = subprocess.run(py + ["dlrmx.train", "--data-generation", "dataset", "--processed-data-file",
                               str(out), "--run-dir", str(tmp_path / "run"), "--mini-batch-size", "64",
                               "--arch-sparse-feature-size", "8", "--arch-mlp-bot", "13-16-8",
                               "--arch-mlp-top", "16-1", "--threads", "1", "--nepochs", "1"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "run" / "summary.json").is_file()
