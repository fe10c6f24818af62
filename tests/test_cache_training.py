"""The hot/cold cache inside `python -m dlrmx.train`: the replica changes no bit of the result
(same batch order, with and without it), across evaluation, checkpoints and resume; FAE's
schedule keeps the accuracy of unscheduled training; the report lands in the run dir."""

import json

import numpy as np
import pytest
import torch

from dlrmx.train import TrainConfig, run
from dlrmx.train import checkpoint as ckpt

SMALL = dict(arch_sparse_feature_size=8, arch_mlp_bot="13-16-8", arch_mlp_top="16-1",
             mini_batch_size=128, learning_rate=0.3, synthetic_scale=0.0005, eval_samples=4096,
             progress=False, plots=False, threads=1, print_freq=10, checkpoint_freq=0,
             gemm_library="mkl",  # two fresh runs compared bit for bit: no timed GEMM plan
             hot_cache_budget="96K", hot_window_batches=8, profile_fraction=0.25)


def _cfg(tmp_path, name, **kw):
    return TrainConfig(**{**SMALL, "run_dir": str(tmp_path / name), **kw})


def _state(run_dir):
    return ckpt.load(run_dir / "checkpoint.pt")


def _assert_same_model(a, b):
    a, b = a["model"], b["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("precision,schedule", [("fp32", "fae"), ("bf16", "interleaved")])
def test_the_replica_changes_no_bit_across_eval_checkpoint_and_resume(tmp_path, precision,
                                                                        schedule):
    kw = dict(num_batches=24, nepochs=2, test_freq=10, checkpoint_freq=7, precision=precision,
              hot_schedule=schedule, hot_switch_batches=2)
    plain = run(_cfg(tmp_path, "none", hot_device="none", **kw))  # same schedule, no replica
    cached = run(_cfg(tmp_path, "cpu", hot_device="cpu", **kw))
    assert cached.cache["hot_batches"] > 5 and cached.cache["flushes"] > 2, cached.cache
    assert plain.cache["hot_batches"] == 0  # nothing ran on a replica there
    _assert_same_model(_state(tmp_path / "none"), _state(tmp_path / "cpu"))
    assert plain.final["test"]["auc"] == cached.final["test"]["auc"]

    def interrupt(step):
        if step == 17:  # mid-window, after a checkpoint at 14
            raise KeyboardInterrupt

    part = run(_cfg(tmp_path, "part", hot_device="cpu", **kw), on_step=interrupt)
    assert part.stopped == "interrupted"
    resumed = run(_cfg(tmp_path, "part", resume=True))
    assert resumed.steps == 48
    _assert_same_model(_state(tmp_path / "cpu"), _state(tmp_path / "part"))
    rows = _state(tmp_path / "part")["hot_rows"]
    assert len(rows) == 26 and sum(r.numel() for r in rows) > 0


def test_fae_schedule_keeps_unscheduled_accuracy(tmp_path):
    """FAE regroups samples into hot and cold batches: the same samples per window, another
    order. On the planted-teacher data its AUC stays within 0.01 of unscheduled training."""
    kw = dict(num_batches=150, test_freq=0, hot_cache_budget="160K", hot_window_batches=16)
    base = run(_cfg(tmp_path, "base", **{**kw, "hot_cache_budget": ""}))
    fae = run(_cfg(tmp_path, "fae", **kw))
    frac = fae.cache["scheduled_hot_fraction"]
    assert frac > 0.2, frac  # enough hot batches for the schedule to matter
    a, b = base.final["test"]["auc"], fae.final["test"]["auc"]
    assert abs(a - b) < 0.01, (a, b)


def test_report_and_plot_in_the_run_dir(tmp_path):
    res = run(_cfg(tmp_path, "r", num_batches=12, plots=True))
    rep = json.loads((tmp_path / "r" / "hotset.json").read_text())
    assert rep["budget"] == 96 * 1024 and 0 < rep["bytes_used"] <= rep["budget"]
    assert rep["popularity"] == "profile" and len(rep["tables"]) == 26
    assert 0 < rep["lookup_coverage"] <= 1 and 0 <= rep["hot_sample_fraction"] <= 1
    cov = [p["coverage"] for p in rep["curve"]]
    assert cov == sorted(cov) and len(cov) >= 8
    assert (tmp_path / "r" / "hotset.png").stat().st_size > 1000
    assert res.cache["tier_bytes"] <= rep["budget"]


@pytest.mark.parametrize("kw,match", [
    (dict(hot_cache_budget="1"), "smaller than one row"),
    (dict(hot_cache_budget="lots"), "--hot-cache-budget must be a positive number"),
    (dict(profile_fraction=0.0), "--profile-fraction must be in \\(0, 1\\]"),
    (dict(profile_fraction=1.5), "--profile-fraction must be in \\(0, 1\\]"),
    (dict(hot_device="cuda"), "add --device cuda"),
    (dict(device="cuda", hot_device="cpu"), "--hot-device cuda, FAE's hybrid mode. or nowhere"),
    (dict(data_generation="random", arch_embedding_size="-".join(["50"] * 4),
          num_indices_per_lookup=3), "fixed-size bags"),
])
def test_bad_cache_flags_are_named(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        run(_cfg(tmp_path, "bad", num_batches=4, **kw))


KAGGLE_HEAD = (__import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data"
               / "criteo" / "kaggle_head1000_trailing_fields_stripped.tsv")


@pytest.mark.skipif(not KAGGLE_HEAD.is_file(), reason="../shared/data Criteo sample absent")
def test_popularity_from_the_preprocessor_dictionaries(tmp_path):
    """Real Criteo rows: the dictionaries' counts are the exact lookup counts of the rows they
    were fit on (train only here), and `order: frequency` puts each table's hot set at the front
    of its ids, so it is remapped by a prefix test."""
    from dlrmx.cache import HotMap
    from dlrmx.data.format import open_split, read_spec
    from dlrmx.popularity import row_bytes, select
    from dlrmx.popularity.profile import from_dictionaries
    from dlrmx.preprocess import preset
    from dlrmx.preprocess import run as preprocess

    out = tmp_path / "criteo"
    cfg = preset("criteo-kaggle")
    cfg.categorical_ops.fit_on = "train"
    preprocess(cfg, [str(KAGGLE_HEAD)], out, engine="polars")
    pop = from_dictionaries(out)
    assert pop is not None and pop.source == "dictionaries" and pop.prefix_ordered
    train = np.asarray(open_split(out, "train").sparse)
    sizes = read_spec(out)["table_sizes"]
    for t, n in enumerate(sizes):
        exact = np.bincount(train[:, t], minlength=n)
        assert np.array_equal(pop.counts[t], exact), t
    chosen = select(pop.counts, [row_bytes(8)] * len(sizes), 20_000, pop.totals)
    hm = HotMap(chosen.rows, sizes)
    # frequency order: the hot set is one run of ids at the front (after the reserved row 0
    # when that is cold), remapped by a range test without a map
    runs = sum(m is None for m in hm.maps)
    assert runs >= 20, runs

    res = run(_cfg(tmp_path, "run", data_generation="dataset", processed_data_file=str(out),
                   mini_batch_size=64, hot_cache_budget="20K", num_batches=0, nepochs=2,
                   test_freq=-1))
    rep = json.loads((tmp_path / "run" / "hotset.json").read_text())
    assert rep["popularity"] == "dictionaries" and rep["prefix_ordered"]
    assert res.steps == 2 * (read_spec(out)["rows"]["train"] // 64)


def test_profiling_names_an_id_out_of_range():
    from dlrmx.data.loader import BatchSource, make_batch
    from dlrmx.popularity.profile import profile

    class Bad(BatchSource):
        table_sizes = [10, 10]

        def get(self, split, index, batch_size, epoch=0):
            sparse = np.array([[1, 2], [3, 12]], dtype=np.int32)  # table 1 has 10 rows
            return make_batch(np.zeros((2, 13), np.float32), sparse, np.zeros(2, np.float32))

    with pytest.raises(IndexError, match=r"profiling train batch 0, table 1: ids\[1\] = 12"):
        profile(Bad(), 2, 1, 1.0)
