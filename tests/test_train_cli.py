"""The trainer as a new user meets it: every reference flag, typed config values, short errors,
readable logs when redirected, checkpoints that fail clearly, resumes that keep the record
straight, MLPerf log lines and honest plots (issue 8)."""

import json
import os
import io
import subprocess
import sys

import pytest
import torch

from dlrmx import atomic
from dlrmx.train import TrainConfig, run
from dlrmx.train import checkpoint as ckpt
from dlrmx.train.__main__ import main
from dlrmx.train.config import parse_cli
from dlrmx.train.loop import compute_loss
from dlrmx.train.reference_flags import FLAGS

SMALL = ["--arch-sparse-feature-size=8", "--arch-mlp-bot=13-16-8", "--arch-mlp-top=16-1",
         "--mini-batch-size=128", "--synthetic-scale=0.0005", "--eval-samples=2048",
         "--threads=1", "--no-plots", "--checkpoint-freq=0"]
SMALL_CFG = dict(arch_sparse_feature_size=8, arch_mlp_bot="13-16-8", arch_mlp_top="16-1",
                 mini_batch_size=128, synthetic_scale=0.0005, eval_samples=2048, threads=1,
                 plots=False, checkpoint_freq=0, progress=False, print_freq=5)

# The reference's own flags (dlrm_s_pytorch.py, current main), with a value to give each.
REFERENCE_ARGV = [
    "--arch-sparse-feature-size=16", "--arch-embedding-size=4-3-2", "--arch-mlp-bot=13-16",
    "--arch-mlp-top=4-2-1", "--arch-interaction-op=dot", "--arch-interaction-itself=False",
    "--md-flag=False", "--md-threshold=200", "--md-temperature=0.3", "--md-round-dims=False",
    "--qr-flag=False", "--qr-threshold=200", "--qr-operation=mult", "--qr-collisions=4",
    "--activation-function=relu", "--loss-function=bce", "--loss-weights=1.0-1.0",
    "--loss-threshold=0.0", "--round-targets=True", "--data-size=1", "--num-batches=0",
    "--data-generation=random", "--rand-data-dist=uniform", "--rand-data-min=0",
    "--rand-data-max=1", "--rand-data-mu=-1", "--rand-data-sigma=1",
    "--data-trace-file=./input/dist_emb_j.log", "--data-set=kaggle", "--raw-data-file=",
    "--processed-data-file=", "--data-randomize=total", "--data-trace-enable-padding=False",
    "--max-ind-range=-1", "--data-sub-sample-rate=0.0", "--num-indices-per-lookup=10",
    "--num-indices-per-lookup-fixed=False", "--num-workers=0", "--memory-map",
    "--mini-batch-size=1", "--nepochs=1", "--learning-rate=0.01", "--print-precision=5",
    "--numpy-rand-seed=123", "--sync-dense-params=True", "--optimizer=rwsadagrad",
    "--dataset-multiprocessing", "--inference-only=False", "--quantize-mlp-with-bit=32",
    "--quantize-emb-with-bit=32", "--save-onnx=False", "--use-gpu", "--local_rank=-1",
    "--dist-backend=", "--print-freq=1", "--test-freq=-1", "--test-mini-batch-size=-1",
    "--test-num-workers=-1", "--print-time", "--print-wall-time", "--debug-mode",
    "--enable-profiling=False", "--plot-compute-graph", "--tensor-board-filename=run_kaggle_pt",
    "--save-model=", "--load-model=", "--mlperf-logging=False", "--mlperf-acc-threshold=0.0",
    "--mlperf-auc-threshold=0.0", "--mlperf-bin-loader", "--mlperf-bin-shuffle",
    "--mlperf-grad-accum-iter=1", "--lr-num-warmup-steps=0", "--lr-decay-start-step=0",
    "--lr-num-decay-steps=0", "--weighted-pooling=",
]


