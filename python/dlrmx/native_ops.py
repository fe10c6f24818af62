"""The native kernels as torch ops: torch.ops.dlrmx.* schemas, their CPU implementations and the
checks that turn tensors into the C ABI's pointers and sizes (csrc/dlrmx.h).

Defined in Python with torch.library, so the native library needs no torch to build and works
under any torch (dlrmx.native). The work is split between the two sides:
- here: what only the tensors know (device, layout, dtype, shape, contiguity), raised as the
  exception torch would raise (TypeError for the wrong kind of tensor, ValueError for a wrong
  shape); read-only inputs are made contiguous (copied only if they are not), while a tensor an
  op writes in place must already be contiguous;
- in C: everything that depends on the data or could overflow (offsets, ids, overlapping
  outputs, hyper-parameters), checked before any weight is written.
The fast path costs one pass of cheap attribute reads per tensor; the detailed messages are built
only when a check fails. Eager callers use the implementations directly (EAGER, Batch, kernels():
no dispatcher round trip); torch.compile and torch.export see the ops (fake implementations in
dlrmx.ops and dlrmx.models.interaction).
"""

from __future__ import annotations

import ctypes
import types
from array import array

import torch

from dlrmx import native

_LIB = torch.library.Library("dlrmx", "FRAGMENT")  # noqa: TOR901 (kept alive: it owns the defs)
_LIB.define("embedding_bag_forward(Tensor[] weights, Tensor ids, Tensor offsets, Tensor? "
            "per_sample_weights, int[] padding_idx, int pooling, int batch_size) -> (Tensor, Tensor)")
_LIB.define("embedding_bag_dense_grad(Tensor grad_out, Tensor[] weights, Tensor ids, Tensor "
            "offsets, Tensor? per_sample_weights, int[] padding_idx, int pooling, int batch_size, "
            "Tensor argmax) -> Tensor[]")
_LIB.define("embedding_bag_sparse_grad(Tensor grad_out, Tensor[] weights, Tensor ids, Tensor "
            "offsets, Tensor? per_sample_weights, int[] padding_idx, int pooling, int batch_size, "
            "Tensor argmax) -> (Tensor[], Tensor[])")
_LIB.define("embedding_bag_update(Tensor grad_out, Tensor(a!)[] weights, Tensor ids, Tensor "
            "offsets, Tensor? per_sample_weights, int[] padding_idx, int pooling, int batch_size, "
            "Tensor argmax, str optimizer, float lr, float eps, Tensor(b!)[] state) -> ()")
_LIB.define("dot_interaction(Tensor dense, Tensor emb) -> Tensor")
_LIB.define("dot_interaction_backward(Tensor grad, Tensor dense, Tensor emb) -> (Tensor, Tensor)")
_LIB.define("lamb_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avg, Tensor(c!)[] "
            "exp_avg_sq, float lr, float beta1, float beta2, float eps, float weight_decay, "
            "float max_weight_norm, bool bias_correction, int step) -> ()")
_LIB.define("split_sgd_step(Tensor(a!)[] params, Tensor(b!)[] trails, Tensor[] grads, float lr, "
            "float weight_decay) -> ()")

# Every pointer goes as a plain address (c_void_p takes a Python int, the fastest conversion).
_P, _I32, _I64, _F64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_double
_c = native.declare
_forward = _c("dlrmx_embedding_bag_forward", _P, _P, _P)
_dense_grad = _c("dlrmx_embedding_bag_dense_grad", _P, _P, _P, _P)
_sparse_plan = _c("dlrmx_embedding_bag_sparse_plan", _P, _P)
_sparse_grad = _c("dlrmx_embedding_bag_sparse_grad", _P, _P, _P, _P, _P)
_update = _c("dlrmx_embedding_bag_update", _P, _P, _P, _I32, _F64, _F64, _P, _I64)
_dot_forward = _c("dlrmx_dot_interaction_forward", _I32, _P, _P, _I64, _I64, _I64, _P, _I32)
_dot_backward = _c("dlrmx_dot_interaction_backward", _I32, _P, _P, _P, _I64, _I64, _I64, _P, _P,
                   _I32)
_lamb = _c("dlrmx_lamb_step", _I64, _P, _P, _P, _P, _P, _F64, _F64, _F64, _F64, _F64, _F64,
           _I32, _I64, _I32)
