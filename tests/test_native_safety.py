"""Native memory safety (issue 8): every tensor an op reads or writes is checked (dtype, device,
layout, shape, contiguity of what it writes, no aliasing of what it writes), sizes are multiplied
without overflow, hyper-parameters are checked where they are used, and max pooling equals
torch's for NaN and +-inf. Probes that crashed the interpreter before the fix run in a subprocess,
so a regression fails a test instead of killing the run."""

import math
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import dlrmx.nn as dn
from dlrmx import ops
from dlrmx.models.interaction import dot_interaction
from dlrmx.optim import Lamb, SplitSGD

NAN, INF = math.nan, math.inf
LAMB_HYPER = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0, max_weight_norm=10.0)


def lamb(params, grads, m, v, **kw):
    h = {**LAMB_HYPER, **kw}
    torch.ops.dlrmx.lamb_step(params, grads, m, v, h["lr"], h["beta1"], h["beta2"], h["eps"],
                              h["weight_decay"], h["max_weight_norm"], True, 1)


def run_isolated(code: str) -> list[str]:
    """Runs `code` in a fresh interpreter; returns its stdout lines, or fails the test with the
    signal / exit status if it crashed."""
    try:
        res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                             text=True, timeout=60)
    except subprocess.TimeoutExpired as e:  # a corrupted heap can hang instead of crashing
        raise AssertionError(f"the probe hung: {e}") from None
    assert res.returncode == 0, f"the probe crashed (exit {res.returncode}):\n{res.stderr[-3000:]}"
    return res.stdout.strip().splitlines()


PROBE = """
import torch, dlrmx.ops
def probe(fn):
    try:
        fn()
        print("no error")
    except Exception as e:
        print(f"{type(e).__name__}: {e}".splitlines()[0])
"""


# ---- 1. every tensor checked -----------------------------------------------------------------

def test_lamb_rejects_expanded_state_without_reading_out_of_bounds():
    [out] = run_isolated(PROBE + """
p = torch.zeros(64)
probe(lambda: torch.ops.dlrmx.lamb_step([p], [torch.ones_like(p)], [torch.zeros(1).expand_as(p)],
          [torch.zeros_like(p)], 0.1, 0.9, 0.999, 1e-6, 0.0, 10.0, True, 1))
""")
    assert out.startswith("ValueError") and "exp_avg[0]" in out and "contiguous" in out, out


def test_lamb_rejects_transposed_state_instead_of_misreading_it():
    p = torch.randn(4, 3)
    m = torch.zeros(3, 4).t()  # [4, 3], right shape, wrong layout
    before = p.clone()
    with pytest.raises(ValueError, match=r"lamb_step: exp_avg\[0\] is updated in place, so it must be a contiguous"):
        lamb([p], [torch.ones_like(p)], [m], [torch.zeros_like(p)])
    assert torch.equal(p, before)


@pytest.mark.parametrize("which, bad, error, match", [
    ("exp_avg", torch.zeros(5, dtype=torch.float64), TypeError, r"exp_avg\[0\] must be torch.float32, got torch.float64"),
    ("exp_avg_sq", torch.zeros(5, dtype=torch.bfloat16), TypeError, r"exp_avg_sq\[0\] must be torch.float32"),
    ("grads", torch.zeros(5, dtype=torch.int64), TypeError, r"grads\[0\] must be a floating-point"),
    ("exp_avg", torch.zeros(4), ValueError, r"exp_avg\[0\] must have shape \[5\]"),
])
def test_lamb_checks_dtype_device_and_shape_of_every_tensor(which, bad, error, match):
    args = dict(params=[torch.ones(5)], grads=[torch.ones(5)], m=[torch.zeros(5)], v=[torch.zeros(5)])
    args[{"exp_avg": "m", "exp_avg_sq": "v"}.get(which, which)] = [bad]
    with pytest.raises(error, match=match):
        lamb(args["params"], args["grads"], args["m"], args["v"])


def test_read_only_views_are_accepted_and_read_correctly():
    p = torch.randn(6, 4)
    g = torch.randn(4, 6).t()  # transposed gradient: read-only, may be copied
    p2, m, v, m2, v2 = p.clone(), *(torch.zeros(6, 4) for _ in range(4))
    lamb([p], [g], [m], [v])
    lamb([p2], [g.contiguous()], [m2], [v2])
    assert torch.equal(p, p2) and torch.equal(m, m2)


