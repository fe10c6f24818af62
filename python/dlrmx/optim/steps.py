"""The dense optimizers' fused steps (torch.ops.dlrmx.lamb_step and split_sgd_step) written in
torch's multi-tensor (_foreach) ops, so they run on any device: dlrmx.cuda registers them as the
ops' CUDA kernels (a GPU runs them as a handful of multi-tensor launches), and on the CPU the
tests check them against the native kernels, which is how the CUDA formulas are tested on a
machine without a GPU. The formulas are kernels/cpu/dense_optim.h's."""

from __future__ import annotations

import torch


def _check(op: str, params, dtype: torch.dtype, **per_param) -> None:
    for name, tensors in per_param.items():
        if len(tensors) != len(params):
            raise ValueError(f"{op}: {len(tensors)} {name} for {len(params)} params")
    for i, p in enumerate(params):
        if p.dtype is not dtype:
            raise TypeError(f"{op}: params[{i}] must be {dtype}, got {p.dtype}")
        for name, tensors in per_param.items():
            if tensors[i].shape != p.shape or tensors[i].device != p.device:
                raise ValueError(f"{op}: {name}[{i}] must have shape {list(p.shape)} on "
                                 f"{p.device}, got {list(tensors[i].shape)} on {tensors[i].device}")


def _fp32(value: float) -> float:
    return torch.tensor(value, dtype=torch.float32).item()


def lamb_step(params, grads, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay,
              max_weight_norm, bias_correction, step) -> None:
    """LAMB on fp32 params, in place (dlrmx.optim.Lamb's formula)."""
    _check("lamb_step", params, torch.float32, grads=grads, exp_avg=exp_avg,
           exp_avg_sq=exp_avg_sq)
    if not params:
        return
    grads = [g.float() for g in grads]
    c1 = 1.0 / (1.0 - beta1 ** step) if bias_correction else 1.0
    c2 = 1.0 / (1.0 - beta2 ** step) if bias_correction else 1.0
    torch._foreach_mul_(exp_avg, beta1)
    torch._foreach_add_(exp_avg, grads, alpha=1.0 - beta1)
    torch._foreach_mul_(exp_avg_sq, beta2)
    torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1.0 - beta2)
    denom = torch._foreach_mul(exp_avg_sq, c2)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)
    update = torch._foreach_mul(exp_avg, c1)
    torch._foreach_div_(update, denom)
    if weight_decay:
        torch._foreach_add_(update, params, alpha=weight_decay)
    w_norm = torch.stack(torch._foreach_norm(params)).double()
    u_norm = torch.stack(torch._foreach_norm(update)).double()
    if max_weight_norm > 0:
        w_norm = w_norm.clamp(max=max_weight_norm)
    ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, 1.0).float()
    torch._foreach_mul_(update, list((ratio * lr).unbind()))
    torch._foreach_sub_(params, update)


def split_sgd_step(params, trails, grads, lr, weight_decay) -> None:
    """Split-SGD on bf16 params with int16 trails, in place: the fp32 weight rebuilt from both
    halves takes p -= lr * (g + weight_decay * p) and is split again. Each of the CPU kernel's
    two fused multiply-adds is done in fp64 and rounded to fp32 once, so the results agree bit
    for bit except in rare double-rounding cases."""
    _check("split_sgd_step", params, torch.bfloat16, trails=trails, grads=grads)
    lr, weight_decay = (_fp32(v) for v in (lr, weight_decay))  # the kernel's float arguments
    for p, trail, g in zip(params, trails, grads):
        bits = (p.view(torch.int16).to(torch.int32) << 16) | (trail.to(torch.int32) & 0xFFFF)
        x = bits.view(torch.float32).double()
        t = (g.double() + weight_decay * x).float().double()  # fma(weight_decay, x, g)
        new = (x - lr * t).float().view(torch.int32)  # fma(-lr, t, x)
        p.view(torch.int16).copy_(new >> 16)
        trail.copy_(new & 0xFFFF)