_split_sgd = _c("dlrmx_split_sgd_step", _I64, _P, _P, _P, _I32, _P, _F64, _F64, _I32)

_F32, _BF16, _INT32, _INT64 = 0, 1, 2, 3
_CODES = {torch.float32: _F32, torch.bfloat16: _BF16, torch.int32: _INT32, torch.int64: _INT64}
OPTIMIZERS = {"sgd": 0, "split_sgd": 1, "rowwise_adagrad": 2, "adagrad": 3}
_STRIDED, _INDEX_DTYPES = torch.strided, (torch.int32, torch.int64)
_NUM_THREADS = 10  # csrc/dlrmx.h: DLRMX_BAGS_NUM_THREADS, the description's thread count


def _ptrs(tensors) -> array:
    """The tensors' data pointers as an int64 array (pass _addr(it) to C; keep it alive)."""
    return array("q", [t.data_ptr() for t in tensors])


def _int64s(values) -> array:
    return array("q", values)


def _addr(a: array) -> int:
    return a.buffer_info()[0]


# ---- checks (the message is built only when a check fails) -------------------------------------

def _name(op: str, arg: str, index: int | None = None) -> str:
    return f"{op}: {arg}" if index is None else f"{op}: {arg}[{index}]"


def _dense_cpu(t, op, arg, index=None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{_name(op, arg, index)} must be a tensor, got {type(t).__name__}")
    if not t.is_cpu:
        raise TypeError(f"{_name(op, arg, index)} must be a CPU tensor, got one on {t.device}")
    if t.layout is not _STRIDED:
        raise TypeError(f"{_name(op, arg, index)} must be a dense (strided) tensor, got layout "
                        f"{t.layout}")


def _readable(t, op, arg, index=None) -> torch.Tensor:
    """A tensor the op only reads: checked, then contiguous (copied only if it is not)."""
    if not (isinstance(t, torch.Tensor) and t.is_cpu and t.layout is _STRIDED):
        _dense_cpu(t, op, arg, index)
    return t.resolve_neg().contiguous()


def _readable_float(t, op, arg, dtype, index=None) -> torch.Tensor:
    """A floating-point tensor the op only reads (a gradient): contiguous, in `dtype`."""
    _dense_cpu(t, op, arg, index)
    if not t.is_floating_point():
        raise TypeError(f"{_name(op, arg, index)} must be a floating-point tensor, got {t.dtype}")
    return t.resolve_neg().to(dtype).contiguous()


def _writable(t, op, arg, dtype, shape=None, index=None) -> None:
    """A tensor the op writes in place: right dtype and shape, and already contiguous."""
    if (isinstance(t, torch.Tensor) and t.is_cpu and t.layout is _STRIDED and t.dtype is dtype
            and t.is_contiguous() and not t.is_neg() and (shape is None or t.shape == shape)):
        return
    n = _name(op, arg, index)
    _dense_cpu(t, op, arg, index)
    if t.dtype is not dtype:
        raise TypeError(f"{n} must be {dtype}, got {t.dtype}")
    if shape is not None and t.shape != shape:
        raise ValueError(f"{n} must have shape {list(shape)}, got {list(t.shape)}")
    raise ValueError(f"{n} is updated in place, so it must be a contiguous tensor that owns its "
                     f"elements (got sizes {list(t.shape)}, strides {list(t.stride())}); pass a "
                     ".contiguous() copy and keep using that copy")


def _index_tensor(t, arg) -> None:
    _dense_cpu(t, "embedding_bag", arg)
    if t.dtype not in _INDEX_DTYPES:
        raise TypeError(f"{arg} must be int32 or int64, got {t.dtype}")
    if t.ndim != 1:
        raise ValueError(f"ids and offsets must be 1-D, got {arg} {t.ndim}-D")


def _weights_error(weights, t: int) -> None:
    w, n = weights[t], _name("embedding_bag", "weights", t)
    _dense_cpu(w, "embedding_bag", "weights", t)
    if w.dtype not in (torch.float32, torch.bfloat16):
        raise TypeError(f"{n} must be float32 or bfloat16, got {w.dtype}")
    if w.dtype is not weights[0].dtype:
        raise TypeError(f"all tables must share one dtype; weights[{t}] is {w.dtype}, weights[0] "
                        f"is {weights[0].dtype}")
    raise ValueError(f"{n} must be a contiguous 2-D [rows, dim] tensor (the fused backward "
                     f"updates it in place), got sizes {list(w.shape)}, strides {list(w.stride())}")


class Batch:
    """One batch of lookups over T tables, checked and described for the C ABI (one int64
    array), with the tensors the description points into kept alive; its methods run the
    kernels on it."""

    __slots__ = ("address", "desc", "ptrs", "dims", "rows", "width", "batch_size", "pooling",
                 "ids", "offsets", "psw")

    def __init__(self, weights, ids, offsets, psw, padding_idx, pooling, batch_size):
        T = len(weights)
        if T == 0:
            raise ValueError("need at least one table")
        if len(padding_idx) != T:
            raise ValueError(f"padding_idx has {len(padding_idx)} entries for {T} tables")
        for arg, t in (("ids", ids), ("offsets", offsets)):
            if not (isinstance(t, torch.Tensor) and t.is_cpu and t.layout is _STRIDED
                    and t.dtype in _INDEX_DTYPES and t.ndim == 1):
                _index_tensor(t, arg)
        dtype = weights[0].dtype if isinstance(weights[0], torch.Tensor) else None
        if dtype is not torch.float32 and dtype is not torch.bfloat16:
            _weights_error(weights, 0)
        # One pass of cheap reads per table (checks, address, sizes), then the whole batch as
        # one int64 array, the C ABI's batch description (csrc/dlrmx.h, DLRMX_BAGS_*).
        ptrs, rows, dims = [], [], []
        for t, w in enumerate(weights):
            if not (isinstance(w, torch.Tensor) and w.dtype is dtype and w.ndim == 2 and w.is_cpu
                    and w.is_contiguous() and not w.is_neg()):
                _weights_error(weights, t)
            r, d = w.shape
            rows.append(r)
            dims.append(d)
            ptrs.append(w.data_ptr())
        self.ptrs, self.rows, self.dims, self.width = ptrs, rows, dims, sum(dims)
        # Sized here (Python ints cannot overflow), before any output is allocated.
        nbags = T * batch_size
        if batch_size < 0 or nbags + 1 >= 2**63:
            raise ValueError(f"batch_size {batch_size} is too large: T*B+1 offsets (T={T} tables) "
                             f"overflow int64; offsets has {offsets.numel()} entries"
                             if batch_size >= 0 else f"batch_size must be >= 0, got {batch_size}")
        if offsets.numel() != nbags + 1:
            raise ValueError(f"offsets must have T*B+1 = {nbags + 1} entries (T={T} tables, "
                             f"B=batch_size={batch_size}), got {offsets.numel()}")
        if not ids.is_contiguous():
            ids = ids.contiguous()
        if offsets.dtype is not torch.int64 or not offsets.is_contiguous():
            offsets = offsets.contiguous().to(torch.int64)
        if psw is not None:
            psw = self._psw(psw, ids, pooling)
        self.ids, self.offsets, self.psw = ids, offsets, psw
        self.batch_size, self.pooling = batch_size, pooling
        self.desc = array("q", [T, _CODES[dtype], ids.data_ptr(), _CODES[ids.dtype], ids.numel(),
                                offsets.data_ptr(), offsets.numel(),
                                0 if psw is None else psw.data_ptr(), pooling, batch_size,
                                torch.get_num_threads(), *ptrs, *rows, *dims, *padding_idx])
        self.address = self.desc.buffer_info()[0]

    @staticmethod
    def _psw(psw, ids, pooling) -> torch.Tensor:
        if pooling != 0:
            raise ValueError("per_sample_weights are only supported with mode='sum'")
        _dense_cpu(psw, "embedding_bag", "per_sample_weights")
        if psw.dtype is not torch.float32:
            raise TypeError(f"per_sample_weights must be a float32 CPU tensor, got {psw.dtype} on "
                            f"{psw.device}")
        if psw.ndim != 1 or psw.numel() != ids.numel():
            raise ValueError(f"per_sample_weights must be 1-D with one weight per id "
                             f"({ids.numel()}), got shape {list(psw.shape)}")
        return psw.resolve_neg().contiguous()

    def grad_out(self, grad_out) -> torch.Tensor:
        _dense_cpu(grad_out, "embedding_bag", "grad_out")
        if grad_out.ndim != 2 or grad_out.shape[0] != self.batch_size or grad_out.shape[1] != self.width:
            raise ValueError(f"grad_out must be [{self.batch_size}, {self.width}], got "
                             f"{list(grad_out.shape)}")
        return _readable_float(grad_out, "embedding_bag", "grad_out", torch.float32)

    def argmax(self, argmax) -> torch.Tensor | None:
        """The forward's argmax for max pooling (checked: the ops are public), else None. Its
        values are only compared with row numbers, so any value is safe."""
        if self.pooling != 2:
            return None
        if not (isinstance(argmax, torch.Tensor) and argmax.dtype is torch.int64
                and argmax.ndim == 2 and tuple(argmax.shape) == (self.batch_size, self.width)):
            got = (f"{argmax.dtype} {list(argmax.shape)}" if isinstance(argmax, torch.Tensor)
                   else type(argmax).__name__)
            raise ValueError(f"max pooling needs the forward's argmax, an int64 "
                             f"[{self.batch_size}, {self.width}] tensor; got {got}")
        return _readable(argmax, "embedding_bag", "argmax")


    # The four kernels on this batch.

    def forward(self):
        B, width = self.batch_size, self.width
        out = torch.empty(B, width)  # the default dtype (float32), by torch.empty's fast path
        if out.dtype is not torch.float32:
            out = out.float()
        if self.pooling == 2:
            argmax = torch.empty(B, width, dtype=torch.int64)
            native.call(_forward, self.address, out.data_ptr(), argmax.data_ptr())
        else:
            argmax = torch.empty(0, dtype=torch.int64)
            native.call(_forward, self.address, out.data_ptr(), None)
        return out, argmax

    def dense_grad(self, grad_out, argmax) -> list[torch.Tensor]:
        go, am = self.grad_out(grad_out), self.argmax(argmax)
        grads = [torch.zeros((r, d), dtype=torch.float32) for r, d in zip(self.rows, self.dims)]
        grad_ptrs = _ptrs(grads)
        native.call(_dense_grad, self.address, go.data_ptr(), _ptr(am), _addr(grad_ptrs))
        return grads

    def sparse_grad(self, grad_out, argmax):
        """Coalesced sparse gradients: per table, the distinct rows touched (sorted) and their
        summed gradients (dlrmx.ops wraps them as sparse COO tensors)."""
        go, am = self.grad_out(grad_out), self.argmax(argmax)
        nnz = array("q", self.rows)  # overwritten with each table's number of distinct rows
        native.call(_sparse_plan, self.address, _addr(nnz))
        rows = [torch.empty(n, dtype=torch.int64) for n in nnz]
        values = [torch.empty((n, d), dtype=torch.float32) for n, d in zip(nnz, self.dims)]
        row_ptrs, value_ptrs = _ptrs(rows), _ptrs(values)
        native.call(_sparse_grad, self.address, go.data_ptr(), _ptr(am), _addr(row_ptrs),
                    _addr(value_ptrs))
        # Threads own interleaved rows: sort each table's rows so the COO tensor is coalesced.
        for t in range(len(rows)):
            rows[t], order = rows[t].sort()
            values[t] = values[t].index_select(0, order)
        return rows, values

    def update(self, grad_out, argmax, optimizer, lr, eps, state) -> None:
        """Fused backward + optimizer: updates the touched rows of the weights in place. `state`
        holds the optimizer's per-table tensors: split_sgd trails (int16, [rows, dim]),
        rowwise_adagrad sums (float32, [rows]), adagrad sums (float32, [rows, dim]); none for
        sgd."""
        code = OPTIMIZERS.get(optimizer)
        if code is None:
            raise ValueError(f"unknown sparse optimizer '{optimizer}' (expected sgd, split_sgd, "
                             "rowwise_adagrad or adagrad)")
        go, am = self.grad_out(grad_out), self.argmax(argmax)
        if code != 0 and len(state) != len(self.rows):
            raise ValueError(f"{optimizer} needs one state tensor per table ({len(self.rows)}), "
                             f"got {len(state)}")
        if code != 0:
            dtype = torch.int16 if code == 1 else torch.float32
            for t, s in enumerate(state):
                shape = (self.rows[t],) if code == 2 else (self.rows[t], self.dims[t])
                _writable(s, "embedding_bag", "state", dtype, shape, t)
        state_ptrs = _ptrs(state)
        native.call(_update, self.address, go.data_ptr(), _ptr(am), code, lr, eps,
                    _addr(state_ptrs), len(state))

    def still_describes(self, weights) -> bool:
        """True if `weights` still live where this batch was described (the forward's batch then
        serves its backward: the tensors it read from are held by the autograd context, and a
        storage never shrinks in place, so the same addresses mean the same memory); the
        thread count is refreshed."""
        if [w.data_ptr() for w in weights] != self.ptrs:
            return False
        self.desc[_NUM_THREADS] = torch.get_num_threads()
        return True


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _threads() -> int:
    return torch.get_num_threads()


# ---- embedding bags: the ops -------------------------------------------------------------------

def embedding_bag_forward_impl(weights, ids, offsets, per_sample_weights, padding_idx, pooling,
                               batch_size):
    return Batch(weights, ids, offsets, per_sample_weights, padding_idx, pooling,
                 batch_size).forward()


def embedding_bag_dense_grad_impl(grad_out, weights, ids, offsets, per_sample_weights,
                                  padding_idx, pooling, batch_size, argmax):
    return Batch(weights, ids, offsets, per_sample_weights, padding_idx, pooling,
                 batch_size).dense_grad(grad_out, argmax)


def embedding_bag_sparse_grad_impl(grad_out, weights, ids, offsets, per_sample_weights,
                                   padding_idx, pooling, batch_size, argmax):
    return Batch(weights, ids, offsets, per_sample_weights, padding_idx, pooling,
                 batch_size).sparse_grad(grad_out, argmax)


def embedding_bag_update_impl(grad_out, weights, ids, offsets, per_sample_weights, padding_idx,
                              pooling, batch_size, argmax, optimizer, lr, eps, state) -> None:
    Batch(weights, ids, offsets, per_sample_weights, padding_idx, pooling,
          batch_size).update(grad_out, argmax, optimizer, lr, eps, state)


# ---- dot interaction ----------------------------------------------------------------------------

def _interaction_inputs(dense, emb):
    op = "dot_interaction"
    _dense_cpu(dense, op, "dense")
    _dense_cpu(emb, op, "emb")
    return interaction_sizes(dense, emb)


def interaction_sizes(dense, emb):
    """(B, T, D, output width) of a dot interaction, after its dtype and shape checks (the
    device's own checks come first: here and in dlrmx.cuda)."""
    if dense.dtype is not emb.dtype or dense.dtype not in (torch.float32, torch.bfloat16):
        raise TypeError(f"dot_interaction: dense and emb must both be float32 or both bfloat16, "
                        f"got {dense.dtype} and {emb.dtype}")
    if dense.ndim != 2 or emb.ndim != 2 or dense.shape[0] != emb.shape[0]:
        raise ValueError(f"dot_interaction: expected dense [B, D] and emb [B, T*D], got "
                         f"{list(dense.shape)} and {list(emb.shape)}")
    B, D = dense.shape
    if D == 0 or emb.shape[1] % D:
        raise ValueError(f"dot_interaction: emb width {emb.shape[1]} is not a multiple of the dense "
                         f"width {D} (every embedding dim must equal the bottom MLP's output size)")
    T = emb.shape[1] // D
    f = T + 1
    width = D + f * T // 2
    for what, size in (("the pair count", f * T), ("the output width", width),
                       ("the output size (B * width)", B * width)):
        if size >= 2**63:
            raise ValueError(f"dot_interaction: {what} ({size}) overflows int64")
    return B, T, D, width


def dot_interaction_impl(dense, emb) -> torch.Tensor:
    B, T, D, width = _interaction_inputs(dense, emb)
    dense = _readable(dense, "dot_interaction", "dense")
    emb = _readable(emb, "dot_interaction", "emb")
    out = torch.empty((B, width), dtype=dense.dtype)
    native.call(_dot_forward, _CODES[dense.dtype], dense.data_ptr(), emb.data_ptr(), B, T, D,
                out.data_ptr(), _threads())
    return out


def dot_interaction_backward_impl(grad, dense, emb):
    B, T, D, width = _interaction_inputs(dense, emb)
    _dense_cpu(grad, "dot_interaction", "grad")
    if grad.ndim != 2 or tuple(grad.shape) != (B, width):
        raise ValueError(f"dot_interaction_backward: grad has shape {list(grad.shape)}, expected "
                         f"[{B}, {width}]")
    dense = _readable(dense, "dot_interaction", "dense")
    emb = _readable(emb, "dot_interaction", "emb")
    grad = _readable_float(grad, "dot_interaction", "grad", dense.dtype)
    gd, ge = torch.empty_like(dense), torch.empty_like(emb)
    native.call(_dot_backward, _CODES[dense.dtype], grad.data_ptr(), dense.data_ptr(),
                emb.data_ptr(), B, T, D, gd.data_ptr(), ge.data_ptr(), _threads())
    return gd, ge


# ---- dense optimizers ---------------------------------------------------------------------------

def _grads(op, params, grads, dtype=torch.float32) -> list[torch.Tensor]:
    """Each parameter's gradient (read only) as a contiguous `dtype` tensor of its shape."""
    out = []
    for i, (p, g) in enumerate(zip(params, grads)):
        _dense_cpu(g, op, "grads", i)
        if g.shape != p.shape:
            raise ValueError(f"{op}: grads[{i}] must have shape {list(p.shape)}, got "
                             f"{list(g.shape)}")
        out.append(_readable_float(g, op, "grads", dtype, i))
    return out


def lamb_step_impl(params, grads, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay,
                   max_weight_norm, bias_correction, step) -> None:
    op = "lamb_step"
    n = len(params)
    if not len(grads) == len(exp_avg) == len(exp_avg_sq) == n:
        raise ValueError("lamb_step needs one grad and two moments per parameter")
    for i, p in enumerate(params):
        _writable(p, op, "params", torch.float32, index=i)
        _writable(exp_avg[i], op, "exp_avg", torch.float32, p.shape, i)
        _writable(exp_avg_sq[i], op, "exp_avg_sq", torch.float32, p.shape, i)
    g = _grads(op, params, grads)
    keep = [_ptrs(params), _ptrs(g), _ptrs(exp_avg), _ptrs(exp_avg_sq),
            _int64s([p.numel() for p in params])]  # alive through the call
    native.call(_lamb, n, *map(_addr, keep), lr, beta1, beta2, eps, weight_decay,
                max_weight_norm, int(bias_correction), step, _threads())


def split_sgd_step_impl(params, trails, grads, lr, weight_decay) -> None:
    op = "split_sgd_step"
    n = len(params)
    if not len(trails) == len(grads) == n:
        raise ValueError("split_sgd_step needs one trail and one grad per parameter")
    for i, p in enumerate(params):
        _writable(p, op, "params", torch.bfloat16, index=i)
        _writable(trails[i], op, "trails", torch.int16, p.shape, i)
    # bf16 gradients (the bf16 GEMMs' output) are read as they are: no fp32 copy of each
    bf16 = all(isinstance(g, torch.Tensor) and g.dtype is torch.bfloat16 for g in grads)
    dtype = torch.bfloat16 if bf16 else torch.float32
    g = _grads(op, params, grads, dtype)
    ptrs = [_ptrs(params), _ptrs(trails), _ptrs(g)]
    numel = _int64s([p.numel() for p in params])
    native.call(_split_sgd, n, *map(_addr, ptrs), _CODES[dtype], _addr(numel), lr, weight_decay,
                _threads())


# The CPU implementations, also callable directly as EAGER.<op> (as torch.ops.dlrmx.<op>).
EAGER = types.SimpleNamespace(
    embedding_bag_forward=embedding_bag_forward_impl,
    embedding_bag_dense_grad=embedding_bag_dense_grad_impl,
    embedding_bag_sparse_grad=embedding_bag_sparse_grad_impl,
    embedding_bag_update=embedding_bag_update_impl,
    dot_interaction=dot_interaction_impl,
    dot_interaction_backward=dot_interaction_backward_impl,
    lamb_step=lamb_step_impl,
    split_sgd_step=split_sgd_step_impl,
)
for _op, _fn in vars(EAGER).items():
    _LIB.impl(_op, _fn, "CPU")


def kernels(device: torch.device | None = None):
    """The ops to call: the CPU implementations directly in eager mode (one dispatcher round
    trip less); the registered ops while torch.compile or export traces (so they reach the
    graph) and for tensors on another `device` (the dispatcher finds its kernel: dlrmx.cuda)."""
    if torch.compiler.is_compiling() or (device is not None and device.type != "cpu"):
        return torch.ops.dlrmx
    return EAGER
