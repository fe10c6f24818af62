"""EmbeddingBagCollection: many tables in one call, against per-table torch modules, and the
fused sparse optimizers against float64 references written from their published formulas."""

import pytest
import torch

import dlrmx.nn as dn
from dlrmx import ops

TABLES = [(30, 16), (7, 3), (100, 64), (1, 8), (50, 130)]


def jagged_batch(tables, batch, max_len=6, dtype=torch.int64, seed=0):
    """TorchRec-style values/lengths with empty bags and duplicate ids, plus per-table views."""
    g = torch.Generator().manual_seed(seed)
    values, lengths, per_table = [], [], []
    for rows, _ in tables:
        lens = torch.randint(0, max_len + 1, (batch,), generator=g)
        ids = torch.randint(0, rows, (int(lens.sum()),), generator=g, dtype=dtype)
        values.append(ids)
        lengths.append(lens)
        per_table.append((ids, torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)[:-1]])))
    return torch.cat(values), torch.cat(lengths), per_table


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_collection_matches_per_table_torch(isa, mode, dtype):
    ebc = dn.EmbeddingBagCollection(TABLES, mode=mode)
    refs = [torch.nn.EmbeddingBag(r, d, mode=mode) for r, d in TABLES]
    for ref, w in zip(refs, ebc.weights):
        ref.weight.data.copy_(w.data)
    values, lengths, per_table = jagged_batch(TABLES, batch=9, dtype=dtype)
    out = ebc(values, lengths=lengths)
    expect = torch.cat([ref(ids, off) for ref, (ids, off) in zip(refs, per_table)], dim=1)
    torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-5)
    for view, ref_out in zip(ebc.split(out), torch.split(expect, ebc.dims, dim=1)):
        torch.testing.assert_close(view, ref_out)
    grad = torch.randn_like(out)
    out.backward(grad)
    expect.backward(grad)
    for w, ref in zip(ebc.weights, refs):
        torch.testing.assert_close(w.grad, ref.weight.grad, rtol=1e-5, atol=1e-5)


def test_offsets_and_lengths_agree():
    ebc = dn.EmbeddingBagCollection(TABLES)
    values, lengths, _ = jagged_batch(TABLES, batch=4)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    assert torch.equal(ebc(values, offsets=offsets), ebc(values, lengths=lengths))


def test_sparse_gradients_are_coalesced_and_correct():
    dense = dn.EmbeddingBagCollection(TABLES)
    sparse = dn.EmbeddingBagCollection(TABLES, sparse=True, init_weights=list(dense.weights))
    values, lengths, _ = jagged_batch(TABLES, batch=8)
    grad = torch.randn(8, sum(d for _, d in TABLES))
    dense(values, lengths=lengths).backward(grad)
    sparse(values, lengths=lengths).backward(grad)
    for d, s in zip(dense.weights, sparse.weights):
        assert s.grad.is_sparse
        rows = s.grad._indices()[0]  # one entry per touched row, sorted (autograd drops the flag)
        assert torch.equal(rows, torch.unique(rows))
        torch.testing.assert_close(s.grad.to_dense(), d.grad, rtol=1e-5, atol=1e-5)


# ---- fused optimizers vs float64 references ---------------------------------------------------

def reference_step(weights, states, values, lengths, grad_out, opt, batch):
    """One step in float64 from the formulas: row gradient = sum of its lookups' output grads."""
    col, pos = 0, 0
    lens = lengths.view(len(weights), batch)
    for t, w in enumerate(weights):
        d = w.shape[1]
        g = torch.zeros_like(w)
        for b in range(batch):
            n = int(lens[t, b])
            for i in values[pos : pos + n].tolist():
                g[i] += grad_out[b, col : col + d].double()
            pos += n
        touched = g.abs().sum(1) > 0
        if opt.name == "sgd":
            w -= opt.lr * g
        elif opt.name == "rowwise_adagrad":
            states[t] += torch.where(touched, (g * g).mean(1), 0.0)
            w -= opt.lr * g / (states[t].sqrt() + opt.eps)[:, None]
        elif opt.name == "adagrad":
            states[t] += g * g
            w -= torch.where(touched[:, None], opt.lr * g / (states[t].sqrt() + opt.eps), 0.0)
        col += d


