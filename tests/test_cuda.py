"""dlrmx's CUDA kernels (kernels/cuda, dlrmx.cuda) against the CPU kernels on the same inputs:
random batches with duplicate ids, empty bags, padding, odd and wide dims, every pooling,
per-sample weights, every sparse optimizer, the interaction, the sketch and the cache.

Bit-equal where both sides do the same operations in the same order (pooling and gradients
that only add, max pooling, integer kernels, row copies, the error messages); otherwise within
a few ulp: the CPU's scalar level does not fuse multiply-adds and its row-wise Adagrad sums the
squares in vector order. The CUDA results must also be deterministic: the same call twice gives
the same bits. Skipped without a GPU or without the built library (ci/cuda_compile.sh checks
that the kernels compile).
"""

import numpy as np
import pytest
import torch

from dlrmx import cuda as dcuda
from dlrmx import native_ops
from dlrmx.cache import HotMap
from dlrmx.popularity import CountMinSketch, ExactCounter

if not torch.cuda.is_available():
    REASON = "no CUDA device (torch.cuda.is_available() is False)"
elif dcuda.lib is None:
    REASON = f"dlrmx's CUDA kernels are not built: {dcuda.load_error}"
else:
    REASON = ""
gpu = pytest.mark.skipif(bool(REASON), reason=REASON or "n/a")
DEV = torch.device("cuda") if torch.cuda.is_available() else None
CPU = native_ops.EAGER
POOLINGS = {"sum": 0, "mean": 1, "max": 2}


def test_imports_cleanly_and_says_why_it_is_unavailable():
    """On any machine: the module imports; without the library it says why, and ops refuse."""
    assert isinstance(dcuda.available(), bool)
    if dcuda.lib is None:
        assert dcuda.load_error
        with pytest.raises(RuntimeError, match="CUDA kernels are not available"):
            dcuda._require()
    if not torch.backends.cuda.is_built():
        assert dcuda._IMPL_LIB is None  # a CPU-only torch gets no CUDA registrations


# ---- batches ------------------------------------------------------------------------------------

def make_batch(rows=(50, 1, 300), dims=(16, 5, 64), B=17, max_len=6, ids_dtype=torch.int64,
               pad=None, seed=0, dtype=torch.float32):
    """Weights (CPU), ids (skewed: many duplicates), offsets (T*B+1, empty bags), padding."""
    g = torch.Generator().manual_seed(seed)
    T = len(rows)
    lens = torch.randint(0, max_len + 1, (T * B,), generator=g)
    lens[torch.rand(T * B, generator=g) < 0.2] = 0
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lens.cumsum(0)])
    ids = []
    for t in range(T):
        n = int(lens[t * B:(t + 1) * B].sum())
        x = (torch.rand(n, generator=g) ** 3 * rows[t]).long().clamp_(max=rows[t] - 1)
        ids.append(x)
    ids = torch.cat(ids).to(ids_dtype)
    padding = [-1] * T if pad is None else [p % r if p is not None else -1 for p, r in zip(pad, rows)]
    weights = [torch.randn(r, d, generator=g).to(dtype) for r, d in zip(rows, dims)]
    return weights, ids, offsets, padding


def to_dev(xs):
    return [x.to(DEV) for x in xs]


