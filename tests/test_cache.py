"""The hot/cold cache: the remap/classify and row-copy kernels against Python references, and
training through the cache bit-equal to training without it."""

import numpy as np
import pytest
import torch

from dlrmx.cache import CachedEmbeddingBagCollection, HotMap, gather_rows, scatter_rows
from dlrmx.nn import EmbeddingBagCollection, make_sparse_optimizer

SIZES = [37, 5, 1000, 129]
DIM = 8


def _batch(rng, sizes, b, bag_sizes=None, hot=None, dtype=torch.int64):
    """A table-major batch; with `hot` (per table, the hot rows) every id is drawn from them."""
    bag_sizes = bag_sizes or [1] * len(sizes)
    vals, offs = [], [0]
    for t, (n, s) in enumerate(zip(sizes, bag_sizes)):
        pool = hot[t] if hot is not None else np.arange(n)
        ids = rng.choice(pool, (b, s))
        vals.append(ids.reshape(-1))
        offs.extend(offs[-1] + s * np.arange(1, b + 1))
    return torch.from_numpy(np.concatenate(vals)).to(dtype), torch.tensor(offs, dtype=torch.int64)


def _hot_rows(rng, sizes, frac=0.3, runs=(1, 3)):
    rows = []
    for t, n in enumerate(sizes):  # tables in `runs`: one run of ids [t, t + k)
        k = max(1, int(n * frac))
        rows.append(np.arange(t, t + k) if t in runs else rng.choice(n, k, replace=False))
    return rows


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("bag_sizes", [None, [3, 1, 2, 4]])
def test_remap_and_classify_equal_python(dtype, bag_sizes):
    rng = np.random.default_rng(0)
    rows = _hot_rows(rng, SIZES)
    hm = HotMap(rows, SIZES)
    assert hm.maps[1] is None and hm.maps[3] is None and hm.maps[0] is not None  # runs: no map
    b = 53
    values, offsets = _batch(rng, SIZES, b, bag_sizes, dtype=dtype)
    slots, hot, misses = hm.remap(values, offsets, b)
    want = np.empty(values.numel(), dtype=np.int64)
    want_hot = np.ones(b, dtype=bool)
    for t, r in enumerate(rows):
        slot_of = {int(x): i for i, x in enumerate(np.sort(r))}
        for bag in range(t * b, (t + 1) * b):
            for j in range(int(offsets[bag]), int(offsets[bag + 1])):
                want[j] = slot_of.get(int(values[j]), -1)
                want_hot[bag - t * b] &= want[j] >= 0
    assert np.array_equal(slots.numpy(), want)
    assert np.array_equal(hot, want_hot) and misses == int((want < 0).sum())
    assert np.array_equal(hm.classify(values, offsets, b), want_hot)


def test_remap_names_table_and_position_of_a_bad_id():
    hm = HotMap([np.arange(3)] * 2, [10, 10])
    values = torch.tensor([1, 2, 3, 10, 4, 5])
    offsets = torch.arange(7)
    with pytest.raises(IndexError, match=r"table 1: values\[3\] = 10 is outside its rows \[0, 10\)"):
        hm.remap(values, offsets, 3)
    with pytest.raises(ValueError, match="T\\*B\\+1"):
        hm.remap(values, offsets[:-1], 3)
    with pytest.raises(IndexError, match="outside its rows"):
        HotMap([np.array([10])], [10])
    with pytest.raises(ValueError, match="repeat"):
        HotMap([np.array([1, 1])], [10])


@pytest.mark.parametrize("dtype,shape", [(torch.float32, (100, 8)), (torch.bfloat16, (100, 16)),
                                         (torch.int16, (100, 3)), (torch.float32, (100,))])
def test_gather_scatter_equal_indexing(dtype, shape):
    g = torch.Generator().manual_seed(0)
    src = torch.randn(shape, generator=g).to(dtype)
    idx = torch.randperm(shape[0], generator=g)[:37]
    out = torch.empty((37, *shape[1:]), dtype=dtype)
    assert torch.equal(gather_rows(src, idx.numpy(), out), src[idx])
    dst = torch.zeros(shape, dtype=dtype)
    want = dst.clone()
    want[idx] = out
    assert torch.equal(scatter_rows(out, idx.numpy(), dst), want)
    with pytest.raises(IndexError, match=r"rows\[0\] = 100"):
        gather_rows(src, [100], out)
    with pytest.raises(ValueError, match="cannot"):
        gather_rows(src, idx.numpy(), torch.empty((37, 99), dtype=dtype))


