"""dlrmx.models.mlp.Linear (GEMM + bias + ReLU in one op, library per shape) against plain
PyTorch, forward and backward, fp32 and bf16, with each library forced; and the per-shape rule."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from dlrmx.models.mlp import Linear, choose, make_mlp, plan_gemms

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


def _reference(x, w, b, relu):
    """fp64 plain PyTorch."""
    y = F.linear(x.double(), w.double(), b.double())
    return F.relu(y) if relu else y


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lib", [("mkl", "mkl"), ("onednn", "onednn"), ("onednn", "mkl")])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("shape", [(37, 13, 29), (1, 7, 1), (130, 256, 64)])
def test_linear_equals_plain_pytorch(dtype, lib, relu, shape):
    b, k, n = shape
    lin = Linear(k, n, relu=relu).to(dtype)
    lin.fwd, lin.bwd = lib
    x = torch.randn(b, k).to(dtype).requires_grad_()
    g = torch.randn(b, n).to(dtype)
    y = lin(x)
    y.backward(g)

    x64 = x.detach().double().requires_grad_()
    w64 = lin.weight.detach().double().requires_grad_()
    b64 = lin.bias.detach().double().requires_grad_()
    ref = _reference(x64, w64, b64, relu)
    ref.backward(g.double())
    assert y.dtype == dtype
    if relu:
        assert (y >= 0).all() and (y == 0).any()  # the ReLU ran (random inputs give zeros)
    torch.testing.assert_close(y.double(), ref, **TOL[dtype])
    for got, want in ((x.grad, x64.grad), (lin.weight.grad, w64.grad), (lin.bias.grad, b64.grad)):
        assert got.dtype == dtype
        scale = max(1.0, want.abs().max().item())
        torch.testing.assert_close(got.double() / scale, want / scale, **TOL[dtype])


def test_linear_under_autocast_and_odd_inputs_takes_torchs_path():
    lin = Linear(6, 4, relu=True)
    lin.fwd = lin.bwd = "onednn"
    x = torch.randn(8, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lin(x)
    assert y.dtype == torch.bfloat16
    strided = torch.randn(6, 8).t()  # not contiguous
    torch.testing.assert_close(lin(strided), F.relu(F.linear(strided, lin.weight, lin.bias)))
    batched = torch.randn(2, 3, 6)  # 3-D, as nn.Linear accepts
    assert lin(batched).shape == (2, 3, 4)


def test_mlp_state_dict_and_init_like_nn_linear():
    mlp = make_mlp([5, 8, 3], last_relu=False, generator=torch.Generator().manual_seed(1))
    assert list(mlp.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert [m.relu for m in mlp] == [True, False]
    plain = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    plain[0].load_state_dict(mlp[0].state_dict())
    plain[2].load_state_dict(mlp[1].state_dict())
    x = torch.randn(4, 5)
    torch.testing.assert_close(mlp(x), plain(x))


def test_choose_rule_with_measurements_injected():
    t = {"fwd_mkl": 1.0, "fwd_onednn": 0.5, "bwd_mkl": 1.0, "bwd_onednn": 0.99}
    assert choose(t) == ("onednn", "mkl")  # a 1% win is within noise: keep torch's
    assert choose({k: 1.0 for k in t}) == ("mkl", "mkl")
    assert choose({"fwd_mkl": 0.2, "fwd_onednn": 0.3, "bwd_mkl": 2.0, "bwd_onednn": 1.0}) == ("mkl", "onednn")


def test_plan_gemms_sets_every_layer_and_reports():
    mlp = make_mlp([13, 24, 24, 1], last_relu=False)
    plan = plan_gemms(mlp, batch=32)
    assert len(plan) == 3 and all(p["forward"] in ("mkl", "onednn") for p in plan)
    assert [(m.fwd, m.bwd) for m in mlp] == [(p["forward"], p["input_grad"]) for p in plan]
    assert plan[0]["shape"] == [32, 13, 24] and "fwd_onednn" in plan[0]
    plan_gemms(mlp, batch=32, library="onednn")
    assert all(m.fwd == m.bwd == "onednn" for m in mlp)
    with pytest.raises(ValueError, match="--gemm-library"):
        plan_gemms(mlp, 32, library="blas")


def test_linear_matches_with_onednn_limited_to_avx2():
    """oneDNN picks its kernels by ISA at run time; limit it to AVX2 in a fresh process: fp32
    still matches, and bf16 (no oneDNN kernel there) is planned on torch's path, or refused
    when forced."""
    code = ("import torch, torch.nn.functional as F, pytest\n"
            "from dlrmx.models.mlp import Linear, make_mlp, plan_gemms\n"
            "for dt, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):\n"
            "    mlp = make_mlp([19, 11, 5], last_relu=True).to(dt)\n"
            "    plan = plan_gemms(mlp, 23)\n"
            "    if dt == torch.float32:\n"
            "        plan_gemms(mlp, 23, 'onednn')\n"
            "    else:\n"
            "        assert all(p['forward'] == 'mkl' for p in plan), plan\n"
            "        with pytest.raises(ValueError, match='no torch.bfloat16 matmul'):\n"
            "            plan_gemms(mlp, 23, 'onednn')\n"
            "    x = torch.randn(23, 19).to(dt)\n"
            "    ref = x.double()\n"
            "    for lin in mlp:\n"
            "        ref = F.relu(F.linear(ref, lin.weight.double(), lin.bias.double()))\n"
            "    torch.testing.assert_close(mlp(x).double(), ref, rtol=tol, atol=tol)\n"
            "print('ok')\n")
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