@pytest.mark.parametrize("opt", [dn.SGD(lr=0.3), dn.RowWiseAdagrad(lr=0.3, eps=1e-6),
                                 dn.Adagrad(lr=0.3, eps=1e-6)], ids=lambda o: o.name)
def test_fused_optimizers_match_float64_reference(isa, opt):
    tables = [(20, 16), (5, 3), (40, 64)]
    ebc = dn.EmbeddingBagCollection(tables, optimizer=opt)
    ref_w = [w.detach().double().clone() for w in ebc.weights]
    ref_s = [torch.zeros(r, dtype=torch.float64) if opt.name == "rowwise_adagrad"
             else torch.zeros(r, d, dtype=torch.float64) for r, d in tables]
    for step in range(4):
        values, lengths, _ = jagged_batch(tables, batch=6, seed=step)
        out = ebc(values, lengths=lengths)
        grad = torch.randn_like(out)
        out.backward(grad)
        reference_step(ref_w, ref_s, values, lengths, grad, opt, batch=6)
        for w, r in zip(ebc.weights, ref_w):
            assert w.grad is None
            torch.testing.assert_close(w.detach().double(), r, rtol=1e-5, atol=1e-5)
    if opt.name != "sgd":
        for s, r in zip(ebc.optimizer_state(), ref_s):
            torch.testing.assert_close(s.double(), r, rtol=1e-5, atol=1e-6)


def test_fused_adagrad_equals_torch_adagrad():
    tables = [(30, 8)]
    fused = dn.EmbeddingBagCollection(tables, optimizer=dn.Adagrad(lr=0.1, eps=1e-10))
    plain = dn.EmbeddingBagCollection(tables, sparse=True, init_weights=list(fused.weights))
    opt = torch.optim.Adagrad(plain.parameters(), lr=0.1, eps=1e-10)
    for step in range(5):
        values, lengths, _ = jagged_batch(tables, batch=5, seed=step)
        grad = torch.randn(5, 8)
        fused(values, lengths=lengths).backward(grad)
        opt.zero_grad()
        plain(values, lengths=lengths).backward(grad)
        opt.step()
    torch.testing.assert_close(fused.weights[0].detach(), plain.weights[0].detach(), rtol=1e-5, atol=1e-6)


def test_split_sgd_is_bit_exact_fp32_sgd(isa):
    """Given the same gradients, split-SGD's rebuilt fp32 weights equal fp32 SGD bit for bit,
    and the bf16 table is the truncation of the master weights."""
    tables = [(50, 16), (9, 64), (11, 24)]  # 24: a 16-wide vector part and a scalar tail
    w32 = [torch.randn(r, d) for r, d in tables]
    split = [dn.split_fp32(w) for w in w32]
    upper, trails = [u.clone() for u, _ in split], [t.clone() for _, t in split]
    for step in range(120):
        values, lengths, _ = jagged_batch(tables, batch=4, seed=step)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        grad = torch.randn(4, 104)
        common = (values, offsets, None, [-1, -1, -1], 0, 4, torch.empty(0, dtype=torch.long))
        torch.ops.dlrmx.embedding_bag_update(grad, w32, *common, "sgd", 0.05, 0.0, [])
        torch.ops.dlrmx.embedding_bag_update(grad, upper, *common, "split_sgd", 0.05, 0.0, trails)
    for w, u, t in zip(w32, upper, trails):
        assert torch.equal(dn.combine_fp32(u, t).view(torch.int32), w.view(torch.int32))
        assert torch.equal(u.view(torch.int16), (w.view(torch.int32) >> 16).to(torch.int16))


def test_split_sgd_collection_forward_reads_bf16_and_trains():
    tables = [(40, 16), (10, 8)]
    ebc = dn.EmbeddingBagCollection(tables, optimizer=dn.SplitSGD(lr=0.1))
    assert all(w.dtype == torch.bfloat16 for w in ebc.weights)
    values, lengths, per_table = jagged_batch(tables, batch=5)
    out = ebc(values, lengths=lengths)
    expect = torch.cat([torch.nn.functional.embedding_bag(ids, w.float(), off, mode="sum")
                        for w, (ids, off) in zip(ebc.weights, per_table)], dim=1)
    torch.testing.assert_close(out, expect)
    before = [w.clone() for w in ebc.fp32_weights()]
    out.sum().backward()
    assert any(not torch.equal(a, b) for a, b in zip(before, ebc.fp32_weights()))


