"""The native operators (torch.ops.dlrmx.*) and their autograd.

`embedding_bags` is the one entry point the modules use: a fused lookup over many tables, whose
backward either returns weight gradients (dense or sparse COO) or, with a `SparseOptimizer`,
updates the touched rows in place and returns none.

How it stays one op for torch.compile, torch.export and torch.fx: the differentiable lookup is the
custom op `torch.ops.dlrmx.embedding_bags`, defined here (torch.library, over the kernel ops of
dlrmx.native_ops) with a schema that holds everything its backward needs as
plain values and tensors (the optimizer's name; lr and eps in a tensor, so a schedule does not
recompile; its state and skip counter as tensors), a fake implementation, and an Autograd kernel
(`_EmbeddingBags`). Dynamo and export put that op in the graph as one node without tracing into
Python objects (the old autograd.Function took a Python optimizer object, which Dynamo cannot
trace: "Expected fwd_out to be a BaseListVariable"); AOTAutograd then traces the Autograd kernel
down to the kernel ops, each with a fake implementation. The fused update declares its
mutations (`Tensor(a!)[] weights`, `Tensor(b!)[] state`), so functionalization writes the updated
rows back into the module's weights and state; the anchor trick works unchanged (the anchor is an
input of the op that requires grad, so the compiled backward runs the update).

Why an own Autograd kernel, not `torch.library.register_autograd` or `custom_op`: eager calls go
straight to `_EmbeddingBags.apply` (the class the op's Autograd kernel runs too), so eager pays
no dispatcher round trip into Python (a few us each here) and no pytree handling: the training
step at batch 128 is sensitive to per-call overhead (bench/compile.py --old-ops compares). In
eager mode the forward's checked batch (native_ops.Batch) also serves the backward, so the
tensors are checked once per step.
`embedding_bags` is also a torch.fx leaf function (torch.fx.wrap), one call node in fx graphs.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Sequence

import torch

from dlrmx import native, native_ops

if TYPE_CHECKING:
    from dlrmx.nn.sparse_optim import FusedUpdate

POOLING = {"sum": 0, "mean": 1, "max": 2}

_LIB = torch.library.Library("dlrmx", "FRAGMENT")  # noqa: TOR901 (kept alive: it owns the defs)

# The differentiable lookup. anchor: an empty tensor that requires grad in fused mode, so
# autograd runs the backward (the update) though the weights take no gradient. optimizer: ""
# (gradients for the weights, dense or sparse COO) or a fused update's name; state and skipped
# (the skip counter of skip_nonfinite) are only written by the fused update in backward.
_LIB.define(
    "embedding_bags(Tensor anchor, Tensor[] weights, Tensor ids, Tensor offsets, "
    "Tensor? per_sample_weights, int[] padding_idx, int pooling, SymInt batch_size, bool sparse, "
    "str optimizer, Tensor? hyper, bool skip_nonfinite, Tensor[] state, Tensor? skipped) "
    "-> Tensor")
# The fused update. hyper: float64 [lr, eps], a tensor the optimizer keeps in step with its lr
# and eps, so a compiled graph reads the value a schedule set at run time instead of baking it
# in (a float would be a guard: one recompile per new lr). skip_nonfinite: a NaN/Inf output
# gradient skips the update (counted in `skipped`, with a warning). Both read data at run time,
# so an opaque op rather than graph code; the kernel op it calls declares the same mutations.
_LIB.define(
    "embedding_bags_update(Tensor grad_out, Tensor(a!)[] weights, Tensor ids, Tensor offsets, "
    "Tensor? per_sample_weights, int[] padding_idx, int pooling, SymInt batch_size, Tensor argmax, "
    "str optimizer, Tensor hyper, bool skip_nonfinite, Tensor(b!)[] state, Tensor(c!) skipped) "
    "-> ()")
# d(loss)/d(per_sample_weights), a rare path in plain torch ops with data-dependent slicing.
_LIB.define(
    "embedding_bags_psw_grad(Tensor grad_out, Tensor[] weights, Tensor ids, Tensor offsets, "
    "int[] padding_idx, SymInt batch_size) -> Tensor")


def _output_width(weights) -> int:
    return sum(w.shape[1] for w in weights)


@torch.library.register_fake("dlrmx::embedding_bag_forward")
def _forward_fake(weights, ids, offsets, per_sample_weights, padding_idx, pooling, batch_size):
    width = _output_width(weights)
    argmax_shape = (batch_size, width) if pooling == POOLING["max"] else (0,)
    return (
        weights[0].new_empty((batch_size, width), dtype=torch.float32),
        ids.new_empty(argmax_shape, dtype=torch.int64),
    )


@torch.library.register_fake("dlrmx::embedding_bag_dense_grad")
def _dense_grad_fake(grad_out, weights, *args):
    return [w.new_empty(w.shape, dtype=torch.float32) for w in weights]


@torch.library.register_fake("dlrmx::embedding_bag_sparse_grad")
def _sparse_grad_fake(grad_out, weights, ids, *args):
    # The number of distinct rows per table is data-dependent: an unbacked size each.
    ctx = torch.library.get_ctx()
    rows, values = [], []
    for w in weights:
        nnz = ctx.new_dynamic_size()
        rows.append(ids.new_empty((nnz,), dtype=torch.int64))
        values.append(grad_out.new_empty((nnz, w.shape[1]), dtype=torch.float32))
    return rows, values


@torch.library.register_fake("dlrmx::embedding_bag_update")
def _update_fake(*args) -> None:
    return None


@torch.library.register_fake("dlrmx::embedding_bags")
def _embedding_bags_fake(anchor, weights, ids, offsets, psw, padding_idx, pooling, batch_size,
                         *args):
    return weights[0].new_empty((batch_size, _output_width(weights)), dtype=torch.float32)


def _embedding_bags_cpu(anchor, weights, ids, offsets, psw, padding_idx, pooling, batch_size,
                        *args):
    """Below autograd (inference mode, or inputs that need no gradient): the forward kernel."""
    return native_ops.EAGER.embedding_bag_forward(weights, ids, offsets, psw, padding_idx,
                                                  pooling, batch_size)[0]


@torch.library.register_fake("dlrmx::embedding_bags_update")
def _fused_update_fake(*args) -> None:
    return None


def _fused_update_cpu(grad_out, weights, ids, offsets, psw, padding_idx, pooling, batch_size,
                      argmax, optimizer, hyper, skip, state, skipped,
                      batch: native_ops.Batch | None = None) -> None:
    """Skip a batch with a non-finite output gradient (counted, with a warning), or run the
    native update with the lr and eps `hyper` holds now (it checks them before any row
    changes). `batch`: the forward's description of this batch, when it still holds."""
    if skip_nonfinite(grad_out, optimizer, skip, skipped):
        return
    lr, eps = hyper.tolist()
    if batch is None or not batch.still_describes(weights):
        batch = native_ops.Batch(weights, ids, offsets, psw, padding_idx, pooling, batch_size)
    batch.update(grad_out, argmax, optimizer, lr, eps, state)