def test_every_reference_flag_is_accepted_with_a_note_where_dlrmx_differs():
    cfg, notes = parse_cli(REFERENCE_ARGV)
    assert cfg.optimizer == "rowwise_adagrad"  # the reference's name is an alias
    assert cfg.print_time and cfg.print_wall_time and cfg.data_set == "kaggle"
    assert not cfg.num_indices_per_lookup_fixed and cfg.num_indices_per_lookup == 10
    noted = {n.split(":")[0] for n in notes}
    assert {"--memory-map", "--round-targets", "--mlperf-bin-shuffle", "--use-gpu"} <= noted
    # every reference-only flag in the table was given above, and every field is a flag
    given = {a.split("=")[0] for a in REFERENCE_ARGV}
    for f in FLAGS:
        assert ("--" + f.name.replace("_", "-") in given or f.name == "local_rank"), f.name


@pytest.mark.parametrize("flag", ["--qr-flag", "--md-flag", "--arch-interaction-itself",
                                  "--save-onnx", "--mlperf-grad-accum-iter=4",
                                  "--activation-function=sigmoid", "--weighted-pooling=learned"])
def test_reference_features_dlrmx_lacks_are_refused_by_name(flag):
    with pytest.raises(ValueError, match=flag.split("=")[0] + ".*not supported"):
        parse_cli([flag])


def test_reference_bool_flags_parse_their_values():
    assert parse_cli(["--num-indices-per-lookup-fixed=True"])[0].num_indices_per_lookup_fixed
    assert not parse_cli(["--num-indices-per-lookup-fixed=False"])[0].num_indices_per_lookup_fixed
    assert not parse_cli(["--no-progress"])[0].progress
    assert not parse_cli(["--progress=false"])[0].progress


def _cli(argv, capsys):
    rc = main(argv)
    return rc, capsys.readouterr()


@pytest.mark.parametrize("argv,expect", [
    (["--lerning-rate=0.1"], "unrecognized argument --lerning-rate (did you mean --learning-rate?)"),
    (["--mini-batch-size=64", "--mini-batch-size=128"], "--mini-batch-size given twice (64 and 128)"),
    (["--synthetic-zipf", "nan"], "--synthetic-zipf"),
    (["--eval-samples", "0"], "--eval-samples must be >= 1, got 0"),
    (["--eval-samples", "-7"], "--eval-samples must be >= 1, got -7"),
    (["--threads", "-3"], "--threads must be in [0, 4096], got -3"),
    (["--checkpoint-freq", "-3"], "--checkpoint-freq must be >= 0, got -3"),
    (["--numpy-rand-seed", "-1"], "--numpy-rand-seed must be in [0"),
    (["--data-sub-sample-rate", "1"], "--data-sub-sample-rate must be in [0, 1)"),
    (["--optimizer", "adam"], "--optimizer must be one of"),
    (["--hot-device", "cuda"], "--hot-device cuda puts the hot rows on the GPU"),
    (["--device", "cuda", "--hot-cache-budget", "1M", "--hot-device", "cpu"],
     "--device cuda with --hot-cache-budget keeps the tables in host memory"),
])
def test_bad_flags_end_in_one_error_line(argv, expect, capsys, tmp_path):
    rc, out = _cli(argv + [f"--run-dir={tmp_path}"], capsys)
    assert rc == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.err
    assert expect in lines[0]
    assert "Traceback" not in out.err and "usage:" not in out.err