def test_written_tensors_must_not_alias():
    p = torch.randn(8)
    with pytest.raises(ValueError, match=r"exp_avg\[0\] and params\[0\] share memory"):
        lamb([p], [torch.ones(8)], [p], [torch.zeros(8)])
    with pytest.raises(ValueError, match=r"params\[1\] .*share memory|share memory.*params\[1\]"):
        lamb([p, p], [torch.ones(8)] * 2, [torch.zeros(8), torch.zeros(8)], [torch.zeros(8), torch.zeros(8)])
    w = dn.split_fp32(torch.randn(3, 4))[0]
    trail = torch.zeros(3, 4, dtype=torch.int16)
    with pytest.raises(ValueError, match=r"trails\[0\] and params\[0\] share memory"):
        torch.ops.dlrmx.split_sgd_step([w], [w.view(torch.int16)], [torch.ones(3, 4)], 0.1, 0.0)
    with pytest.raises(ValueError, match=r"split_sgd_step: trails\[0\] is updated in place"):
        torch.ops.dlrmx.split_sgd_step([w], [torch.zeros(4, 3, dtype=torch.int16).t()], [torch.ones(3, 4)], 0.1, 0.0)
    torch.ops.dlrmx.split_sgd_step([w], [trail], [torch.ones(3, 4)], 0.1, 0.0)  # the valid call works


