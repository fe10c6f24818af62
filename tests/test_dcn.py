"""dlrmx.models.dcn.LowRankCrossNet against TorchRec's module (state_dict, forward, every
gradient) and a float64 per-sample reference, in fp32, bf16 and under CPU autocast."""

import pytest
import torch

from dlrmx.models.dcn import LowRankCrossNet, dcn_reference

crossnet = pytest.importorskip("torchrec.modules.crossnet")

B, N, R = 37, 3 * 7, 5


def _pair(num_layers, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    ours = LowRankCrossNet(N, num_layers, R)
    theirs = crossnet.LowRankCrossNet(N, num_layers, R)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for k, v in theirs.state_dict().items():
        assert ours.state_dict()[k].shape == v.shape, k
    theirs.load_state_dict(ours.state_dict())
    # random biases too (the init's zeros would hide a bias bug)
    with torch.no_grad():
        for b in ours.bias:
            b.normal_()
    theirs.load_state_dict(ours.state_dict())
    return ours.to(dtype), theirs.to(dtype)


def _params(m):
    return [p for name, p in sorted(m.named_parameters())]


def _run(m, x, g):
    x = x.detach().clone().requires_grad_(True)
    out = m(x)
    out.backward(g)
    return out.detach(), x.grad, [p.grad.clone() for p in _params(m)]


def _close(a, b, tol):
    """Close relative to the tensor's scale (bf16 rounding is relative to magnitudes)."""
    a, b = a.double(), b.double()
    scale = b.abs().max().clamp_min(1e-30)
    assert (a - b).abs().max() <= tol * scale, ((a - b).abs().max() / scale).item()


@pytest.mark.parametrize("num_layers", [1, 3])
def test_fp32_equals_torchrec_forward_and_backward(num_layers):
    ours, theirs = _pair(num_layers)
    x, g = torch.randn(B, N), torch.randn(B, N)
    o1, gx1, gp1 = _run(ours, x, g)
    o2, gx2, gp2 = _run(theirs, x, g)
    assert o1.dtype == torch.float32 and o1.shape == (B, N)
    torch.testing.assert_close(o1, o2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx1, gx2, rtol=1e-5, atol=1e-5)
    assert len(gp1) == len(gp2) == 3 * num_layers
    for a, b in zip(gp1, gp2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_layers", [1, 3])
def test_bf16_params_equal_torchrec(num_layers):
    ours, theirs = _pair(num_layers, torch.bfloat16, seed=1)
    x, g = torch.randn(B, N).bfloat16(), torch.randn(B, N).bfloat16()
    o1, gx1, gp1 = _run(ours, x, g)
    o2, gx2, gp2 = _run(theirs, x, g)
    assert o1.dtype == torch.bfloat16
    for p in ours.parameters():
        assert p.dtype == torch.bfloat16 and p.grad.dtype == torch.bfloat16
    _close(o1, o2, 3e-2)
    _close(gx1, gx2, 3e-2)
    for a, b in zip(gp1, gp2):
        _close(a, b, 3e-2)


@pytest.mark.parametrize("num_layers", [1, 3])
def test_equals_float64_reference(num_layers):
    ours, _ = _pair(num_layers, seed=2)
    x, g = torch.randn(B, N), torch.randn(B, N)
    o, gx, gp = _run(ours, x, g)
    W = [w.detach().double().requires_grad_(True) for w in ours.W_kernels]
    V = [v.detach().double().requires_grad_(True) for v in ours.V_kernels]
    bias = [b.detach().double().requires_grad_(True) for b in ours.bias]
    xd = x.double().requires_grad_(True)
    ref = dcn_reference(xd, W, V, bias)
    ref.backward(g.double())
    assert ref.dtype == torch.float64
    torch.testing.assert_close(o.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx.double(), xd.grad, rtol=1e-5, atol=1e-5)
    for l in range(num_layers):
        torch.testing.assert_close(ours.W_kernels[l].grad.double(), W[l].grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.V_kernels[l].grad.double(), V[l].grad, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.bias[l].grad.double(), bias[l].grad, rtol=1e-5, atol=1e-5)


def test_autocast_fp32_params_keeps_input_dtype():
    ours, _ = _pair(3, seed=3)
    x = torch.randn(B, N)
    ref = dcn_reference(x, list(ours.W_kernels), list(ours.V_kernels), list(ours.bias))
    xr = x.clone().requires_grad_(True)
    with torch.autocast("cpu", torch.bfloat16):
        out = ours(xr)
    assert out.dtype == torch.float32
    _close(out.detach(), ref, 3e-2)
    out.sum().backward()
    assert xr.grad.dtype == torch.float32 and torch.isfinite(xr.grad).all()
    for p in ours.parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32
    with torch.autocast("cpu", torch.bfloat16):  # bf16 input stays bf16
        assert ours(x.bfloat16()).dtype == torch.bfloat16


def test_strided_input():
    ours, theirs = _pair(3, seed=4)
    wide = torch.randn(B, 2 * N)
    x = wide[:, ::2]  # non-contiguous
    assert not x.is_contiguous()
    torch.testing.assert_close(ours(x), theirs(x.contiguous()), rtol=1e-5, atol=1e-5)
    xt = torch.randn(N, B).t()  # column-major
    torch.testing.assert_close(ours(xt), theirs(xt.contiguous()), rtol=1e-5, atol=1e-5)


def test_init_matches_torchrec_and_generator_is_reproducible():
    torch.manual_seed(7)
    ours = LowRankCrossNet(N, 3, R)
    torch.manual_seed(7)
    theirs = crossnet.LowRankCrossNet(N, 3, R)
    for (k, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert torch.equal(a, b), k
    for b in ours.bias:
        assert torch.count_nonzero(b) == 0
    a = LowRankCrossNet(N, 2, R, generator=torch.Generator().manual_seed(5))
    torch.rand(3)  # the global RNG does not matter with a generator
    b = LowRankCrossNet(N, 2, R, generator=torch.Generator().manual_seed(5))
    for k in a.state_dict():
        assert torch.equal(a.state_dict()[k], b.state_dict()[k])
    bf = LowRankCrossNet(N, 2, R, generator=torch.Generator().manual_seed(5), dtype=torch.bfloat16)
    for k in a.state_dict():
        assert bf.state_dict()[k].dtype == torch.bfloat16
        assert torch.equal(bf.state_dict()[k], a.state_dict()[k].bfloat16())


def test_bad_shapes_and_arguments():
    m = LowRankCrossNet(N, 2, R)
    with pytest.raises(ValueError, match=r"input must be \[batch, in_features=21\].*\(37, 20\)"):
        m(torch.randn(B, N - 1))
    with pytest.raises(ValueError, match="input must be"):
        m(torch.randn(N))
    with pytest.raises(ValueError, match="input must be"):
        m(torch.randn(2, B, N))
    with pytest.raises(ValueError, match="input has dtype torch.bfloat16.*torch.float32"):
        m(torch.randn(B, N).bfloat16())
    for kwargs, name in (({"in_features": 0, "num_layers": 1}, "in_features"),
                         ({"in_features": 4, "num_layers": -1}, "num_layers"),
                         ({"in_features": 4, "num_layers": 1, "low_rank": 0}, "low_rank"),
                         ({"in_features": 4.0, "num_layers": 1}, "in_features")):
        with pytest.raises(ValueError, match=name):
            LowRankCrossNet(**kwargs)


def test_cross_layer_gemms_are_planned_and_equal_on_either_library():
    from dlrmx.models.mlp import plan_gemms

    torch.manual_seed(3)
    net = LowRankCrossNet(21, 2, 5)
    plan = plan_gemms(net, 37)
    assert [p["shape"] for p in plan] == [[37, 21, 5], [37, 5, 21]] * 2  # V then W, per layer
    x = torch.randn(37, 21, requires_grad=True)
    outs = []
    for lib in ("mkl", "onednn"):
        plan_gemms(net, 37, lib)
        assert all(g.fwd == g.bwd == lib for g in net.gemm_sites())
        net.zero_grad()
        x.grad = None
        y = net(x)
        y.square().sum().backward()
        outs.append([y.detach(), x.grad.clone()] + [p.grad.clone() for p in net.parameters()])
    for a, b in zip(*outs):  # two libraries sum in different orders: fp32 rounding apart
        scale = max(1.0, a.abs().max().item())
        torch.testing.assert_close(a / scale, b / scale, rtol=1e-4, atol=1e-5)
    assert list(net.state_dict()) == [f"{n}.{i}" for n in ("W_kernels", "V_kernels", "bias")
                                      for i in range(2)]
