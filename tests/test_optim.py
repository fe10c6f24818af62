"""Dense optimizers against float64 references written from the published formulas."""

import pytest
import torch

import dlrmx.nn as dn
from dlrmx.optim import Lamb, SplitSGD, WarmupPolyDecay

SHAPES = [(64, 13), (64,), (3, 5, 7), (40000,), (1,)]  # one tensor spans several kernel chunks


def lamb_reference(params, grads, state, step, lr, b1, b2, eps, wd, clamp, bias_correction):
    """LAMB in float64, straight from the formula in dlrmx.optim.Lamb's docstring."""
    for i, (p, g) in enumerate(zip(params, grads)):
        m, v = state.setdefault(i, (torch.zeros_like(p), torch.zeros_like(p)))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        c1 = 1 / (1 - b1**step) if bias_correction else 1.0
        c2 = 1 / (1 - b2**step) if bias_correction else 1.0
        u = (m * c1) / ((v * c2).sqrt() + eps) + wd * p
        w_norm, u_norm = p.norm(), u.norm()
        if clamp > 0:
            w_norm = w_norm.clamp(max=clamp)
        ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
        p -= lr * ratio * u
        state[i] = (m, v)


@pytest.mark.parametrize("bias_correction, clamp, wd", [(True, 10.0, 0.0), (False, 0.0, 0.01), (True, 0.5, 0.1)])
def test_lamb_matches_float64_reference(isa, bias_correction, clamp, wd):
    params = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
    ref = [p.detach().double().clone() for p in params]
    opt = Lamb(params, lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=wd,
               max_weight_norm=clamp, bias_correction=bias_correction)
    state = {}
    for step in range(1, 6):
        grads = [torch.randn(s) for s in SHAPES]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        lamb_reference(ref, [g.double() for g in grads], state, step, 0.02, 0.8, 0.95, 1e-6, wd,
                       clamp, bias_correction)
        for p, r in zip(params, ref):
            torch.testing.assert_close(p.detach().double(), r, rtol=1e-5, atol=1e-6)


def test_lamb_works_with_torch_schedulers_and_resumes_identically():
    def make():
        torch.manual_seed(3)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
        opt = Lamb([{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.05}], lr=0.01)
        return model, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    data = [(torch.randn(32, 8), torch.randn(32, 1)) for _ in range(8)]

    def train(model, opt, sched, batches):
        for x, y in batches:
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            sched.step()

    a = make()
    train(*a, data)
    b = make()
    train(*b, data[:4])
    saved = (b[0].state_dict(), b[1].state_dict(), b[2].state_dict())
    c = make()
    c[0].load_state_dict(saved[0])
    c[1].load_state_dict(saved[1])
    c[2].load_state_dict(saved[2])
    train(*c, data[4:])
    assert c[1].param_groups[1]["lr"] == a[1].param_groups[1]["lr"] == 0.05 * 0.5**4
    for pa, pc in zip(a[0].parameters(), c[0].parameters()):
        assert torch.equal(pa, pc)


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_split_sgd_is_bit_exact_fp32_sgd(isa, wd):
    """Given the same gradients, the rebuilt weights equal torch.optim.SGD's on fp32, bit for bit."""
    masters = [torch.randn(s) for s in SHAPES]
    fp32 = [torch.nn.Parameter(m.clone()) for m in masters]
    params = [torch.nn.Parameter(m.clone()) for m in masters]
    opt = SplitSGD(params, lr=0.05, weight_decay=wd)
    ref = torch.optim.SGD(fp32, lr=0.05, weight_decay=wd)
    assert all(p.dtype == torch.bfloat16 for p in params)
    for _ in range(120):
        for p, w in zip(params, fp32):
            p.grad = torch.randn(p.shape).to(torch.bfloat16)
            w.grad = p.grad.float()  # the optimizer sees the bf16 gradient, widened
        opt.step()
        ref.step()
    for p, w in zip(params, fp32):
        rebuilt = dn.combine_fp32(p.detach(), opt.state[p]["trail"])
        assert torch.equal(rebuilt.view(torch.int32), w.view(torch.int32))


def test_split_sgd_step_reads_bf16_grads_as_their_fp32_widening(isa):
    """bf16 gradients go to the kernel as they are; the result equals the fp32 path's on the
    widened values, bit for bit (also for a list mixing both dtypes)."""
    from dlrmx.nn.sparse_optim import split_fp32

    grads = [torch.randn(s).to(torch.bfloat16) for s in SHAPES]
    results = []
    for kind in ("bf16", "fp32", "mixed"):
        torch.manual_seed(1)
        split = [split_fp32(torch.randn(s)) for s in SHAPES]
        upper, trails = [u.clone() for u, _ in split], [t.clone() for _, t in split]
        gs = {"bf16": grads, "fp32": [g.float() for g in grads],
              "mixed": [g if i % 2 else g.float() for i, g in enumerate(grads)]}[kind]
        torch.ops.dlrmx.split_sgd_step(upper, trails, gs, 0.05, 0.01)
        results.append([dn.combine_fp32(u, t).view(torch.int32) for u, t in zip(upper, trails)])
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))
    torch.manual_seed(1)
    assert not torch.equal(results[0][0], torch.randn(SHAPES[0]).view(torch.int32))  # it stepped