def same(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype
    assert torch.equal(a.cpu(), b.cpu()), (a.cpu() - b.cpu()).abs().max()


def close(gpu_value, cpu_value, rtol=2e-5, atol=2e-6):
    torch.testing.assert_close(gpu_value.cpu(), cpu_value, rtol=rtol, atol=atol)


SHAPES = [
    dict(rows=(50, 1, 300), dims=(16, 5, 64)),       # vector and odd dims, a one-row table
    dict(rows=(7, 400), dims=(128, 160)),            # one pass, and two passes of 128 columns
    dict(rows=(3, 1000, 2), dims=(3, 260, 1)),       # odd dims beyond one pass
]


# ---- forward ------------------------------------------------------------------------------------

@gpu
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("pooling", ["sum", "mean", "max"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("ids_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("pad", [False, True])
def test_forward_equals_cpu(shape, pooling, dtype, ids_dtype, pad):
    w, ids, off, padding = make_batch(**shape, ids_dtype=ids_dtype, dtype=dtype,
                                      pad=[0] * len(shape["rows"]) if pad else None)
    p = POOLINGS[pooling]
    ref, ref_am = CPU.embedding_bag_forward(w, ids, off, None, padding, p, 17)
    out, am = torch.ops.dlrmx.embedding_bag_forward(to_dev(w), ids.to(DEV), off.to(DEV), None,
                                                    padding, p, 17)
    same(out, ref)  # sums of rows in id order, mean as sum * (1/n), max: exact on both sides
    if pooling == "max":
        same(am, ref_am)


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_per_sample_weights(dtype):
    w, ids, off, padding = make_batch(dtype=dtype)
    psw = torch.rand(ids.numel())
    ref, _ = CPU.embedding_bag_forward(w, ids, off, psw, padding, 0, 17)
    out, _ = torch.ops.dlrmx.embedding_bag_forward(to_dev(w), ids.to(DEV), off.to(DEV),
                                                   psw.to(DEV), padding, 0, 17)
    close(out, ref)


@gpu
def test_forward_unaligned_tables_take_the_scalar_path():
    """A table starting 4 bytes into its storage cannot be read 16 bytes at a time."""
    w, ids, off, padding = make_batch(rows=(40, 9), dims=(64, 32))
    dev = []
    for t in w:
        big = torch.empty(t.numel() + 1, device=DEV)
        view = big[1:].view(t.shape)
        view.copy_(t.to(DEV))
        dev.append(view)
    for p in (0, 1, 2):
        ref, ref_am = CPU.embedding_bag_forward(w, ids, off, None, padding, p, 17)
        out, am = torch.ops.dlrmx.embedding_bag_forward(dev, ids.to(DEV), off.to(DEV), None,
                                                        padding, p, 17)
        same(out, ref)
        if p == 2:
            same(am, ref_am)


@gpu
def test_forward_edge_sizes():
    # batch 0: one offset, no ids
    w = [torch.randn(5, 8)]
    out, _ = torch.ops.dlrmx.embedding_bag_forward(to_dev(w), torch.zeros(0, dtype=torch.int64,
                                                   device=DEV), torch.zeros(1, dtype=torch.int64,
                                                   device=DEV), None, [-1], 0, 0)
    assert out.shape == (0, 8)
    # every bag empty: zeros (max: argmax -1)
    off = torch.zeros(4, dtype=torch.int64)
    for p in (0, 1, 2):
        ref, ref_am = CPU.embedding_bag_forward(w, torch.zeros(0, dtype=torch.int64), off, None,
                                                [-1], p, 3)
        out, am = torch.ops.dlrmx.embedding_bag_forward(to_dev(w), torch.zeros(0, dtype=torch.int64,
                                                        device=DEV), off.to(DEV), None, [-1], p, 3)
        same(out, ref)
        if p == 2:
            same(am, ref_am)
    # a zero-width table beside a normal one
    w, ids, off, padding = make_batch(rows=(4, 6), dims=(0, 7))
    ref, _ = CPU.embedding_bag_forward(w, ids, off, None, padding, 0, 17)
    out, _ = torch.ops.dlrmx.embedding_bag_forward(to_dev(w), ids.to(DEV), off.to(DEV), None,
                                                   padding, 0, 17)
    same(out, ref)


# ---- gradients ----------------------------------------------------------------------------------

def _grad_case(pooling, psw, shape, seed=1):
    w, ids, off, padding = make_batch(**shape, seed=seed, pad=[1] * len(shape["rows"]))
    p = POOLINGS[pooling]
    weights = torch.rand(ids.numel()) if psw else None
    _, am = CPU.embedding_bag_forward(w, ids, off, weights, padding, p, 17)
    go = torch.randn(17, sum(shape["dims"]))
    cpu_args = (go, w, ids, off, weights, padding, p, 17, am)
    gpu_args = (go.to(DEV), to_dev(w), ids.to(DEV), off.to(DEV),
                None if weights is None else weights.to(DEV), padding, p, 17, am.to(DEV))
    exact = pooling != "mean" and not psw  # only additions on both sides
    return cpu_args, gpu_args, exact


CASES = [("sum", False), ("sum", True), ("mean", False), ("max", False)]


@gpu
@pytest.mark.parametrize("pooling,psw", CASES)
@pytest.mark.parametrize("shape", SHAPES)
def test_dense_grad_equals_cpu(pooling, psw, shape):
    cpu_args, gpu_args, exact = _grad_case(pooling, psw, shape)
    ref = CPU.embedding_bag_dense_grad(*cpu_args)
    got = torch.ops.dlrmx.embedding_bag_dense_grad(*gpu_args)
    again = torch.ops.dlrmx.embedding_bag_dense_grad(*gpu_args)
    for r, g, a in zip(ref, got, again):
        same(g, a)  # deterministic
        same(g, r) if exact else close(g, r)


@gpu
@pytest.mark.parametrize("pooling,psw", CASES)
@pytest.mark.parametrize("shape", SHAPES)
def test_sparse_grad_equals_cpu(pooling, psw, shape):
    cpu_args, gpu_args, exact = _grad_case(pooling, psw, shape)
    ref_rows, ref_values = CPU.embedding_bag_sparse_grad(*cpu_args)
    rows, values = torch.ops.dlrmx.embedding_bag_sparse_grad(*gpu_args)
    for rr, rv, r, v in zip(ref_rows, ref_values, rows, values):
        same(r, rr)  # the distinct rows, ascending
        same(v, rv) if exact else close(v, rv)


# ---- fused updates ------------------------------------------------------------------------------

def _split(master):
    bits = master.view(torch.int32)
    hi = (bits >> 16).to(torch.int16).view(torch.bfloat16)
    lo = (bits & 0xFFFF).to(torch.int16)
    return hi.contiguous(), lo.contiguous()


def _join(hi, lo):
    bits = (hi.view(torch.int16).to(torch.int32) << 16) | (lo.to(torch.int32) & 0xFFFF)
    return bits.view(torch.float32)


def _state(optimizer, w):
    if optimizer == "rowwise_adagrad":
        return [torch.rand(t.shape[0]) for t in w]
    if optimizer == "adagrad":
        return [torch.rand(t.shape) for t in w]
    return []


@gpu
@pytest.mark.parametrize("optimizer", ["sgd", "split_sgd", "rowwise_adagrad", "adagrad"])
@pytest.mark.parametrize("pooling,psw", CASES)
@pytest.mark.parametrize("shape", SHAPES)
def test_update_equals_cpu(optimizer, pooling, psw, shape):
    cpu_args, gpu_args, _ = _grad_case(pooling, psw, shape, seed=2)
    masters = [t.clone() for t in cpu_args[1]]
    if optimizer == "split_sgd":
        halves = [_split(m) for m in masters]
        w_cpu = [h for h, _ in halves]
        state_cpu = [lo for _, lo in halves]
    else:
        w_cpu, state_cpu = masters, _state(optimizer, masters)
    # the forward's argmax of the weights as stored (bf16 upper halves for split_sgd)
    p, psw_t, padding = cpu_args[6], cpu_args[4], cpu_args[5]
    _, am = CPU.embedding_bag_forward(w_cpu, cpu_args[2], cpu_args[3], psw_t, padding, p, 17)
    w_gpu, state_gpu = to_dev(w_cpu), to_dev(state_cpu)
    w_again, state_again = to_dev(w_cpu), to_dev(state_cpu)
    rest_cpu = (cpu_args[2], cpu_args[3], psw_t, padding, p, 17, am)
    rest_gpu = (*gpu_args[2:8], am.to(DEV))
    CPU.embedding_bag_update(cpu_args[0], w_cpu, *rest_cpu, optimizer, 0.05, 1e-8, state_cpu)
    for w, s in ((w_gpu, state_gpu), (w_again, state_again)):
        torch.ops.dlrmx.embedding_bag_update(gpu_args[0], w, *rest_gpu, optimizer, 0.05, 1e-8, s)
    for a, b in zip(w_gpu + state_gpu, w_again + state_again):
        same(a, b)  # deterministic: same bits on a second run
    if optimizer == "split_sgd":
        for (h, lo), hr, lr in zip(zip(w_gpu, state_gpu), w_cpu, state_cpu):
            close(_join(h.cpu(), lo.cpu()), _join(hr, lr))
    else:
        for a, b in zip(w_gpu + state_gpu, w_cpu + state_cpu):
            close(a, b)


# ---- bad input: the CPU's exceptions and messages, nothing written --------------------------------

def _message(fn, *args):
    try:
        fn(*args)
    except (IndexError, ValueError) as e:
        return type(e), str(e)
    raise AssertionError("no error")


@gpu
def test_bad_ids_and_offsets_raise_the_cpu_errors_before_any_write():
    w, ids, off, padding = make_batch()
    T = len(w)
    bad_cases = []
    x = ids.clone()
    x[int(off[17 + 3])] = 1  # table 1 has one row: a 1 there is out of range
    x[-1] = -5
    bad_cases.append((x, off))
    o = off.clone()
    o[0] = 2
    bad_cases.append((ids, o))
    o = off.clone()
    o[5] = o[4] - 1
    bad_cases.append((ids, o))
    o = off.clone()
    o[-1] += 1
    bad_cases.append((ids, o))
    go = torch.randn(17, sum(t.shape[1] for t in w))
    empty = torch.empty(0, dtype=torch.int64)
    for x, o in bad_cases:
        want = _message(CPU.embedding_bag_forward, w, x, o, None, padding, 0, 17)
        got = _message(torch.ops.dlrmx.embedding_bag_forward, to_dev(w), x.to(DEV), o.to(DEV), None,
                       padding, 0, 17)
        assert got == want
        w_dev = to_dev(w)
        got = _message(torch.ops.dlrmx.embedding_bag_update, go.to(DEV), w_dev, x.to(DEV),
                       o.to(DEV), None, padding, 0, 17, empty.to(DEV), "sgd", 0.1, 0.0, [])
        assert got == want
        for a, b in zip(w_dev, w):
            same(a, b)  # no row changed
        got = _message(torch.ops.dlrmx.embedding_bag_dense_grad, go.to(DEV), to_dev(w), x.to(DEV),
                       o.to(DEV), None, padding, 0, 17, empty.to(DEV))
        assert got == want
    assert T == 3


@gpu
def test_tensor_checks():
    w, ids, off, padding = make_batch()
    with pytest.raises(TypeError, match="must be a CUDA tensor on"):
        torch.ops.dlrmx.embedding_bag_forward(to_dev(w), ids, off.to(DEV), None, padding, 0, 17)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        go = torch.zeros(17, 85, device=DEV)
        torch.ops.dlrmx.embedding_bag_update(go, to_dev(w), ids.to(DEV), off.to(DEV), None,
                                             padding, 0, 17, torch.empty(0, dtype=torch.int64,
                                             device=DEV), "sgd", float("nan"), 0.0, [])


# ---- autograd through the op ----------------------------------------------------------------------

@gpu
@pytest.mark.parametrize("optimizer", ["", "sgd", "rowwise_adagrad"])
def test_embedding_bags_op_trains_like_cpu(optimizer):
    w, ids, off, padding = make_batch(seed=5)
    go = torch.randn(17, sum(t.shape[1] for t in w))

    state0 = _state(optimizer, w)  # one draw: both runs start from the same state

    def run(device):
        weights = [t.clone().to(device) for t in w]
        if not optimizer:
            for t in weights:
                t.requires_grad_(True)
        anchor = torch.empty(0, device=device, requires_grad=bool(optimizer))
        state = [s.clone().to(device) for s in state0]
        hyper = torch.tensor([0.05, 1e-8], dtype=torch.float64)
        skipped = torch.zeros((), dtype=torch.int64)
        out = torch.ops.dlrmx.embedding_bags(anchor, weights, ids.to(device), off.to(device), None,
                                             padding, 0, 17, False, optimizer,
                                             hyper if optimizer else None, False, state,
                                             skipped if optimizer else None)
        out.backward(go.to(device))
        result = [t.grad for t in weights] if not optimizer else weights + state
        return out.detach(), [r.detach() for r in result]

    ref_out, ref = run(torch.device("cpu"))
    out, got = run(DEV)
    same(out, ref_out)
    for a, b in zip(got, ref):
        close(a, b)


# ---- interaction ---------------------------------------------------------------------------------

@gpu
@pytest.mark.parametrize("B,T,D", [(0, 3, 16), (1, 0, 8), (33, 1, 5), (64, 26, 16), (9, 26, 128),
                                   (2, 200, 300)])  # the last: too big for shared memory
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_interaction_equals_cpu(B, T, D, dtype):
    g = torch.Generator().manual_seed(B * 1000 + T)
    dense = torch.randn(B, D, generator=g).to(dtype)
    emb = torch.randn(B, T * D, generator=g).to(dtype)
    ref = CPU.dot_interaction(dense, emb)
    out = torch.ops.dlrmx.dot_interaction(dense.to(DEV), emb.to(DEV))
    same(out[:, :D], ref[:, :D])  # the passthrough, bit for bit
    tol = dict(rtol=2e-5, atol=1e-5) if dtype is torch.float32 else dict(rtol=1e-2, atol=1e-2)
    close(out.float(), ref.float(), **tol)
    grad = torch.randn(ref.shape, generator=g).to(dtype)
    ref_gd, ref_ge = CPU.dot_interaction_backward(grad, dense, emb)
    gd, ge = torch.ops.dlrmx.dot_interaction_backward(grad.to(DEV), dense.to(DEV), emb.to(DEV))
    close(gd.float(), ref_gd.float(), **tol)
    close(ge.float(), ref_ge.float(), **tol)


# ---- popularity counting -------------------------------------------------------------------------

@gpu
@pytest.mark.parametrize("conservative", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_sketch_equals_cpu(conservative, weighted):
    rng = np.random.default_rng(3)
    ids = (rng.zipf(1.2, 5000) * 7919).astype(np.int64)
    weights = rng.integers(0, 4, ids.size) if weighted else None
    cpu = CountMinSketch(width=1 << 10, depth=4, seed=9, conservative=conservative, track=0)
    cpu.update(ids, weights)
    table = torch.zeros(4, 1 << 10, dtype=torch.int64, device=DEV)
    dcuda.cms_update(table, cpu.log2_width, cpu.seeds, torch.from_numpy(ids).to(DEV),
                     None if weights is None else torch.from_numpy(weights).to(DEV), conservative)
    assert np.array_equal(table.cpu().numpy(), cpu.table)
    q = np.concatenate([ids[:100], np.arange(50)])
    assert np.array_equal(dcuda.cms_query(table, cpu.log2_width, cpu.seeds, q).cpu().numpy(),
                          cpu.query(q))


@gpu
def test_sketch_and_counter_errors():
    cpu = CountMinSketch(width=64, depth=2, track=0)
    table = torch.zeros(2, 64, dtype=torch.int64, device=DEV)
    ids = torch.arange(5, device=DEV)
    with pytest.raises(ValueError, match=r"weights\[3\] is -2; counts only grow"):
        dcuda.cms_update(table, cpu.log2_width, cpu.seeds, ids,
                         torch.tensor([1, 1, 1, -2, 1], device=DEV))
    assert int(table.sum()) == 0
    counter = ExactCounter(10)
    x = np.array([1, 2, 12, 3])
    want = _message(counter.update, x)
    counts = torch.zeros(10, dtype=torch.int64, device=DEV)
    assert _message(dcuda.exact_count, counts, torch.from_numpy(x).to(DEV)) == want
    assert int(counts.sum()) == 0
    x = np.random.default_rng(0).integers(0, 10, 1000)
    counter.update(x)
    dcuda.exact_count(counts, torch.from_numpy(x).to(DEV))
    assert np.array_equal(counts.cpu().numpy(), counter.counts)


# ---- the cache -----------------------------------------------------------------------------------

@gpu
@pytest.mark.parametrize("ids_dtype", [torch.int32, torch.int64])
def test_cache_remap_equals_cpu(ids_dtype):
    rng = np.random.default_rng(1)
    sizes = [37, 5, 1000, 129]
    hot = [rng.choice(37, 10, replace=False), np.arange(1, 3), rng.choice(1000, 300, replace=False),
           np.arange(5, 60)]  # tables 1 and 3: runs of ids (range test), 0 and 2: slot maps
    hm = HotMap(hot, sizes)
    B = 64
    lens = rng.integers(0, 4, (4, B))
    vals = np.concatenate([rng.integers(0, n, int(lens[t].sum())) for t, n in enumerate(sizes)])
    offsets = torch.from_numpy(np.concatenate([[0], lens.reshape(-1).cumsum()])).long()
    values = torch.from_numpy(vals).to(ids_dtype)
    ref_slots, ref_hot, ref_misses = hm.remap(values, offsets, B)
    gm = dcuda.HotMapCUDA(hm, DEV)
    slots, hot_flags, misses = gm.remap(values.to(DEV), offsets.to(DEV), B)
    same(slots, ref_slots)
    assert np.array_equal(hot_flags.cpu().numpy(), ref_hot) and misses == ref_misses
    bad = values.clone()
    bad[int(offsets[2 * B + 5])] = 1000
    assert _message(gm.remap, bad.to(DEV), offsets.to(DEV), B) == _message(hm.remap, bad, offsets, B)


@gpu
def test_gather_scatter_rows():
    src = torch.randn(100, 7, device=DEV)  # 28-byte rows: 4-byte copies
    idx = torch.tensor([5, 0, 99, 5, 42], device=DEV)
    out = torch.empty(5, 7, device=DEV)
    same(dcuda.gather_rows(src, idx, out), src[idx])
    dst = torch.zeros(100, 7, device=DEV)
    uniq = torch.tensor([3, 1, 77], device=DEV)
    dcuda.scatter_rows(src[:3], uniq, dst)
    ref = torch.zeros(100, 7, device=DEV)
    ref[uniq] = src[:3]
    same(dst, ref)
    wide = torch.randn(50, 64, dtype=torch.bfloat16, device=DEV)  # 128-byte rows: 16-byte copies
    same(dcuda.gather_rows(wide, idx[:2], torch.empty(2, 64, dtype=torch.bfloat16, device=DEV)),
         wide[idx[:2]])
    with pytest.raises(IndexError, match=r"gather rows: rows\[1\] = 100 is outside the table's rows \[0, 100\)"):
        dcuda.gather_rows(src, torch.tensor([1, 100], device=DEV), out)


# ---- the modules, the dense optimizers and the trainer on CUDA -----------------------------------

@gpu
@pytest.mark.parametrize("optimizer", ["sgd", "split_sgd", "rowwise_adagrad"])
def test_embedding_bag_collection_trains_like_cpu(optimizer):
    """dlrmx.nn on device='cuda' (ops.embedding_bags dispatching to the CUDA kernels)."""
    import dlrmx.nn as dnn

    tables = [(50, 16), (1, 5), (300, 64)]
    init = [torch.randn(r, d) for r, d in tables]
    w, ids, off, _ = make_batch(seed=7)
    go = torch.randn(17, 85)
    out = {}
    for dev in ("cpu", DEV):
        ebc = dnn.EmbeddingBagCollection(tables, "sum", device=dev, init_weights=init,
                                         optimizer=dnn.make_sparse_optimizer(optimizer, lr=0.1))
        y = ebc(ids.to(dev), offsets=off.to(dev))
        y.backward(go.to(dev))
        out[str(dev)] = (y.detach().cpu(), [t.cpu() for t in ebc.fp32_weights()])
    (y_cpu, w_cpu), (y_gpu, w_gpu) = out["cpu"], out[str(DEV)]
    close(y_gpu, y_cpu)
    for a, b in zip(w_gpu, w_cpu):
        close(a, b)


@gpu
def test_dense_optimizer_steps_on_cuda_equal_cpu():
    from dlrmx.nn.sparse_optim import combine_fp32
    from dlrmx.optim import Lamb, SplitSGD

    for cls in (Lamb, SplitSGD):
        models = [torch.nn.Linear(37, 13).to(d) for d in ("cpu", DEV)]
        models[1].load_state_dict(models[0].state_dict())
        opts = [cls(m.parameters(), lr=0.05) for m in models]
        for step in range(3):
            x = torch.randn(8, 37)
            for m, o, d in zip(models, opts, ("cpu", DEV)):
                o.zero_grad()
                m(x.to(d).to(m.weight.dtype)).float().sum().backward()
                o.step()
        for p, q in zip(models[0].parameters(), models[1].parameters()):
            if cls is SplitSGD:  # the exact fp32 weights
                p = combine_fp32(p, opts[0].state[p]["trail"])
                q = combine_fp32(q, opts[1].state[q]["trail"])
            close(q.detach(), p.detach(), rtol=1e-4, atol=1e-5)


def _train(tmp_path, name, on_step=None, **kw):
    from dlrmx.train import TrainConfig, run

    cfg = TrainConfig(run_dir=str(tmp_path / name), progress=False, plots=False, threads=2,
                      arch_sparse_feature_size=8, arch_mlp_bot="13-16-8", arch_mlp_top="16-1",
                      mini_batch_size=128, learning_rate=0.3, synthetic_scale=0.0005,
                      eval_samples=4096, num_batches=24, test_freq=12, gemm_library="mkl",
                      precision="fp32", **kw)
    return run(cfg, on_step=on_step)


@gpu
@pytest.mark.parametrize("optimizer", ["sgd", "lamb", "rowwise_adagrad"])
def test_trainer_on_cuda_matches_the_cpu_run(tmp_path, optimizer):
    cpu = _train(tmp_path, "cpu", optimizer=optimizer)
    gpu_run = _train(tmp_path, "cuda", optimizer=optimizer, device="cuda")
    assert gpu_run.final["test"]["auc"] == pytest.approx(cpu.final["test"]["auc"], abs=2e-3)
    assert gpu_run.final["test"]["loss"] == pytest.approx(cpu.final["test"]["loss"], rel=1e-3)


@gpu
def test_hybrid_mode_equals_host_tables_alone_and_resumes(tmp_path):
    """FAE's hybrid mode: hot rows on the GPU against the same schedule with every lookup on the
    host (--hot-device none); and a checkpointed hybrid run resumes."""
    kw = dict(device="cuda", hot_cache_budget="96K", hot_window_batches=8, profile_fraction=0.25,
              checkpoint_freq=7)
    host = _train(tmp_path, "none", hot_device="none", **kw)
    hybrid = _train(tmp_path, "cuda", hot_device="cuda", **kw)
    assert hybrid.cache["hot_batches"] > 3 and hybrid.cache["flushes"] > 0, hybrid.cache
    assert host.cache["hot_batches"] == 0
    assert hybrid.final["test"]["auc"] == pytest.approx(host.final["test"]["auc"], abs=1e-4)

    def interrupt(step):
        if step == 10:  # after the checkpoint at 7, mid-window
            raise KeyboardInterrupt
    assert _train(tmp_path, "part", interrupt, hot_device="cuda", **kw).stopped == "interrupted"
    resumed = _train(tmp_path, "part", hot_device="cuda", resume=True, **kw)
    assert resumed.steps == hybrid.steps
    assert resumed.final["test"]["auc"] == pytest.approx(hybrid.final["test"]["auc"], abs=1e-6)