@pytest.mark.parametrize("opt", [dn.SGD(lr=0.1), dn.SplitSGD(lr=0.1), dn.RowWiseAdagrad(lr=0.1),
                                 dn.Adagrad(lr=0.1)], ids=lambda o: o.name)
def test_state_dict_round_trips_and_continues_identically(opt):
    tables = [(25, 8), (12, 16)]
    a = dn.EmbeddingBagCollection(tables, optimizer=opt)
    batches = [jagged_batch(tables, batch=4, seed=s)[:2] for s in range(6)]
    for values, lengths in batches[:3]:
        a(values, lengths=lengths).sum().backward()
    b = dn.EmbeddingBagCollection(tables, optimizer=type(opt)(lr=0.1))
    b.load_state_dict(a.state_dict())
    for values, lengths in batches[3:]:
        a(values, lengths=lengths).sum().backward()
        b(values, lengths=lengths).sum().backward()
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_forward_op_fake_and_schema():
    weights = [torch.randn(10, 4), torch.randn(6, 8)]
    ids = torch.tensor([1, 2, 3, 0, 5])
    offsets = torch.tensor([0, 2, 3, 4, 5])
    torch.library.opcheck(torch.ops.dlrmx.embedding_bag_forward.default,
                          (weights, ids, offsets, None, [-1, -1], 0, 2),
                          test_utils=("test_schema", "test_faketensor"))


def test_isa_levels_are_reported():
    info = ops.isa_info()
    assert info["compiled"] == ["scalar", "avx2", "avx512"]
    assert info["active"] in info["supported"]


@pytest.mark.parametrize("pooling, weighted", [("sum", False), ("sum", True), ("mean", False), ("max", False)])
def test_bf16_forward_matches_fp32_of_the_same_values(isa, pooling, weighted):
    """bf16 tables (split-SGD's upper halves) pool exactly like fp32 tables holding the same
    values, for every vector path (dims multiple of 32, of 16, and others)."""
    tables = [(40, 64), (30, 32), (20, 16), (25, 48), (10, 128), (9, 5)]
    bf16 = [torch.randn(r, d).to(torch.bfloat16) for r, d in tables]
    values, lengths, per_table = jagged_batch(tables, batch=7)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    psw = torch.rand(values.numel()) if weighted else None
    args = (values, offsets, psw, [3] * len(tables), ops.POOLING[pooling], 7)
    got, _ = torch.ops.dlrmx.embedding_bag_forward(bf16, *args)
    want, _ = torch.ops.dlrmx.embedding_bag_forward([w.float() for w in bf16], *args)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    ref, start = [], 0
    for w, (ids, off) in zip(bf16, per_table):
        table_psw = None if psw is None else psw[start : start + ids.numel()]
        ref.append(torch.nn.functional.embedding_bag(ids, w.float(), off, mode=pooling, padding_idx=3,
                                                     per_sample_weights=table_psw))
        start += ids.numel()
    torch.testing.assert_close(got, torch.cat(ref, dim=1), rtol=1e-5, atol=1e-5)


def test_a_backward_after_the_weights_moved_updates_them_where_they_are_now():
    # The forward's checked batch serves the backward only while the weights stay in place:
    # after `.data` is swapped (new storage), the update must land in the new storage.
    ebc = dn.EmbeddingBagCollection([(10, 4), (6, 4)], optimizer=dn.SGD(lr=1.0))
    ids, offsets = torch.tensor([1, 2, 5, 5]), torch.tensor([0, 1, 2, 3, 4])
    out = ebc(ids, offsets=offsets)
    old = [w.detach() for w in ebc.weights]
    before = [o.clone() for o in old]
    for w in ebc.weights:
        w.data = w.detach().clone()
    out.backward(torch.ones(2, 8))
    want = [b.clone() for b in before]
    want[0][[1, 2]] -= 1.0  # table 0: rows 1 and 2 once each
    want[1][5] -= 2.0  # table 1: row 5 in both bags
    for t in range(2):
        torch.testing.assert_close(ebc.weights[t].detach(), want[t])
        torch.testing.assert_close(old[t], before[t])  # the old storage is left alone
