"""The fused dot interaction vs the reference formulation in plain PyTorch (fp64 ground truth)."""

import pytest
import torch

from dlrmx import ops
from dlrmx.models.interaction import dot_interaction, dot_interaction_reference

ISAS = ops.isa_info()["supported"]


@pytest.fixture(params=ISAS)
def isa(request):
    before = ops.isa_info()["active"]
    ops.set_isa(request.param)
    yield request.param
    ops.set_isa(before)


def _reference(dense, emb, grad):
    d = dense.detach().double().requires_grad_()
    e = emb.detach().double().requires_grad_()
    out = dot_interaction_reference(d, e)
    out.backward(grad.double())
    return out, d.grad, e.grad


@pytest.mark.parametrize("dim,tables,batch", [(16, 26, 33), (128, 4, 5), (7, 3, 4), (32, 1, 2), (64, 0, 3),
                                              (48, 70, 3), (16, 40, 2)])
def test_fp32_forward_backward(isa, dim, tables, batch):
    g = torch.Generator().manual_seed(dim * 100 + tables)
    dense = torch.randn(batch, dim, generator=g, requires_grad=True)
    emb = torch.randn(batch, tables * dim, generator=g, requires_grad=True)
    out = dot_interaction(dense, emb)
    grad = torch.randn(out.shape, generator=g)
    out.backward(grad)
    ref, gd, ge = _reference(dense, emb, grad)
    f = tables + 1
    assert out.shape == (batch, dim + f * (f - 1) // 2)
    assert torch.equal(out[:, :dim], dense.detach())  # passthrough is exact
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dense.grad.double(), gd, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(emb.grad.double(), ge, rtol=1e-5, atol=1e-5)


def test_pair_order_matches_reference():
    # one-hot features make each output entry identify its pair unambiguously
    dim, tables = 4, 3
    z = torch.randn(1, tables + 1, dim)
    out = dot_interaction(z[:, 0], z[:, 1:].reshape(1, -1))
    expected = [float(z[0, i] @ z[0, j]) for i in range(4) for j in range(i)]
    torch.testing.assert_close(out[0, dim:], torch.tensor(expected))


@pytest.mark.parametrize("dim,tables", [(16, 26), (128, 8)])
def test_bf16_forward_backward(isa, dim, tables):
    g = torch.Generator().manual_seed(7)
    dense = (torch.randn(9, dim, generator=g) * 0.5).bfloat16().requires_grad_()
    emb = (torch.randn(9, tables * dim, generator=g) * 0.5).bfloat16().requires_grad_()
    out = dot_interaction(dense, emb)
    assert out.dtype == torch.bfloat16
    grad = torch.randn(out.shape, generator=g).bfloat16()
    out.backward(grad)
    ref, gd, ge = _reference(dense, emb, grad)  # same bf16 inputs, exact math
    # fp32 accumulation, one bf16 rounding of the result: relative error ~2^-8
    for got, want in ((out, ref), (dense.grad, gd), (emb.grad, ge)):
        scale = want.abs().max().item()
        assert (got.double() - want).abs().max().item() <= 2 ** -7 * scale + 1e-6


def test_mixed_dtypes_run_in_bf16():
    dense = torch.randn(3, 16).bfloat16()
    emb = torch.randn(3, 32)
    assert dot_interaction(dense, emb).dtype == torch.bfloat16


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="multiple of the dense width"):
        dot_interaction(torch.randn(2, 16), torch.randn(2, 30))
    with pytest.raises(ValueError, match="expected dense"):
        dot_interaction(torch.randn(2, 16), torch.randn(3, 32))


def test_opcheck():
    dense = torch.randn(4, 8, requires_grad=True)
    emb = torch.randn(4, 24, requires_grad=True)
    torch.library.opcheck(torch.ops.dlrmx.dot_interaction.default, (dense, emb))