def skip_nonfinite(grad_out: torch.Tensor, optimizer: str, enabled: bool,
                   skipped: torch.Tensor) -> bool:
    """skip_nonfinite's rule (every device): True, counted in `skipped` with a warning, when
    the output gradient holds a NaN or Inf and skipping is enabled."""
    if not enabled or bool(torch.isfinite(grad_out).all()):
        return False
    skipped += 1
    warnings.warn(f"{optimizer}: non-finite gradient, embedding update skipped "
                  f"({int(skipped)} skipped so far)", RuntimeWarning, stacklevel=3)
    return True


@torch.library.register_fake("dlrmx::embedding_bags_psw_grad")
def _psw_grad_fake(grad_out, weights, ids, *args):
    return grad_out.new_empty((ids.shape[0],), dtype=torch.float32)


def psw_grad(grad_out, weights, ids, offsets, padding_idx, batch_size):
    """The dot of each looked-up row with its bag's output gradient (0 for padding ids), in
    torch ops on the tensors' device (the CPU and the CUDA kernel of the op)."""
    dev = grad_out.device
    offsets = offsets.long()
    bag = torch.repeat_interleave(torch.arange(offsets.numel() - 1, device=dev), offsets.diff())
    grad = torch.zeros(ids.numel(), dtype=torch.float32, device=dev)
    bounds = offsets[::batch_size].tolist() if batch_size > 0 else [0] * (len(weights) + 1)
    col = 0
    for t, w in enumerate(weights):
        lo, hi = bounds[t], bounds[t + 1]
        table_ids = ids[lo:hi].long()
        out_rows = grad_out[bag[lo:hi] - t * batch_size, col : col + w.shape[1]]
        g = (w[table_ids].float() * out_rows).sum(1)
        grad[lo:hi] = torch.where(table_ids == padding_idx[t], 0.0, g)
        col += w.shape[1]
    return grad