def test_split_sgd_state_round_trips():
    params = [torch.nn.Parameter(torch.randn(10, 3))]
    opt = SplitSGD(params, lr=0.1)
    params[0].grad = torch.randn(10, 3, dtype=torch.bfloat16)
    opt.step()
    params2 = [torch.nn.Parameter(params[0].detach().clone())]
    opt2 = SplitSGD(params2, lr=0.1)
    opt2.load_state_dict(opt.state_dict())
    # torch.equal promotes dtypes: check the dtype too (torch's load would cast int16 -> bf16)
    loaded, saved = opt2.state[params2[0]]["trail"], opt.state[params[0]]["trail"]
    assert loaded.dtype == torch.int16 and torch.equal(loaded, saved)
    params[0].grad = params2[0].grad = torch.randn(10, 3, dtype=torch.bfloat16)
    opt.step()
    opt2.step()
    assert torch.equal(params2[0], params[0]) and torch.equal(opt2.state[params2[0]]["trail"], saved)


def reference_lr(base, step, warmup, decay_start, decay_steps):
    """The reference DLRM's LRPolicyScheduler, with its 1-based step count."""
    cur = step + 1
    if cur < warmup:
        return base * (1.0 - (warmup - cur) / warmup)
    if decay_start <= cur < decay_start + decay_steps:
        return base * ((decay_steps - (cur - decay_start)) / decay_steps) ** 2
    if decay_steps > 0 and cur >= decay_start + decay_steps:
        return base * (1 / decay_steps) ** 2  # held at the last decayed value
    return base


def test_warmup_poly_decay_drives_dense_and_sparse_together():
    model = torch.nn.Linear(4, 1)
    dense = torch.optim.SGD(model.parameters(), lr=0.5)
    sparse = dn.SGD(lr=2.0)
    sched = WarmupPolyDecay([dense], [sparse], warmup_steps=5, decay_start_step=8, decay_steps=6)
    for step in range(20):
        assert dense.param_groups[0]["lr"] == pytest.approx(reference_lr(0.5, step, 5, 8, 6))
        assert sparse.lr == pytest.approx(reference_lr(2.0, step, 5, 8, 6))
        sched.step()
    resumed = WarmupPolyDecay([torch.optim.SGD(model.parameters(), lr=0.5)], [dn.SGD(lr=2.0)],
                              warmup_steps=5, decay_start_step=8, decay_steps=6)
    resumed.load_state_dict(sched.state_dict())
    assert resumed.get_last_lr() == sched.get_last_lr()


def test_warmup_poly_decay_set_step_jumps_and_floors():
    dense = torch.optim.SGD(torch.nn.Linear(4, 1).parameters(), lr=0.5)
    sparse = dn.SGD(lr=2.0)
    sched = WarmupPolyDecay([dense], [sparse], warmup_steps=5, decay_start_step=8, decay_steps=6,
                            min_lr=0.02)
    for step in (0, 3, 9, 12, 30):
        sched.set_step(step)
        want = [max(0.02, reference_lr(b, step, 5, 8, 6)) for b in (0.5, 2.0)]
        assert sched.get_last_lr() == pytest.approx(want)
    assert sched.get_last_lr()[0] == 0.02  # the decay's end, 0.5 * (1/6)^2, is below the floor
    with pytest.raises(ValueError, match="step"):
        sched.set_step(-1)


def test_bad_hyperparameters_are_named():
    p = [torch.nn.Parameter(torch.randn(3))]
    with pytest.raises(ValueError, match="Lamb: lr must be a finite number >= 0"):
        Lamb(p, lr=-0.1)
    with pytest.raises(ValueError, match="Lamb: eps"):
        Lamb(p, eps=float("nan"))
    with pytest.raises(ValueError, match="SplitSGD does not support momentum"):
        SplitSGD(p, momentum=0.9)
    with pytest.raises(ValueError, match="decay_start_step .* must not come before"):
        WarmupPolyDecay(warmup_steps=10, decay_start_step=5, decay_steps=3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'momentum'"):
        dn.make_sparse_optimizer("rowwise_adagrad", lr=0.1, momentum=0.9)


@pytest.mark.parametrize("make", [lambda p: Lamb(p, skip_nonfinite=True),
                                  lambda p: SplitSGD(p, skip_nonfinite=True)], ids=["lamb", "split_sgd"])
def test_nonfinite_gradients_skip_the_step(make):
    params = [torch.nn.Parameter(torch.randn(4))]
    opt = make(params)
    before = params[0].detach().clone()
    params[0].grad = torch.tensor([1.0, float("nan"), 0.0, 1.0]).to(params[0].dtype)
    with pytest.warns(RuntimeWarning, match="non-finite gradient, step skipped"):
        opt.step()
    assert opt.skipped_steps == 1
    assert torch.equal(params[0].detach(), before)


def test_sparse_optimizer_skips_nonfinite_gradients():
    ebc = dn.EmbeddingBagCollection([(10, 4)], optimizer=dn.RowWiseAdagrad(lr=0.1, skip_nonfinite=True))
    before = [t.clone() for t in ebc.state_dict().values()]
    out = ebc(torch.tensor([1, 2, 3]), offsets=torch.tensor([0, 1, 3]))
    with pytest.warns(RuntimeWarning, match="non-finite gradient, embedding update skipped"):
        (out * float("inf")).sum().backward()
    assert ebc.optimizer.skipped_steps == 1
    for a, b in zip(before, ebc.state_dict().values()):
        assert torch.equal(a, b)


def test_all_finite_sees_any_non_finite_element_and_changes_nothing():
    from dlrmx.optim._common import all_finite

    ts = [torch.randn(300), torch.randn(7, 5).to(torch.bfloat16), torch.randn(4, 6).t()]
    before = [t.clone() for t in ts]
    assert all_finite(ts) and all_finite([])
    assert all(torch.equal(a, b) for a, b in zip(ts, before))
    for bad in (float("nan"), float("inf"), -float("inf")):
        for i in range(3):
            probe = [t.clone() for t in ts]
            probe[i][(0,) * probe[i].dim()] = bad
            assert not all_finite(probe)
