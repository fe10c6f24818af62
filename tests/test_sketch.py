"""dlrmx.popularity: the count-min sketch's guarantees on Zipf data, conservative update,
merge, heavy hitters, thread-count independence, raw 64-bit keys, save/load; the exact counter
against NumPy; bad input. Each kernel test runs at every ISA level."""

import numpy as np
import pytest
import torch

from dlrmx.popularity import CountMinSketch, ExactCounter


def _zipf(n, seed=0, keys=False):
    ids = np.random.default_rng(seed).zipf(1.1, n).astype(np.int64)
    if keys:  # raw 64-bit keys (hashes), the full range including the sign bit
        ids = (ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)).view(np.int64)
    return ids


def _true(ids):
    u, c = np.unique(ids, return_counts=True)
    return u, c


@pytest.mark.parametrize("keys", [False, True])
def test_estimates_never_under_and_within_eps_n_with_prob_1_minus_delta(isa, keys):
    ids = _zipf(200_000, keys=keys)
    s = CountMinSketch(eps=2e-3, delta=0.01, track=0)
    for part in np.array_split(ids, 7):  # in uneven batches
        s.update(part)
    u, c = _true(ids)
    est = s.query(u)
    assert s.total == ids.size
    assert (est >= c).all()
    over = (est - c) > s.eps * ids.size
    assert over.mean() <= s.delta + 0.005, over.mean()
    assert (est - c).mean() < 0.5 * s.eps * ids.size  # well inside the bound on average


def test_conservative_update_never_under_and_never_above_plain(isa):
    ids = _zipf(50_000, seed=1)
    plain, cons = CountMinSketch(width=512, depth=3, track=0), \
        CountMinSketch(width=512, depth=3, conservative=True, track=0)
    plain.update(ids)
    cons.update(ids)
    u, c = _true(ids)
    ep, ec = plain.query(u), cons.query(u)
    assert (ec >= c).all() and (ec <= ep).all() and (ec < ep).any()


def test_weights_count_like_repeats(isa):
    a, b = CountMinSketch(width=256, depth=4), CountMinSketch(width=256, depth=4)
    a.update([5, 7, 7, 7, 2**40])
    b.update([5, 7, 2**40], weights=[1, 3, 1])
    assert np.array_equal(a.table, b.table) and a.total == b.total == 5
    with pytest.raises(ValueError, match="weights must be >= 0"):
        b.update([1], weights=[-1])
    with pytest.raises(ValueError, match="one weight per id"):
        b.update([1, 2], weights=[1])


def test_merge_equals_the_sketch_of_the_concatenated_stream(isa):
    x, y = _zipf(30_000, 2), _zipf(20_000, 3, keys=True)
    a, b, whole = (CountMinSketch(eps=1e-2, delta=0.05, seed=4) for _ in range(3))
    a.update(x)
    b.update(y)
    whole.update(np.concatenate([x, y]))
    a.merge(b)
    assert np.array_equal(a.table, whole.table) and a.total == whole.total
    with pytest.raises(ValueError, match="same shape and seeds"):
        a.merge(CountMinSketch(width=64, depth=2))
    with pytest.raises(ValueError, match="same shape and seeds"):
        a.merge(CountMinSketch(eps=1e-2, delta=0.05, seed=5))
    with pytest.raises(TypeError):
        a.merge(np.zeros(3))


def test_heavy_hitters_recover_the_planted_top_ids():
    rng = np.random.default_rng(7)
    planted = np.array([11, 2**50 + 3, -5, 77, 123456789])
    noise = rng.integers(0, 2**62, 100_000)
    ids = np.concatenate([noise, np.repeat(planted, [5000, 4000, 3000, 2000, 1000])])
    rng.shuffle(ids)
    s = CountMinSketch(eps=1e-3, delta=1e-3, track=64)
    for part in np.array_split(ids, 13):
        s.update(part)
    top, est = s.heavy_hitters(5)
    assert list(top) == list(planted)
    assert (est >= [5000, 4000, 3000, 2000, 1000]).all()


def test_update_is_the_same_for_any_thread_count():
    ids = _zipf(100_000, 8, keys=True)
    tables = []
    for nt in (1, 2, 3):
        before = torch.get_num_threads()
        torch.set_num_threads(nt)
        try:
            s = CountMinSketch(width=1024, depth=5, track=0)
            s.update(ids)
        finally:
            torch.set_num_threads(before)
        tables.append(s.table)
    assert all(np.array_equal(tables[0], t) for t in tables[1:])


def test_save_and_load_round_trip(tmp_path):
    s = CountMinSketch(eps=1e-2, delta=0.1, seed=9, conservative=True)
    s.update(_zipf(5000, 9))
    s.save(tmp_path / "s.pt")
    t = CountMinSketch.load(tmp_path / "s.pt")
    assert np.array_equal(s.table, t.table) and t.total == s.total and t.conservative
    ids = _zipf(100, 10)
    assert np.array_equal(s.query(ids), t.query(ids))
    assert s.heavy_hitters(3)[0].tolist() == t.heavy_hitters(3)[0].tolist()
    torch.save({"format": "other"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a dlrmx count-min sketch"):
        CountMinSketch.load(tmp_path / "x.pt")


def test_size_from_eps_and_delta_and_bad_arguments():
    s = CountMinSketch(eps=0.001, delta=0.01)
    assert s.width >= np.e / 0.001 and s.width & (s.width - 1) == 0 and s.depth == 5
    assert s.eps <= 0.001 and s.delta <= 0.01
    for kw in (dict(eps=0, delta=0.1), dict(eps=0.1, delta=1.5), dict(), dict(width=1, depth=3),
               dict(width=8, depth=0), dict(width=8, depth=2, track=-1)):
        with pytest.raises(ValueError):
            CountMinSketch(**kw)
    with pytest.raises(TypeError, match="must be integers"):
        s.update(np.array([1.5]))
    with pytest.raises(ValueError, match="heavy_hitters"):
        s.heavy_hitters(s.track + 1)


def test_exact_counter_equals_numpy_and_refuses_bad_ids(isa):
    ids = np.random.default_rng(11).integers(0, 1000, 77_777)
    c = ExactCounter(1000)
    for part in np.array_split(ids, 5):
        c.update(torch.from_numpy(part))
    assert np.array_equal(c.counts, np.bincount(ids, minlength=1000)) and c.total == ids.size
    top, counts = c.top(3)
    order = np.argsort(-np.bincount(ids, minlength=1000), kind="stable")[:3]
    assert top.tolist() == order.tolist() and counts.tolist() == np.bincount(ids)[order].tolist()
    before = c.counts.copy()
    with pytest.raises(IndexError, match=r"ids\[2\] = 1000 is outside"):
        c.update([1, 2, 1000, 3])
    with pytest.raises(IndexError, match=r"ids\[0\] = -1"):
        c.update([-1])
    assert np.array_equal(c.counts, before)  # nothing counted from a refused batch
    with pytest.raises(ValueError, match="rows must be >= 1"):
        ExactCounter(0)


def test_exact_counter_is_the_same_for_any_thread_count():
    ids = np.random.default_rng(12).integers(0, 5003, 50_000)
    out = []
    for nt in (1, 2, 4):
        before = torch.get_num_threads()
        torch.set_num_threads(nt)
        try:
            c = ExactCounter(5003)
            c.update(ids)
        finally:
            torch.set_num_threads(before)
        out.append(c.counts)
    assert all(np.array_equal(out[0], o) for o in out[1:])
