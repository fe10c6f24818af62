"""The trainer: a short run learns, kill-and-resume equals an uninterrupted run, NaN stops the run
with the last good checkpoint kept, CLI flags parse, bad input names the flag or file, and the
training format round-trips."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from dlrmx.data.format import DataFormatError, write_dataset
from dlrmx.data.loader import FileSource
from dlrmx.train import NonFiniteLossError, TrainConfig, parse_args, run
from dlrmx.train.config import OPTIMIZERS
from dlrmx.train import checkpoint as ckpt
from dlrmx.train.__main__ import main

SMALL = dict(arch_sparse_feature_size=8, arch_mlp_bot="13-16-8", arch_mlp_top="16-1",
             mini_batch_size=256, learning_rate=0.3, synthetic_scale=0.0005, eval_samples=8192,
             progress=False, plots=False, threads=1, print_freq=10, checkpoint_freq=0)


def _cfg(tmp_path, name="run", **kw):
    return TrainConfig(**{**SMALL, "run_dir": str(tmp_path / name), **kw})


def test_short_training_beats_chance_and_approaches_oracle(tmp_path):
    res = run(_cfg(tmp_path, num_batches=150, plots=True, test_freq=50))
    auc = res.final["test"]["auc"]
    assert res.oracle_auc is not None and res.oracle_auc > 0.8
    assert auc > 0.72, auc
    assert auc > res.oracle_auc - 0.1, (auc, res.oracle_auc)
    run_dir = tmp_path / "run"
    for f in ("config.json", "metrics.jsonl", "summary.json", "checkpoint.pt", "loss.png", "eval.png"):
        assert (run_dir / f).is_file(), f
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in recs} == {"train", "eval"}
    assert json.loads((run_dir / "config.json").read_text())["mini_batch_size"] == 256


def _model_state(run_dir):
    return ckpt.load(run_dir / "checkpoint.pt")["model"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_kill_and_resume_equals_uninterrupted(tmp_path, precision):
    # The GEMM library is pinned: "auto" times each shape at start-up, so two independent runs
    # (full and part) may pick different libraries and round differently. A resume keeps its run's
    # plan. oneDNN where it has this precision's matmul (no bf16 one without AVX-512).
    from dlrmx.models.mlp import onednn_runs

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    kw = dict(num_batches=20, nepochs=2, test_freq=15, precision=precision,
              gemm_library="onednn" if onednn_runs(dtype) else "mkl",
              lr_num_warmup_steps=5, lr_decay_start_step=10, lr_num_decay_steps=20)
    full = run(_cfg(tmp_path, "full", **kw))

    def interrupt(step):
        if step == 13:
            raise KeyboardInterrupt

    part = run(_cfg(tmp_path, "part", **kw), on_step=interrupt)
    assert part.stopped == "interrupted" and part.steps == 13
    assert ckpt.load(tmp_path / "part" / "checkpoint.pt")["step"] == 13
    resumed = run(_cfg(tmp_path, "part", resume=True))
    assert resumed.steps == full.steps == 40
    a, b = _model_state(tmp_path / "full"), _model_state(tmp_path / "part")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.final["test"]["auc"] == full.final["test"]["auc"]


def _dataset(tmp_path, n=2048, bad_row=None):
    rng = np.random.default_rng(0)
    card = [5] * 26
    def split(m):
        sparse = rng.integers(0, 5, (m, 26)).astype(np.int32)
        dense = rng.random((m, 13), dtype=np.float32)
        label = (sparse[:, 0] > 2).astype(np.float32)
        return label, dense, sparse
    tr = split(n)
    if bad_row is not None:
        tr[1][bad_row, :] = np.float32(3e38)
    return write_dataset(tmp_path / "data", {"train": tr, "val": split(512), "test": split(300)}, card), tr


def test_format_round_trips_and_trains(tmp_path):
    d, (label, dense, sparse) = _dataset(tmp_path)
    spec = json.loads((d / "spec.json").read_text())
    assert spec["rows"] == {"train": 2048, "val": 512, "test": 300} and spec["table_sizes"] == [5] * 26
    src = FileSource(d, seed=1, block_batches=2)
    seen = []
    for i in range(src.num_batches("train", 128)):
        b = src.get("train", i, 128)
        vals = b.values.view(26, 128).t().numpy()
        seen.append(np.concatenate([b.dense.numpy(), vals, b.label[:, None].numpy()], 1))
    got = np.concatenate(seen)
    want = np.concatenate([dense, sparse, label[:, None]], 1)
    # every training row exactly once, in a shuffled order
    assert np.array_equal(got[np.lexsort(got.T)], want[np.lexsort(want.T)])
    assert not np.array_equal(got, want)
    last = src.get("test", 2, 128)  # eval keeps the partial last batch, in file order
    assert last.size == 300 - 256
    res = run(_cfg(tmp_path, data_generation="dataset", processed_data_file=str(d), nepochs=3,
                   mini_batch_size=128, learning_rate=0.5))
    assert res.final["test"]["auc"] > 0.9  # label is a function of column 0


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    d, _ = _dataset(tmp_path, bad_row=700)
    src = FileSource(d, seed=123)
    bad_step = next(i for i in range(16) if not torch.isfinite(src.get("train", i, 128).dense).all()
                    or src.get("train", i, 128).dense.max() > 1e38)
    cfg = _cfg(tmp_path, data_generation="dataset", processed_data_file=str(d),
               mini_batch_size=128, checkpoint_freq=1, precision="fp32")
    with pytest.raises(NonFiniteLossError, match=f"step {bad_step}"):
        run(cfg)
    state = ckpt.load(tmp_path / "run" / "checkpoint.pt")
    assert state["step"] == bad_step
    assert all(torch.isfinite(v.float()).all() for v in state["model"].values())


def test_failed_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    ckpt.save_atomic({"step": 1, "w": torch.ones(3)}, path)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        ckpt.save_atomic({"step": 2, "w": torch.zeros(3)}, path)
    assert ckpt.load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def test_reference_flags_parse():
    cfg = parse_args(["--arch-sparse-feature-size=16", "--arch-mlp-bot=13-512-256-64-16",
                      "--arch-mlp-top=512-256-1", "--arch-interaction-op=cat",
                      "--mini-batch-size=128", "--test-mini-batch-size=16384",
                      "--learning-rate=0.1", "--lr-num-warmup-steps=10",
                      "--lr-decay-start-step=20", "--lr-num-decay-steps=30", "--nepochs=2",
                      "--num-batches=7", "--print-freq=5", "--test-freq=9",
                      "--data-generation=random", "--arch-embedding-size=4-3-2",
                      "--loss-function=mse", "--mlperf-auc-threshold=0.8025",
                      "--numpy-rand-seed=7", "--optimizer=split_sgd", "--precision=bf16",
                      "--threads=2", "--no-progress"])
    assert (cfg.arch_interaction_op, cfg.mini_batch_size, cfg.eval_batch_size) == ("cat", 128, 16384)
    assert (cfg.lr_num_warmup_steps, cfg.lr_decay_start_step, cfg.lr_num_decay_steps) == (10, 20, 30)
    assert cfg.bottom_sizes == [13, 512, 256, 64, 16] and cfg.top_sizes == [512, 256, 1]
    assert (cfg.loss_function, cfg.mlperf_auc_threshold, cfg.progress) == ("mse", 0.8025, False)


def test_yaml_config_with_flag_override(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("mini-batch-size: 64\nlearning_rate: 0.5\n")
    cfg = parse_args([f"--config={p}", "--learning-rate=0.25"])
    assert (cfg.mini_batch_size, cfg.learning_rate) == (64, 0.25)
    p.write_text("bogus: 1\n")
    with pytest.raises(ValueError, match="unknown option 'bogus'"):
        parse_args([f"--config={p}"])


@pytest.mark.parametrize("argv,match", [
    (["--arch-mlp-bot=13-64-32"], r"--arch-mlp-bot ends in 32 but --arch-sparse-feature-size is 16"),
    (["--arch-mlp-top=512-2"], "--arch-mlp-top must end in 1"),
    (["--test-freq=-2"], "--test-freq must be -1"),
    (["--arch-mlp-bot=12-16"], "must start with 13"),
    (["--arch-mlp-bot=13-x-16"], "dash-separated integers"),
    (["--lr-num-warmup-steps=10", "--lr-decay-start-step=5", "--lr-num-decay-steps=3"],
     "--lr-decay-start-step"),
    (["--data-generation=dataset"], "--processed-data-file"),
    (["--data-generation=random"], "--arch-embedding-size"),
    (["--inference-only"], "--load-model"),
])
def test_bad_flags_name_the_flag(argv, match):
    with pytest.raises(ValueError, match=match):
        parse_args(argv)


def test_missing_and_mismatched_data_files(tmp_path):
    with pytest.raises(DataFormatError, match="not a directory"):
        FileSource(tmp_path / "nope")
    d, _ = _dataset(tmp_path)
    (d / "val_sparse.npy").unlink()
    with pytest.raises(DataFormatError, match=r"val_sparse\.npy: missing"):
        FileSource(d)
    d, _ = _dataset(tmp_path)
    np.save(d / "train_dense.npy", np.zeros((2048, 12), np.float32))
    with pytest.raises(DataFormatError, match=r"train_dense\.npy: shape \(2048, 12\), expected \(2048, 13\)"):
        FileSource(d)
    np.save(d / "train_dense.npy", np.zeros((2048, 13), np.float64))
    with pytest.raises(DataFormatError, match="dtype float64, expected float32"):
        FileSource(d)
    (d / "spec.json").unlink()
    with pytest.raises(DataFormatError, match=r"spec\.json: missing"):
        FileSource(d)


def test_cli_reports_errors_and_help(tmp_path, capsys):
    assert main(["--arch-mlp-bot=13-64-32", f"--run-dir={tmp_path}"]) == 2
    assert "--arch-sparse-feature-size" in capsys.readouterr().err
    assert main(["--data-generation=dataset", f"--processed-data-file={tmp_path}/x"]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    out = subprocess.run([sys.executable, "-m", "dlrmx.train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("--arch-mlp-bot", "--lr-num-decay-steps", "--mlperf-auc-threshold", "--resume",
                 "--precision", "--optimizer"):
        assert flag in out.stdout


def test_random_data_and_inference_only(tmp_path):
    cfg = _cfg(tmp_path, data_generation="random", arch_embedding_size="-".join(["50"] * 26),
               num_batches=5)
    res = run(cfg)
    assert res.steps == 5 and res.oracle_auc is None
    again = run(_cfg(tmp_path, "inf", data_generation="random",
                     arch_embedding_size="-".join(["50"] * 26), num_batches=5,
                     load_model=str(tmp_path / "run" / "checkpoint.pt"), inference_only=True))
    assert again.stopped == "inference_only"
    assert again.final["val"]["auc"] == res.final["val"]["auc"]


@pytest.mark.parametrize("optimizer,precision", [(o, "fp32") for o in OPTIMIZERS] +
                         [("sgd", "bf16"), ("hybrid", "bf16")])
def test_every_optimizer_trains_with_the_schedule(tmp_path, optimizer, precision):
    # LAMB's step is lr x the weight norm: 0.1 moves every layer by 10% a step and diverges here
    lr = 0.02 if optimizer in ("lamb", "hybrid") else 0.1
    res = run(_cfg(tmp_path, optimizer=optimizer, precision=precision, num_batches=60,
                   print_freq=5, lr_num_warmup_steps=10, learning_rate=lr))
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["kind"] == "train"]
    # lr logged at step 5 is the rate of 0-based step 4: warm-up 5/10 of the base rate
    assert train[0]["step"] == 5 and train[0]["lr"] == pytest.approx(lr / 2)
    assert train[-1]["lr"] == pytest.approx(lr)
    assert res.final["test"]["auc"] > 0.66, res.final["test"]["auc"]  # lr 0: 0.56
    state = ckpt.load(tmp_path / "run" / "checkpoint.pt")["model"]
    mlp_dtype = state["bottom.0.weight"].dtype
    native_bf16 = precision == "bf16" and optimizer not in ("lamb", "hybrid", "adagrad", "rowwise_adagrad")
    assert mlp_dtype == (torch.bfloat16 if native_bf16 else torch.float32)


def test_mlperf_auc_threshold_stops_the_run(tmp_path):
    res = run(_cfg(tmp_path, num_batches=200, test_freq=10, mlperf_auc_threshold=0.6))
    assert res.stopped == "auc_threshold"
    assert res.steps < 200 and res.steps % 10 == 0
    assert res.best_auc >= 0.6


def test_tensorboard_logs_or_a_clear_error(tmp_path):
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="--tensorboard needs the tensorboard package"):
            run(_cfg(tmp_path, num_batches=5, tensorboard=True))
        return
    run(_cfg(tmp_path, num_batches=5, tensorboard=True))
    assert any((tmp_path / "run" / "tensorboard").iterdir())


def test_bf16_run_stops_on_a_poisoned_row_with_finite_weights(tmp_path):
    """In bf16 the row saturates a logit to -inf: the loss stays finite, the gradients would
    not; the run must stop before that backward."""
    d, _ = _dataset(tmp_path, bad_row=700)
    cfg = _cfg(tmp_path, data_generation="dataset", processed_data_file=str(d),
               mini_batch_size=128, checkpoint_freq=1, precision="bf16")
    with pytest.raises(NonFiniteLossError):
        run(cfg)
    state = ckpt.load(tmp_path / "run" / "checkpoint.pt")
    assert all(torch.isfinite(v.float()).all() for v in state["model"].values())


@pytest.mark.parametrize("saved", ["fp32", "bf16"])
def test_load_model_takes_the_checkpoints_precision(tmp_path, saved):
    """--precision auto with --load-model stores the tables as the checkpoint does (split-SGD
    keeps bf16 halves and trails), whatever auto would measure on this CPU: one of the two
    cases is the other choice."""
    res = run(_cfg(tmp_path, num_batches=4, precision=saved, optimizer="split_sgd"))
    again = run(_cfg(tmp_path, "inf", num_batches=4, precision="auto", optimizer="split_sgd",
                     load_model=str(tmp_path / "run" / "checkpoint.pt"), inference_only=True))
    assert json.loads((tmp_path / "inf" / "config.json").read_text())["precision"] == saved
    assert again.final["val"]["auc"] == res.final["val"]["auc"]