def _pair(opt_name, rows, hot_device="cpu"):
    kw = dict(lr=0.05) if opt_name != "adagrad" else dict(lr=0.05, eps=1e-6)
    init = [torch.randn(n, DIM, generator=torch.Generator().manual_seed(n)) for n in SIZES]
    plain = EmbeddingBagCollection([(n, DIM) for n in SIZES], "sum", init_weights=init,
                                   optimizer=make_sparse_optimizer(opt_name, **kw))
    cached = CachedEmbeddingBagCollection([(n, DIM) for n in SIZES], "sum", init_weights=init,
                                          optimizer=make_sparse_optimizer(opt_name, **kw),
                                          hot_rows=rows, hot_device=hot_device)
    return plain, cached


@pytest.mark.parametrize("opt_name", ["sgd", "split_sgd", "rowwise_adagrad", "adagrad"])
@pytest.mark.parametrize("staged", [False, True])
def test_training_through_the_cache_is_bit_equal(opt_name, staged):
    """staged: the syncs go through host staging buffers, as a GPU replica's do."""
    rng = np.random.default_rng(1)
    rows = _hot_rows(rng, SIZES)
    plain, cached = _pair(opt_name, rows)
    if staged:
        cached._staging = {id(r): torch.full_like(r, float("nan")) if r.is_floating_point()
                           else torch.full_like(r, -7) for r in (*cached._replica,
                                                                 *cached._replica_state)}
    kinds = "hhcchhhchcch"
    for step, kind in enumerate(kinds):
        b = 31 + step  # batch sizes that are not round
        values, offsets = _batch(rng, SIZES, b, [2, 1, 3, 1], hot=rows if kind == "h" else None)
        grad = torch.randn(b, DIM * len(SIZES), generator=torch.Generator().manual_seed(step))
        outs = []
        for m in (plain, cached):
            out = m(values, offsets=offsets)
            (out * grad).sum().backward()
            outs.append(out.detach())
        assert torch.equal(outs[0], outs[1]), step
        if step == 6:  # evaluation in between reads the synced master
            cached.eval()
            with torch.no_grad():
                assert torch.equal(plain(values, offsets=offsets), cached(values, offsets=offsets))
            cached.train()
    assert cached.stats["hot_batches"] >= 5 and cached.stats["flushes"] >= 2
    a, b = plain.state_dict(), cached.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for x, y in zip(plain.fp32_weights(), cached.fp32_weights()):
        assert torch.equal(x, y)


def test_loaded_state_refreshes_the_replica():
    rng = np.random.default_rng(2)
    rows = _hot_rows(rng, SIZES)
    plain, cached = _pair("sgd", rows)
    values, offsets = _batch(rng, SIZES, 16, hot=rows)
    cached(values, offsets=offsets).sum().backward()  # the replica holds trained rows
    cached.load_state_dict(plain.state_dict())  # back to the initial weights
    cached.eval()
    with torch.no_grad():
        assert torch.equal(cached(values, offsets=offsets), plain(values, offsets=offsets))
    cached.train()
    for m in (plain, cached):
        m(values, offsets=offsets).sum().backward()
    for x, y in zip(plain.fp32_weights(), cached.fp32_weights()):
        assert torch.equal(x, y)


def test_bad_cache_arguments_are_named():
    rows = [np.arange(2)] * len(SIZES)
    with pytest.raises(ValueError, match="--hot-device"):
        _pair("sgd", rows, hot_device="tpu")
    with pytest.raises(ValueError, match="CUDA"):
        _pair("sgd", rows, hot_device="cuda")
    with pytest.raises(ValueError, match="fused sparse optimizer"):
        CachedEmbeddingBagCollection([(n, DIM) for n in SIZES], optimizer=None, hot_rows=rows)