class _EmbeddingBags(torch.autograd.Function):
    """Autograd of dlrmx::embedding_bags (the op's Autograd kernel; eager calls it directly).
    The weights come last, flattened, so autograd sees each as an input; `spec` packs the op's
    other arguments (padding_idx ... skipped, in schema order, then `eager`: called directly, not
    from the op) into one, as each argument of apply costs time in eager."""

    @staticmethod
    def forward(ctx, anchor, ids, offsets, psw, spec, *weights):
        padding_idx, pooling, batch_size = spec[:3]
        ctx.batch = None
        if spec[-1]:  # eager: the batch's description serves the backward too (checked once)
            ctx.batch = native_ops.Batch(weights, ids, offsets, psw, padding_idx, pooling,
                                         batch_size)
            out, argmax = ctx.batch.forward()
        else:
            out, argmax = torch.ops.dlrmx.embedding_bag_forward(
                list(weights), ids, offsets, psw, padding_idx, pooling, batch_size)
        # Plain attributes, not save_for_backward: the fused update writes the weights in place
        # (a saved-tensor version check would trip on a second forward before backward).
        ctx.weights, ctx.argmax, ctx.args, ctx.spec = weights, argmax, (ids, offsets, psw), spec
        ctx.mark_non_differentiable(argmax)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        weights, argmax, (ids, offsets, psw) = list(ctx.weights), ctx.argmax, ctx.args
        (padding_idx, pooling, batch_size, sparse, optimizer, hyper, skip, state, skipped,
         eager) = ctx.spec
        psw_grad = None
        if ctx.needs_input_grad[3]:
            psw_grad = torch.ops.dlrmx.embedding_bags_psw_grad(
                grad_out, [w.detach() for w in weights], ids, offsets, padding_idx, batch_size)
        head = (None, None, None, psw_grad, None)
        args = (grad_out, weights, ids, offsets, psw, padding_idx, pooling, batch_size, argmax)
        if optimizer:
            # Eager: the op's CPU kernel itself, one dispatcher round trip less (a few us). Traced
            # (the op's Autograd kernel ran): the op, so the graph records it and its mutations.
            if eager:
                _fused_update_cpu(*args, optimizer, hyper, skip, state, skipped, ctx.batch)
            else:
                torch.ops.dlrmx.embedding_bags_update(*args, optimizer, hyper, skip, state, skipped)
            return head + (None,) * len(weights)
        if not any(ctx.needs_input_grad[5:]):
            return head + (None,) * len(weights)
        batch = ctx.batch if eager and ctx.batch.still_describes(weights) else None
        if sparse:
            rows, values = (batch.sparse_grad(grad_out, argmax) if batch else
                            torch.ops.dlrmx.embedding_bag_sparse_grad(*args))
            grads = [
                torch.sparse_coo_tensor(r.unsqueeze(0), v, w.shape, is_coalesced=True,
                                        check_invariants=False)
                for r, v, w in zip(rows, values, weights)
            ]
        else:
            grads = (batch.dense_grad(grad_out, argmax) if batch else
                     torch.ops.dlrmx.embedding_bag_dense_grad(*args))
        grads = [g.to(w.dtype) if w.dtype != g.dtype else g for g, w in zip(grads, weights)]
        return head + tuple(grads)


def _autograd_kernel(anchor, weights, ids, offsets, psw, *spec):
    return _EmbeddingBags.apply(anchor, ids, offsets, psw, (*spec, False), *weights)


_LIB.impl("embedding_bags", _embedding_bags_cpu, "CPU")
_LIB.impl("embedding_bags_update", _fused_update_cpu, "CPU")
_LIB.impl("embedding_bags_psw_grad", psw_grad, "CPU")
_LIB.impl("embedding_bags", _autograd_kernel, "Autograd")

_NO_ANCHOR = torch.empty(0)