def _update(weights, state, optimizer="adagrad", grad=None, argmax=None, pooling=0, lr=0.1, eps=1e-8,
            padding_idx=None):
    ids, offsets = torch.tensor([0, 2, 1]), torch.tensor([0, 2, 3])
    grad = torch.ones(2, 4) if grad is None else grad
    argmax = torch.empty(0, dtype=torch.long) if argmax is None else argmax
    torch.ops.dlrmx.embedding_bag_update(grad, weights, ids, offsets, None, padding_idx or [-1] * len(weights),
                                         pooling, 2 // len(weights), argmax, optimizer, lr, eps, state)


def test_fused_update_checks_state_grad_and_argmax():
    w = torch.randn(3, 4)
    before = w.clone()
    with pytest.raises(ValueError, match=r"state\[0\] and weights\[0\] share memory"):
        _update([w], [w])
    with pytest.raises(ValueError, match=r"state\[0\] is updated in place"):
        _update([w], [torch.zeros(4, 3).t()])
    with pytest.raises(TypeError, match=r"grad_out must be a floating-point tensor"):
        _update([w], [torch.zeros(3, 4)], grad=torch.ones(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"max pooling needs the forward's argmax"):
        _update([w], [], optimizer="sgd", pooling=2, argmax=torch.zeros(2, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"sgd keeps no state"):
        _update([w], [torch.zeros(3, 4)], optimizer="sgd")
    with pytest.raises(ValueError, match=r"padding_idx\[0\] = 7 must be -1 \(none\) or a row of table 0"):
        _update([w], [], optimizer="sgd", padding_idx=[7])
    assert torch.equal(w, before)
    grad = torch.ones(1, 4).expand(2, 4)  # what autograd hands over for out.sum(): stride 0, read only
    _update([w], [torch.zeros(3, 4)], grad=grad)
    assert not torch.equal(w, before)


def test_interaction_checks_the_gradient_and_sizes():
    dense, emb = torch.randn(2, 4), torch.randn(2, 8)
    with pytest.raises(TypeError, match="dot_interaction: grad must be a floating-point tensor"):
        torch.ops.dlrmx.dot_interaction_backward(torch.ones(2, 7, dtype=torch.int64), dense, emb)
    huge = torch.zeros(1, 1).expand(1, 2**40)  # T = 2^40 features: F(F-1)/2 overflows int64
    with pytest.raises(ValueError, match="dot_interaction: the pair count .* overflows"):
        dot_interaction(torch.zeros(1, 1), huge)


# ---- 2. sizes multiplied without overflow ------------------------------------------------------

def test_huge_batch_size_is_a_value_error_naming_batch_size():
    lines = run_isolated(PROBE + """
w = [torch.zeros(3, 2) for _ in range(16)]
# 16 * 2^60 wraps to 0 bags: one offset, no ids, "passes" a wrapped length check
ids, off = torch.zeros(0, dtype=torch.long), torch.tensor([0])
probe(lambda: torch.ops.dlrmx.embedding_bag_forward(w, ids, off, None, [-1] * 16, 0, 2**60))
probe(lambda: dlrmx.ops.embedding_bags(w, ids, off, 2**60))
probe(lambda: dlrmx.ops.embedding_bags(w, ids, off, 2**64))
big = [torch.empty(2**62, 0) for _ in range(3)]  # no bytes, but 3 * 2^62 rows in all
probe(lambda: torch.ops.dlrmx.embedding_bag_forward(big, torch.tensor([2**62 - 1, 0, 0]),
                                                    torch.tensor([0, 1, 2, 3]), None, [-1] * 3, 0, 1))
""")
    assert len(lines) == 4, lines
    for line in lines[:3]:
        assert line.startswith("ValueError: batch_size"), line
    assert lines[3].startswith("ValueError") and "total number of rows" in lines[3], lines[3]


def test_negative_batch_size_is_rejected():
    with pytest.raises(ValueError, match="batch_size must be"):
        ops.embedding_bags([torch.zeros(3, 2)], torch.tensor([0]), torch.tensor([0, 1]), -1)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        ops.embedding_bags([torch.zeros(3, 2)], torch.tensor([0]), torch.tensor([0, 1]), 1.0)


# ---- 3. max pooling as torch's -----------------------------------------------------------------

def special_table(rows, dim, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, dim, generator=g)
    pick = torch.rand(rows, dim, generator=g)
    w[pick < 0.15] = NAN
    w[(pick >= 0.15) & (pick < 0.25)] = -INF
    w[(pick >= 0.25) & (pick < 0.3)] = INF
    w[rows - 1] = -INF  # a row of -inf: a bag of only it pools to -inf
    return w


@pytest.mark.parametrize("dim", [3, 16, 64])
def test_max_pooling_nan_and_inf_match_torch(isa, dim):
    rows = 6
    w = special_table(rows, dim, seed=dim)
    # bags: NaN-first, NaN-later, all -inf, duplicates, empty, padding only, padding first
    bags = [[0, 1, 2], [2, 1, 0], [rows - 1], [rows - 1, rows - 1], [], [4], [4, 3, 0], [1, 1, 3, 5, 2]]
    ids = torch.tensor([i for b in bags for i in b])
    offsets = torch.tensor([0] + [len(b) for b in bags]).cumsum(0)[:-1]
    ref = torch.nn.EmbeddingBag(rows, dim, mode="max", padding_idx=4)
    ours = dn.EmbeddingBag(rows, dim, mode="max", padding_idx=4)
    with torch.no_grad():
        ref.weight.copy_(w)
        ours.weight.copy_(w)
    expect, got = ref(ids, offsets), ours(ids, offsets)
    torch.testing.assert_close(got, expect, equal_nan=True, rtol=0, atol=0)
    grad = torch.randn(expect.shape)
    expect.backward(grad)
    got.backward(grad)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, equal_nan=True, rtol=0, atol=0)
    # the fused update routes the same gradient (SGD: w -= lr * grad)
    fused = dn.EmbeddingBag(rows, dim, mode="max", padding_idx=4, optimizer=dn.SGD(lr=0.5))
    with torch.no_grad():
        fused.weight.copy_(w)
    fused(ids, offsets).backward(grad)
    torch.testing.assert_close(fused.weight, w - 0.5 * ref.weight.grad, equal_nan=True)


# ---- 4. hyper-parameters checked where they are used ------------------------------------------

@pytest.mark.parametrize("name, value", [
    ("lr", NAN), ("lr", -0.1), ("lr", 1e300), ("beta1", 1.0), ("beta1", NAN), ("beta2", -0.1),
    ("beta2", 1.5), ("eps", -1e-8), ("eps", NAN), ("weight_decay", NAN), ("weight_decay", -1.0),
    ("max_weight_norm", INF),
])
def test_lamb_op_rejects_bad_hyperparameters(name, value):
    p = torch.randn(5)
    before = p.clone()
    with pytest.raises(ValueError, match=rf"lamb_step: {name} must be a finite number"):
        lamb([p], [torch.ones(5)], [torch.zeros(5)], [torch.zeros(5)], **{name: value})
    assert torch.equal(p, before)


@pytest.mark.parametrize("name, value", [("lr", NAN), ("lr", -1.0), ("weight_decay", -1.0),
                                         ("weight_decay", NAN)])
def test_split_sgd_op_rejects_bad_hyperparameters(name, value):
    upper, trail = dn.split_fp32(torch.randn(3, 4))
    before = upper.clone()
    h = {"lr": 0.1, "weight_decay": 0.0, name: value}
    with pytest.raises(ValueError, match=rf"split_sgd_step: {name} must be a finite number"):
        torch.ops.dlrmx.split_sgd_step([upper], [trail], [torch.ones(3, 4)], h["lr"], h["weight_decay"])
    assert torch.equal(upper, before)


@pytest.mark.parametrize("name, value", [("lr", NAN), ("lr", INF), ("eps", -1.0), ("eps", NAN)])
def test_fused_update_op_rejects_bad_hyperparameters(name, value):
    w = torch.randn(3, 4)
    before = w.clone()
    with pytest.raises(ValueError, match=rf"embedding_bag_update: {name} must be a finite number"):
        _update([w], [torch.zeros(3, 4)], **{name: value})
    assert torch.equal(w, before)


@pytest.mark.parametrize("make", [lambda: dn.SGD(lr=0.1), lambda: dn.RowWiseAdagrad(lr=0.1),
                                  lambda: dn.SplitSGD(lr=0.1)], ids=["sgd", "rowwise_adagrad", "split_sgd"])
def test_nan_lr_set_on_a_live_sparse_optimizer_is_caught_before_the_update(make):
    opt = make()
    ebc = dn.EmbeddingBagCollection([(10, 4), (5, 8)], optimizer=opt)
    values, offsets = torch.tensor([1, 2, 3, 0]), torch.tensor([0, 1, 2, 3, 4])
    ebc(values, offsets=offsets).sum().backward()  # a good step first
    before = [w.clone() for w in ebc.weights]
    opt.lr = NAN
    with pytest.raises(ValueError, match=rf"{type(opt).__name__}: lr must be a finite number >= 0, got nan"):
        ebc(values, offsets=offsets).sum().backward()
    assert all(torch.equal(w, b) for w, b in zip(ebc.weights, before))


def test_bad_eps_set_on_a_live_adagrad_is_caught():
    opt = dn.Adagrad(lr=0.1)
    bag = dn.EmbeddingBag(10, 4, mode="sum", optimizer=opt)
    before = bag.weight.clone()
    opt.eps = -1.0
    with pytest.raises(ValueError, match="Adagrad: eps must be a finite number >= 0"):
        bag(torch.tensor([[1, 2]])).sum().backward()
    assert torch.equal(bag.weight, before)


@pytest.mark.parametrize("make, key, value", [
    (lambda ps: Lamb(ps, lr=0.01), "lr", NAN),
    (lambda ps: Lamb(ps, lr=0.01), "betas", (1.0, 0.999)),
    (lambda ps: Lamb(ps, lr=0.01), "eps", -1.0),
    (lambda ps: SplitSGD(ps, lr=0.01), "lr", NAN),
    (lambda ps: SplitSGD(ps, lr=0.01), "weight_decay", INF),
], ids=["lamb-lr", "lamb-betas", "lamb-eps", "splitsgd-lr", "splitsgd-wd"])
def test_bad_hyperparameter_in_a_param_group_is_caught_before_any_group_steps(make, key, value):
    a, b = torch.nn.Parameter(torch.randn(4)), torch.nn.Parameter(torch.randn(3))
    opt = make([{"params": [a]}, {"params": [b]}])
    a.grad, b.grad = torch.ones_like(a), torch.ones_like(b)
    before = [a.detach().clone(), b.detach().clone()]
    opt.param_groups[1][key] = value  # the second group only: the first must not step either
    with pytest.raises(ValueError, match=rf"{type(opt).__name__}: {key} must be"):
        opt.step()
    assert torch.equal(a.detach(), before[0]) and torch.equal(b.detach(), before[1])