def test_yaml_values_are_typed_and_checked(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("resume: 'no'\nlearning_rate: 1e-1\nmini_batch_size: \"256\"\nprogress: off\n")
    cfg, _ = parse_cli([f"--config={p}"])
    assert cfg.resume is False and cfg.learning_rate == 0.1 and cfg.mini_batch_size == 256
    assert cfg.progress is False
    for text, match in [("resume: maybe\n", "--resume expects a boolean"),
                        ("mini_batch_size: 12.5\n", "--mini-batch-size expects an integer"),
                        ("mini_batch_size: [1]\n", "--mini-batch-size expects an integer"),
                        ("learning_rate: fast\n", "--learning-rate expects a number"),
                        ("arch_mlp_bot: {a: 1}\n", "--arch-mlp-bot expects a string"),
                        ("mini_bach_size: 3\n", "unknown option 'mini_bach_size' "
                                                "\\(did you mean 'mini_batch_size'\\?\\)"),
                        ("memory_map: true\nqr_flag: true\n", "--qr-flag=True: not supported"),
                        ("a: [\n", "not valid YAML")]:
        p.write_text(text)
        with pytest.raises(ValueError, match=match):
            parse_cli([f"--config={p}"])


def test_python_api_checks_types_and_names_unknown_keys(tmp_path):
    with pytest.raises(ValueError, match="unknown option 'mini_batchsize'"):
        run({"mini_batchsize": 3})
    with pytest.raises(ValueError, match="--learning-rate expects a finite number"):
        TrainConfig(learning_rate=float("nan")).validate()
    assert TrainConfig.from_dict({"num_workers": 3}).validate() == TrainConfig()  # a note only


def test_a_batch_that_cannot_fit_is_refused_with_the_numbers(capsys, tmp_path):
    argv = [a for a in SMALL if not a.startswith("--mini-batch-size")]
    rc, out = _cli(argv + ["--mini-batch-size=100000000", f"--run-dir={tmp_path}"], capsys)
    assert rc == 2
    assert "GiB" in out.err and "is available" in out.err and "--mini-batch-size" in out.err
    assert not (tmp_path / "checkpoint.pt").exists()


def test_redirected_output_has_one_line_per_print(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-m", "dlrmx.train", *SMALL, "--num-batches=20",
                        "--print-freq=5", "--print-time", f"--run-dir={tmp_path / 'r'}"],
                       stdout=f, stderr=subprocess.STDOUT, check=True, timeout=300)
    text = log.read_text()
    assert "\r" not in text
    steps = [ln for ln in text.splitlines() if ln.startswith("step ")]
    assert [ln.split()[1] for ln in steps] == ["5/20", "10/20", "15/20", "20/20"]
    assert all("ms/it" in ln and "loss" in ln and "accuracy" in ln for ln in steps)
    assert any(ln.startswith("eval val at step") for ln in text.splitlines())
    assert "final AUC" in text


def test_no_progress_still_prints_lines(tmp_path, capsys):
    cfg = TrainConfig(**{**SMALL_CFG, "run_dir": str(tmp_path), "num_batches": 10})
    run(cfg)
    assert [ln.split()[1] for ln in capsys.readouterr().out.splitlines()
            if ln.startswith("step ")] == ["5/10", "10/10"]