def embedding_bags(
    weights: Sequence[torch.Tensor],
    ids: torch.Tensor,
    offsets: torch.Tensor,
    batch_size: int,
    *,
    pooling: str = "sum",
    per_sample_weights: torch.Tensor | None = None,
    padding_idx: Sequence[int] | None = None,
    sparse: bool = False,
    optimizer: "FusedUpdate | None" = None,
    anchor: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pooled lookups of T tables in one call: returns [batch_size, sum of dims].

    ids hold every table's ids, table-major; bag (t, b) is ids[offsets[t*B+b]:offsets[t*B+b+1]].
    With `optimizer` (a `dlrmx.nn.sparse_optim.FusedUpdate`: the optimizer and its per-table
    state), backward updates the weights in place (pass an `anchor` that requires grad so
    autograd calls it); otherwise backward gives each weight a dense or sparse gradient.
    Under torch.fx.symbolic_trace this function is one call node (see torch.fx.wrap below).
    """
    if pooling not in POOLING:
        raise ValueError(f"pooling must be one of {sorted(POOLING)}, got {pooling!r}")
    for name, t in (("ids", ids), ("offsets", offsets)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    eager = ids.device.type == "cpu"  # else the dispatcher finds the device's kernels
    if not eager:
        _check_device(ids, offsets)
    _check_batch_size(batch_size)
    pad = [-1] * len(weights) if padding_idx is None else [(-1 if p is None else p) for p in padding_idx]
    spec = (pad, POOLING[pooling], batch_size, sparse, *_fused_args(optimizer))
    if anchor is None:
        anchor = _NO_ANCHOR
    if torch.compiler.is_compiling():  # Dynamo / export: one opaque op in the graph
        return torch.ops.dlrmx.embedding_bags(anchor, list(weights), ids, offsets,
                                              per_sample_weights, *spec)
    return _EmbeddingBags.apply(anchor, ids, offsets, per_sample_weights, (*spec, eager), *weights)


def _check_device(ids: torch.Tensor, offsets: torch.Tensor) -> None:
    """Ids off the CPU: CUDA ids with dlrmx's CUDA kernels loaded, offsets beside them."""
    if ids.device.type != "cuda":
        raise TypeError(f"ids must be on the CPU or a CUDA device, got {ids.device}")
    why = cuda.unavailable()
    if why:
        raise RuntimeError(f"ids are on {ids.device}, but dlrmx's CUDA kernels are not "
                           f"available: {why}")
    if offsets.device != ids.device:
        raise TypeError(f"offsets must be on the ids' device {ids.device}, got {offsets.device}")


torch.fx.wrap("embedding_bags")  # a leaf call under torch.fx.symbolic_trace


_NOT_FUSED = ("", None, False, [], None)


def _fused_args(fused: "FusedUpdate | None") -> tuple:
    """A FusedUpdate -> the op's plain arguments (name, hyper, skip_nonfinite, state, skipped);
    no optimizer -> the ones that mean "gradients for the weights"."""
    if fused is None:
        return _NOT_FUSED
    opt = fused.optimizer
    if not torch.compiler.is_compiling():
        opt.check()  # the native update checks again at run time, before any row changes
    return opt.name, opt.hyper, bool(opt.skip_nonfinite), list(fused.state), opt.skip_counter


def script_unsupported(module: object) -> NotImplementedError:
    """The error for torch.jit.script of a dlrmx module (raise it from __prepare_scriptable__)."""
    return NotImplementedError(
        f"{type(module).__name__} does not support torch.jit.script (TorchScript cannot express "
        "dlrmx's fused embedding ops and their optimizers): use torch.compile(model) to speed it "
        "up, or torch.export.export(model, args) to capture a graph")


def _check_batch_size(batch_size) -> None:
    """An int in [0, 2^63) (a SymInt under torch.compile passes); the op checks it against the
    offsets without overflow."""
    if isinstance(batch_size, torch.SymInt):
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if not 0 <= batch_size < 2**63:
        raise ValueError(f"batch_size must be in [0, 2^63), got {batch_size}")


def isa_info() -> dict:
    """ISA levels: compiled, supported by this CPU, and in use."""
    return {
        "compiled": native.isa_names(0),
        "supported": native.isa_names(1),
        "active": native.isa_names(2)[0],
    }


def set_isa(name: str) -> None:
    """Force an ISA level for this process (same as DLRMX_CPU_ISA before the first kernel call)."""
    native.set_isa(name)


from dlrmx import cuda  # noqa: E402 (registers the CUDA kernels of the ops defined above)
