"""Feature interactions of DLRM: the fused `dot` op (torch.ops.dlrmx.dot_interaction) with its
fake implementation and autograd formula, a plain-PyTorch reference, and `cat`."""

from __future__ import annotations

import torch

from dlrmx import native_ops  # defines torch.ops.dlrmx.dot_interaction(_backward)


@torch.library.register_fake("dlrmx::dot_interaction")
def _dot_fake(dense: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    f = emb.shape[1] // dense.shape[1] + 1
    return dense.new_empty((dense.shape[0], dense.shape[1] + f * (f - 1) // 2))


@torch.library.register_fake("dlrmx::dot_interaction_backward")
def _dot_backward_fake(grad, dense, emb):
    return torch.empty_like(dense), torch.empty_like(emb)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad):
    dense, emb = ctx.saved_tensors
    return torch.ops.dlrmx.dot_interaction_backward(grad, dense, emb)


torch.library.register_autograd("dlrmx::dot_interaction", _backward, setup_context=_setup_context)


def dot_interaction(dense: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """[dense | strictly-lower-triangle dots of (dense, emb_1..emb_T)] per sample.

    dense: [B, D] bottom-MLP output; emb: [B, T*D] pooled embeddings (EBC output). Returns
    [B, D + F(F-1)/2] with F = T+1, pairs ordered (1,0), (2,0), (2,1), (3,0)... as the reference
    DLRM. Mixed dtypes (bf16 MLP output beside fp32 embeddings under autocast) run in bf16.
    """
    if dense.dtype != emb.dtype:
        common = torch.bfloat16 if torch.bfloat16 in (dense.dtype, emb.dtype) else torch.float32
        dense, emb = dense.to(common), emb.to(common)
    return torch.ops.dlrmx.dot_interaction(dense, emb)


def dot_interaction_reference(dense: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """The reference DLRM's formulation in plain PyTorch (bmm, then index the lower triangle)."""
    b, d = dense.shape
    z = torch.cat([dense.unsqueeze(1), emb.view(b, -1, d)], dim=1)
    zz = torch.bmm(z, z.transpose(1, 2))
    f = z.shape[1]
    li = torch.tensor([i for i in range(f) for j in range(i)], dtype=torch.long)
    lj = torch.tensor([j for i in range(f) for j in range(i)], dtype=torch.long)
    return torch.cat([dense, zz[:, li, lj]], dim=1)


def cat_interaction(dense: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """The reference's `cat` interaction: the bottom output and the embeddings side by side."""
    if dense.dtype != emb.dtype:
        emb = emb.to(dense.dtype)
    return torch.cat([dense, emb], dim=1)


# Leaf calls under torch.fx.symbolic_trace (their dtype checks cannot run on Proxies). fx patches
# a name in the namespace it is looked up in: this covers `interaction.dot_interaction(...)`;
# dlrm.py registers its own imported names.
torch.fx.wrap("dot_interaction")
torch.fx.wrap("cat_interaction")


def interaction_width(op: str, dim: int, num_tables: int) -> int:
    """Width of the interaction output = the top MLP's input size."""
    f = num_tables + 1
    if op == "dot":
        return dim + f * (f - 1) // 2
    if op in ("cat", "dcn"):  # dcn: the cross layers keep the concatenation's width
        return dim * f
    raise ValueError(f"--arch-interaction-op must be 'dot', 'cat' or 'dcn', got {op!r}")