# ---------------------------------------------------------------------------- checkpoints
def _trained(tmp_path, name="r", **kw):
    cfg = TrainConfig(**{**SMALL_CFG, "run_dir": str(tmp_path / name), "num_batches": 10, **kw})
    run(cfg)
    return tmp_path / name


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_unusable_checkpoints_are_one_error_line(tmp_path, capsys):
    run_dir = _trained(tmp_path)
    good = (run_dir / "checkpoint.pt").read_bytes()
    wrong_shape = ckpt.load(run_dir / "checkpoint.pt")
    key = next(k for k in wrong_shape["model"] if k.endswith("weight"))
    wrong_shape["model"][key] = torch.zeros(3, 3)
    far = ckpt.load(run_dir / "checkpoint.pt")
    far["step"] = 10**9
    cases = {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "corrupt": b"\x00garbage" * 100,
        "code-running pickle": _saved({"version": 1, "x": _Evil()}),
    }
    expect = {"empty": "empty", "truncated": "truncated or corrupt",
              "corrupt": "truncated or corrupt", "code-running pickle": "safe loader"}
    for name, blob in cases.items():
        (run_dir / "checkpoint.pt").write_bytes(blob)
        rc, out = _cli([f"--run-dir={run_dir}", "--resume"], capsys)
        assert rc == 2 and out.err.startswith("error: checkpoint"), (name, out.err)
        assert expect[name] in out.err and len(out.err.strip().splitlines()) == 1, (name, out.err)
    ckpt.save_atomic({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    rc, out = _cli(SMALL + [f"--load-model={tmp_path / 'other.pt'}", "--inference-only",
                            f"--run-dir={tmp_path / 'inf'}"], capsys)
    assert rc == 2 and "holds no 'model' weights" in out.err and "Traceback" not in out.err
    for name, state, match in [("wrong shape", wrong_shape, "does not fit this model"),
                               ("step 10^9", far, "step 1000000000 is not within")]:
        ckpt.save_atomic({k: v for k, v in state.items() if k != "version"}, run_dir / "checkpoint.pt")
        rc, out = _cli([f"--run-dir={run_dir}", "--resume"], capsys)
        assert rc == 2 and match in out.err and "Traceback" not in out.err, (name, out.err)


def test_stale_checkpoint_temporaries_are_removed(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = atomic._host()
    stale = run_dir / f".checkpoint.pt.tmp-{host}-{dead}-abc123"
    live = run_dir / f".checkpoint.pt.tmp-{host}-{os.getppid()}-def456"  # a live process
    stale.write_bytes(b"x" * 1000)
    live.write_bytes(b"y")
    _trained(tmp_path)
    assert not stale.exists() and live.exists()


def test_resume_keeps_metrics_and_summary_straight(tmp_path):
    cfg = TrainConfig(**{**SMALL_CFG, "run_dir": str(tmp_path / "r"), "num_batches": 12,
                         "test_freq": 4, "print_freq": 2, "checkpoint_freq": 4})

    def crash(step):
        if step == 10:  # after the checkpoint at step 8: steps 9-10 are redone on resume
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        run(cfg, on_step=crash)
    state = ckpt.load(tmp_path / "r" / "checkpoint.pt")
    assert state["step"] == 8 and state["samples"] == 8 * 128
    res = run(TrainConfig(**{**SMALL_CFG, "run_dir": str(tmp_path / "r"), "resume": True}))
    assert res.stopped == "completed" and res.steps == 12
    assert res.samples == 12 * 128  # counts the samples before the resume too
    recs = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["kind"] == "train"] == [2, 4, 6, 8, 10, 12]
    evals = [(r["step"], r["split"], r["final"]) for r in recs if r["kind"] == "eval"]
    assert evals == [(4, "val", False), (8, "val", False), (12, "val", True), (12, "test", True)]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["samples"] == 12 * 128 and summary["steps"] == 12


def test_interrupted_run_does_not_claim_a_final_auc(tmp_path, capsys, monkeypatch):
    def interrupted_run(cfg):
        def stop(step):
            if step == 6:
                raise KeyboardInterrupt
        return run(cfg, on_step=stop)

    monkeypatch.setattr("dlrmx.train.run", interrupted_run)
    rc, out = _cli(SMALL + ["--num-batches=10", "--test-freq=3", f"--run-dir={tmp_path}"], capsys)
    assert rc == 130
    assert "final AUC" not in out.out
    assert "no final evaluation: continue with --resume" in out.out


# ---------------------------------------------------------------------------- outputs
def test_mlperf_logging_writes_mllog_lines(tmp_path):
    cfg = TrainConfig(**{**SMALL_CFG, "run_dir": str(tmp_path), "num_batches": 8, "test_freq": 4,
                         "mlperf_logging": True, "mlperf_auc_threshold": 0.99})
    run(cfg)
    lines = (tmp_path / "mlperf_log.txt").read_text().splitlines()
    assert lines and all(ln.startswith(":::MLLOG ") for ln in lines)
    recs = [json.loads(ln[len(":::MLLOG "):]) for ln in lines]
    keys = [r["key"] for r in recs]
    for k in ("init_start", "init_stop", "run_start", "global_batch_size", "eval_accuracy",
              "epoch_start", "epoch_stop", "run_stop"):
        assert k in keys, k
    assert keys.index("run_start") < keys.index("eval_accuracy") < keys.index("run_stop")
    stop = recs[keys.index("run_stop")]
    assert stop["metadata"]["status"] == "aborted"  # AUC 0.99 was not reached
    assert next(r for r in recs if r["key"] == "global_batch_size")["value"] == 128


def test_enable_profiling_writes_a_trace(tmp_path, capsys):
    run(TrainConfig(**{**SMALL_CFG, "run_dir": str(tmp_path), "num_batches": 30,
                       "enable_profiling": True}))
    assert (tmp_path / "profile.json").stat().st_size > 0
    assert "Self CPU" in capsys.readouterr().out


def test_weighted_bce_and_loss_threshold_follow_their_formulas():
    z = torch.tensor([-3.0, 0.5, 2.0, 8.0])
    y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    p = torch.sigmoid(z)
    cfg = TrainConfig(loss_function="wbce", loss_weights="0.5-2.0").validate()
    w = torch.where(y > 0, 2.0, 0.5)
    want = -(w * (y * p.log() + (1 - y) * (1 - p).log())).mean()
    torch.testing.assert_close(compute_loss(cfg, z, y), want)
    cfg = TrainConfig(loss_function="bce", loss_threshold=0.01).validate()
    pc = p.clamp(0.01, 0.99)
    want = -(y * pc.log() + (1 - y) * (1 - pc).log()).mean()
    torch.testing.assert_close(compute_loss(cfg, z, y), want)


def test_plots_name_the_loss_and_tell_the_oracle_lines_apart(tmp_path, monkeypatch):
    import matplotlib.figure

    figs = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: figs.append(self))
    run(TrainConfig(**{**SMALL_CFG, "run_dir": str(tmp_path), "num_batches": 10, "test_freq": 5,
                       "plots": True, "loss_function": "mse"}))
    loss_fig, eval_fig = figs
    assert "MSE" in loss_fig.axes[0].get_ylabel()
    auc_ax = eval_fig.axes[0]
    oracle = [ln for ln in auc_ax.get_lines() if ln.get_label().startswith("oracle")]
    assert {ln.get_label().split("(")[1].split(")")[0] for ln in oracle} == {"test", "val"}
    assert len({(ln.get_color(), ln.get_linestyle()) for ln in oracle}) == 2


def test_random_data_honours_indices_per_lookup(tmp_path):
    from dlrmx.train.sources import make_source

    cfg = parse_cli(["--data-generation=random", "--arch-embedding-size=50-60-70",
                     "--num-indices-per-lookup=4", "--num-indices-per-lookup-fixed=True",
                     "--mini-batch-size=16", "--data-size=40"])[0]
    src = make_source(cfg)
    assert src.num_batches("train", 16) == 3  # ceil(40 / 16), as the reference
    b = src.get("train", 0, 16)
    assert torch.equal(b.offsets.diff(), torch.full((3 * 16,), 4))


def test_a_dataset_whose_spec_lies_is_one_error_line(tmp_path, capsys):
    import numpy as np

    from dlrmx.data.format import write_dataset

    rng = np.random.default_rng(0)
    n = 300
    splits = {"train": (rng.integers(0, 2, n), rng.random((n, 13)), rng.integers(0, 50, (n, 26))),
              "val": (rng.integers(0, 2, 40), rng.random((40, 13)), rng.integers(0, 50, (40, 26)))}
    data = write_dataset(tmp_path / "d", splits, [50] * 26)
    spec = json.loads((data / "spec.json").read_text())
    spec["table_sizes"][4] = 10  # smaller than the ids present
    (data / "spec.json").write_text(json.dumps(spec))
    rc, out = _cli(SMALL + ["--data-generation=dataset", f"--processed-data-file={data}",
                            f"--run-dir={tmp_path / 'r'}"], capsys)
    assert rc == 2 and len(out.err.strip().splitlines()) == 1
    assert "train_sparse.npy" in out.err and "C5" in out.err and "table_sizes[4] = 10" in out.err


def test_run_dir_and_data_paths_that_are_wrong_are_named(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    for argv, expect in [([f"--run-dir={f}"], "--run-dir " + str(f) + " is a file"),
                         ([f"--run-dir={tmp_path / 'new'}", "--resume"], "--resume: "),
                         (["--data-generation=dataset", f"--processed-data-file={f}",
                           f"--run-dir={tmp_path / 'r'}"], "is a file, but neither")]:
        rc, out = _cli(SMALL + argv, capsys)
        assert rc == 2 and expect in out.err and len(out.err.strip().splitlines()) == 1, out.err
    assert f.read_text() == "x"


def test_review_findings_are_one_error_line_or_honoured(tmp_path, capsys, monkeypatch):
    import numpy as np

    from dlrmx.data.format import write_dataset

    # preprocessing a raw log that is not there, from the trainer's reference flags
    rc, out = _cli(SMALL + ["--data-generation=dataset", f"--processed-data-file={tmp_path / 'p'}",
                            f"--raw-data-file={tmp_path / 'nothere.txt'}",
                            f"--run-dir={tmp_path / 'r0'}"], capsys)
    assert rc == 2 and "nothere.txt" in out.err and len(out.err.strip().splitlines()) == 1
    # --save-model that is a directory: refused before training, naming the flag
    rc, out = _cli(SMALL + [f"--save-model={tmp_path}", f"--run-dir={tmp_path / 'r1'}"], capsys)
    assert rc == 2 and "--save-model" in out.err and not (tmp_path / "r1" / "checkpoint.pt").exists()
    # --data-size is the random data's: said so, not ignored
    rc, out = _cli(SMALL + ["--data-size=6", f"--run-dir={tmp_path / 'r2'}"], capsys)
    assert rc == 2 and "--data-generation=random" in out.err
    # reference-only flags from YAML get their types
    p = tmp_path / "c.yaml"
    p.write_text("qr_flag: 'false'\nmd_flag: 'no'\n")
    cfg, notes = parse_cli([f"--config={p}"])  # both mean false: accepted, with their notes
    assert {n.split(":")[0] for n in notes} == {"--qr-flag", "--md-flag"}
    p.write_text("memory_map: [1, 2]\n")
    with pytest.raises(ValueError, match="--memory-map expects a boolean"):
        parse_cli([f"--config={p}"])
    # --num-batches caps an epoch of file data (the reference's nbatches); no val split: no
    # validation AUC is claimed
    rng = np.random.default_rng(1)
    n = 128 * 9 + 5
    data = write_dataset(tmp_path / "d", {
        "train": (rng.integers(0, 2, n), rng.random((n, 13)), rng.integers(0, 20, (n, 26))),
        "test": (rng.integers(0, 2, 99), rng.random((99, 13)), rng.integers(0, 20, (99, 26)))},
        [20] * 26)
    res = run(TrainConfig(**{**SMALL_CFG, "data_generation": "dataset", "num_batches": 4,
                             "processed_data_file": str(data), "run_dir": str(tmp_path / "r3")}))
    assert res.steps == 4 and res.final["test"]["samples"] == 99
    assert res.best_step == -1 and res.best_auc != res.best_auc  # NaN: there is no val split
    # a checkpoint that cannot be written (torch's zip writer wraps a full disk): named, no temp
    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos 1234")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="could not write the checkpoint") as e:
        ckpt.save_atomic({"step": 1}, tmp_path / "r4" / "checkpoint.pt")
    assert e.value.filename == str(tmp_path / "r4" / "checkpoint.pt")
    assert list((tmp_path / "r4").iterdir()) == []


def test_a_corrupt_npy_file_is_named(tmp_path, capsys):
    import numpy as np

    from dlrmx.data.format import write_dataset

    rng = np.random.default_rng(0)
    data = write_dataset(tmp_path / "d", {"train": (rng.integers(0, 2, 300), rng.random((300, 13)),
                                                    rng.integers(0, 9, (300, 26)))}, [9] * 26)
    (data / "train_dense.npy").write_bytes(b"junk")
    rc, out = _cli(SMALL + ["--data-generation=dataset", f"--processed-data-file={data}",
                            f"--run-dir={tmp_path / 'r'}"], capsys)
    assert rc == 2 and "train_dense.npy" in out.err and len(out.err.strip().splitlines()) == 1
