"""dlrmx's CUDA kernels: libdlrmx_cuda.so (kernels/cuda, C ABI in kernels/cuda/dlrmx_cuda.h),
loaded with ctypes, and the CUDA implementations of the torch.ops.dlrmx.* ops.

Importing this module registers CUDA kernels for the embedding-bag ops (forward, dense and sparse
gradients, the fused update, and ops.py's embedding_bags / embedding_bags_update /
embedding_bags_psw_grad) and for the dot interaction, so the dispatcher runs them for CUDA
tensors: `torch.ops.dlrmx.embedding_bags(...)` with CUDA weights, ids and offsets works forward
and backward (fused update included). The sketch and cache kernels, which have no torch op on the
CPU either, are plain functions here (cms_update, cms_query, exact_count, HotMapCUDA,
gather_rows, scatter_rows).

It imports cleanly everywhere: on a CPU-only torch nothing is registered; where the library is
not built or does not load, `lib` is None, `load_error` says why, `available()` is False and the
CUDA ops raise a RuntimeError saying so. Checks mirror dlrmx.native_ops (same exception kinds
and, for data-dependent problems found by the library, the same messages as the CPU kernels);
kernels run on `torch.cuda.current_stream()` of the tensors' device.
"""

from __future__ import annotations

import ctypes
import functools
import os
from array import array
from pathlib import Path
import numpy as np
import torch

from dlrmx import native, native_ops, ops  # noqa: F401 (ops defines dlrmx::embedding_bags*)
from dlrmx.optim import steps

LIBRARY = "libdlrmx_cuda.so"
ABI_VERSION = 1  # kernels/cuda/dlrmx_cuda.h DLRMX_CUDA_ABI_VERSION

lib: ctypes.CDLL | None = None
load_error: str | None = None


def library_path() -> Path | None:
    """$DLRMX_CUDA_LIBRARY, else libdlrmx_cuda.so beside libdlrmx.so (the package's path
    entries), else None."""
    env = os.environ.get("DLRMX_CUDA_LIBRARY")
    if env:
        return Path(env)
    import dlrmx

    for entry in dlrmx.__path__:
        path = Path(entry) / LIBRARY
        if path.exists():
            return path
    return None


def _load() -> None:
    global lib, load_error
    path = library_path()
    if path is None:
        load_error = (f"{LIBRARY} is not built (configure with -DDLRMX_CUDA=ON, or pip install with "
                      "-C cmake.define.DLRMX_CUDA=ON, on a machine with nvcc)")
        return
    try:
        handle = ctypes.CDLL(str(path))
    except OSError as e:
        load_error = f"{path} did not load: {e}"
        return
    handle.dlrmx_cuda_abi_version.restype = ctypes.c_int32
    found = handle.dlrmx_cuda_abi_version()
    if found != ABI_VERSION:
        load_error = (f"{path} has CUDA ABI version {found}, this Python package expects "
                      f"{ABI_VERSION}: {native.REBUILD}")
        return
    lib = handle


_load()


def available() -> bool:
    """True if the CUDA kernels are built and loaded, torch sees a GPU, and the GPU's driver
    runs the CUDA major version the library was built with (else `load_error` says why)."""
    return lib is not None and torch.cuda.is_available() and _driver_error() is None


def unavailable() -> str | None:
    """Why `available()` is False (for error messages), or None where it is True."""
    if available():
        return None
    return load_error or "torch sees no GPU"


@functools.cache
def _driver_error() -> str | None:
    global load_error
    v = versions()
    if v["driver"] // 1000 < v["runtime"] // 1000:  # minor versions are compatible
        load_error = (f"the GPU driver supports CUDA {v['driver']}, older than the CUDA "
                      f"{v['runtime']} libdlrmx_cuda.so was built with: update the driver, or "
                      "build with an nvcc the driver supports")
    return load_error


def _require() -> ctypes.CDLL:
    if lib is None:
        raise RuntimeError(f"dlrmx's CUDA kernels are not available: {load_error}")
    return lib


_P, _I32, _I64, _F64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_double
_FNS: dict[str, object] = {}
_SIGNATURES = {
    "dlrmx_cuda_versions": (_P, _P, _P),
    "dlrmx_cuda_embedding_bag_workspace": (_P, _I32, _P),
    "dlrmx_cuda_embedding_bag_forward": (_P, _P, _P, _P, _I64, _P),
    "dlrmx_cuda_embedding_bag_dense_grad": (_P, _P, _P, _P, _P, _I64, _P),
    "dlrmx_cuda_embedding_bag_sparse_plan": (_P, _P, _P, _I64, _P),
    "dlrmx_cuda_embedding_bag_sparse_grad": (_P, _P, _P, _P, _P, _P, _I64, _P),
    "dlrmx_cuda_embedding_bag_update": (_P, _P, _P, _I32, _F64, _F64, _P, _I64, _P, _I64, _P),
    "dlrmx_cuda_dot_interaction_forward": (_I32, _P, _P, _I64, _I64, _I64, _P, _P),
    "dlrmx_cuda_dot_interaction_backward": (_I32, _P, _P, _P, _I64, _I64, _I64, _P, _P, _P),
    "dlrmx_cuda_cms_update": (_P, _I64, _I64, _P, _P, _P, _I64, _I32, _P),
    "dlrmx_cuda_cms_query": (_P, _I64, _I64, _P, _P, _I64, _P, _P),
    "dlrmx_cuda_exact_count": (_P, _I64, _P, _I64, _P),
    "dlrmx_cuda_cache_remap": (_I64, _P, _P, _P, _P, _P, _I32, _I64, _P, _I64, _P, _P, _P, _P),
    "dlrmx_cuda_gather_rows": (_P, _I64, _I64, _P, _I64, _P, _P),
    "dlrmx_cuda_scatter_rows": (_P, _I64, _I64, _P, _P, _I64, _P),
}


def _fn(name: str):
    """The library's C function `name`, declared (argument types, a trailing Status*)."""
    fn = _FNS.get(name)
    if fn is None:
        fn = getattr(_require(), name)
        fn.argtypes = [*_SIGNATURES[name], ctypes.POINTER(native.Status)]
        fn.restype = ctypes.c_int
        _FNS[name] = fn
    return fn


def _call(name: str, *args) -> None:
    native.call(_fn(name), *args)


def versions() -> dict:
    """The CUDA runtime the library was built with, the driver's version and the current
    device's compute capability (-1 where unknown)."""
    r, d, c = ctypes.c_int32(-1), ctypes.c_int32(-1), ctypes.c_int32(-1)
    _call("dlrmx_cuda_versions", ctypes.byref(r), ctypes.byref(d), ctypes.byref(c))
    return {"runtime": r.value, "driver": d.value, "capability": c.value}


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def _addr(a: array) -> int:
    return a.buffer_info()[0]


def _ptrs(tensors) -> array:
    return array("q", [t.data_ptr() for t in tensors])


# ---- checks (as dlrmx.native_ops, for CUDA tensors) ----------------------------------------------

_STRIDED, _INDEX_DTYPES = torch.strided, (torch.int32, torch.int64)
_F32, _BF16 = 0, 1
_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.int32: 2, torch.int64: 3}
_FORWARD, _DENSE_GRAD, _SPARSE_GRAD, _UPDATE = 0, 1, 2, 3


def _name(op, arg, index=None) -> str:
    return f"{op}: {arg}" if index is None else f"{op}: {arg}[{index}]"


def _dense_cuda(t, op, arg, device, index=None) -> None:
    """A dense (strided) tensor on `device` (a CUDA device), or the TypeError saying what it is."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{_name(op, arg, index)} must be a tensor, got {type(t).__name__}")
    if t.device != device:
        raise TypeError(f"{_name(op, arg, index)} must be a CUDA tensor on {device} (like the "
                        f"op's other tensors), got one on {t.device}")
    if t.layout is not _STRIDED:
        raise TypeError(f"{_name(op, arg, index)} must be a dense (strided) tensor, got layout "
                        f"{t.layout}")


def _readable(t, op, arg, device, index=None) -> torch.Tensor:
    _dense_cuda(t, op, arg, device, index)
    return t.resolve_neg().contiguous()


def _readable_float(t, op, arg, dtype, device, index=None) -> torch.Tensor:
    _dense_cuda(t, op, arg, device, index)
    if not t.is_floating_point():
        raise TypeError(f"{_name(op, arg, index)} must be a floating-point tensor, got {t.dtype}")
    return t.resolve_neg().to(dtype).contiguous()


def _writable(t, op, arg, dtype, device, shape=None, index=None) -> None:
    n = _name(op, arg, index)
    _dense_cuda(t, op, arg, device, index)
    if t.dtype is not dtype:
        raise TypeError(f"{n} must be {dtype}, got {t.dtype}")
    if shape is not None and t.shape != shape:
        raise ValueError(f"{n} must have shape {list(shape)}, got {list(t.shape)}")
    if not t.is_contiguous() or t.is_neg():
        raise ValueError(f"{n} is updated in place, so it must be a contiguous tensor that owns "
                         f"its elements (got sizes {list(t.shape)}, strides {list(t.stride())}); "
                         "pass a .contiguous() copy and keep using that copy")


class Batch:
    """One batch of lookups over T CUDA tables, checked and described for the CUDA C ABI (the CPU
    ABI's int64 batch description with device addresses); its methods run the kernels."""

    def __init__(self, weights, ids, offsets, psw, padding_idx, pooling, batch_size):
        T = len(weights)
        if T == 0:
            raise ValueError("need at least one table")
        if len(padding_idx) != T:
            raise ValueError(f"padding_idx has {len(padding_idx)} entries for {T} tables")
        w0 = weights[0]
        if not isinstance(w0, torch.Tensor) or w0.device.type != "cuda":
            raise TypeError("embedding_bag: weights[0] must be a CUDA tensor, got "
                            + (f"one on {w0.device}" if isinstance(w0, torch.Tensor)
                               else type(w0).__name__))
        device = self.device = w0.device
        dtype = w0.dtype
        if dtype not in (torch.float32, torch.bfloat16):
            raise TypeError(f"embedding_bag: weights[0] must be float32 or bfloat16, got {dtype}")
        for arg, t in (("ids", ids), ("offsets", offsets)):
            _dense_cuda(t, "embedding_bag", arg, device)
            if t.dtype not in _INDEX_DTYPES:
                raise TypeError(f"{arg} must be int32 or int64, got {t.dtype}")
            if t.ndim != 1:
                raise ValueError(f"ids and offsets must be 1-D, got {arg} {t.ndim}-D")
        rows, dims = [], []
        for t, w in enumerate(weights):
            _dense_cuda(w, "embedding_bag", "weights", device, t)
            if w.dtype is not dtype:
                raise TypeError(f"all tables must share one dtype; weights[{t}] is {w.dtype}, "
                                f"weights[0] is {dtype}")
            if w.ndim != 2 or not w.is_contiguous() or w.is_neg():
                raise ValueError(f"embedding_bag: weights[{t}] must be a contiguous 2-D [rows, dim] "
                                 f"tensor (the fused backward updates it in place), got sizes "
                                 f"{list(w.shape)}, strides {list(w.stride())}")
            rows.append(w.shape[0])
            dims.append(w.shape[1])
        self.weights, self.rows, self.dims, self.width = list(weights), rows, dims, sum(dims)
        self.ptrs = [w.data_ptr() for w in weights]
        nbags = T * batch_size
        if batch_size < 0 or nbags + 1 >= 2**63:
            raise ValueError(f"batch_size {batch_size} is too large: T*B+1 offsets (T={T} tables) "
                             f"overflow int64; offsets has {offsets.numel()} entries"
                             if batch_size >= 0 else f"batch_size must be >= 0, got {batch_size}")
        if offsets.numel() != nbags + 1:
            raise ValueError(f"offsets must have T*B+1 = {nbags + 1} entries (T={T} tables, "
                             f"B=batch_size={batch_size}), got {offsets.numel()}")
        ids = ids.contiguous()
        offsets = offsets.contiguous().to(torch.int64)
        if psw is not None:
            if pooling != 0:
                raise ValueError("per_sample_weights are only supported with mode='sum'")
            _dense_cuda(psw, "embedding_bag", "per_sample_weights", device)
            if psw.dtype is not torch.float32:
                raise TypeError(f"per_sample_weights must be a float32 CUDA tensor, got "
                                f"{psw.dtype} on {psw.device}")
            if psw.ndim != 1 or psw.numel() != ids.numel():
                raise ValueError(f"per_sample_weights must be 1-D with one weight per id "
                                 f"({ids.numel()}), got shape {list(psw.shape)}")
            psw = psw.resolve_neg().contiguous()
        self.ids, self.offsets, self.psw = ids, offsets, psw
        self.batch_size, self.pooling = batch_size, pooling
        self.desc = array("q", [T, _CODES[dtype], ids.data_ptr(), _CODES[ids.dtype], ids.numel(),
                                offsets.data_ptr(), offsets.numel(),
                                0 if psw is None else psw.data_ptr(), pooling, batch_size, 1,
                                *self.ptrs, *rows, *dims, *padding_idx])
        self.address = _addr(self.desc)

    def _workspace(self, op: int) -> torch.Tensor:
        n = ctypes.c_int64(0)
        _call("dlrmx_cuda_embedding_bag_workspace", self.address, op, ctypes.byref(n))
        return torch.empty(n.value, dtype=torch.uint8, device=self.device)

    def grad_out(self, grad_out) -> torch.Tensor:
        _dense_cuda(grad_out, "embedding_bag", "grad_out", self.device)
        if grad_out.ndim != 2 or tuple(grad_out.shape) != (self.batch_size, self.width):
            raise ValueError(f"grad_out must be [{self.batch_size}, {self.width}], got "
                             f"{list(grad_out.shape)}")
        return _readable_float(grad_out, "embedding_bag", "grad_out", torch.float32, self.device)

    def argmax(self, argmax) -> torch.Tensor | None:
        if self.pooling != 2:
            return None
        if not (isinstance(argmax, torch.Tensor) and argmax.dtype is torch.int64
                and argmax.ndim == 2 and tuple(argmax.shape) == (self.batch_size, self.width)):
            got = (f"{argmax.dtype} {list(argmax.shape)}" if isinstance(argmax, torch.Tensor)
                   else type(argmax).__name__)
            raise ValueError(f"max pooling needs the forward's argmax, an int64 "
                             f"[{self.batch_size}, {self.width}] tensor; got {got}")
        return _readable(argmax, "embedding_bag", "argmax", self.device)

    def forward(self):
        B, width, dev = self.batch_size, self.width, self.device
        out = torch.empty((B, width), dtype=torch.float32, device=dev)
        argmax = torch.empty((B, width) if self.pooling == 2 else (0,), dtype=torch.int64,
                             device=dev)
        with torch.cuda.device(dev):
            ws = self._workspace(_FORWARD)
            _call("dlrmx_cuda_embedding_bag_forward", self.address, out.data_ptr(),
                  argmax.data_ptr() if self.pooling == 2 else None, ws.data_ptr(), ws.numel(),
                  _stream(dev))
        return out, argmax

    def dense_grad(self, grad_out, argmax) -> list[torch.Tensor]:
        go, am = self.grad_out(grad_out), self.argmax(argmax)
        dev = self.device
        grads = [torch.zeros((r, d), dtype=torch.float32, device=dev)
                 for r, d in zip(self.rows, self.dims)]
        ptrs = _ptrs(grads)
        with torch.cuda.device(dev):
            ws = self._workspace(_DENSE_GRAD)
            _call("dlrmx_cuda_embedding_bag_dense_grad", self.address, go.data_ptr(),
                  None if am is None else am.data_ptr(), _addr(ptrs), ws.data_ptr(), ws.numel(),
                  _stream(dev))
        return grads

    def sparse_grad(self, grad_out, argmax):
        """Per table: the distinct rows touched (ascending) and their summed gradients."""
        go, am = self.grad_out(grad_out), self.argmax(argmax)
        dev = self.device
        with torch.cuda.device(dev):
            ws = self._workspace(_SPARSE_GRAD)
            nnz = array("q", self.rows)
            _call("dlrmx_cuda_embedding_bag_sparse_plan", self.address, _addr(nnz), ws.data_ptr(),
                  ws.numel(), _stream(dev))
            rows = [torch.empty(n, dtype=torch.int64, device=dev) for n in nnz]
            values = [torch.empty((n, d), dtype=torch.float32, device=dev)
                      for n, d in zip(nnz, self.dims)]
            row_ptrs, value_ptrs = _ptrs(rows), _ptrs(values)
            _call("dlrmx_cuda_embedding_bag_sparse_grad", self.address, go.data_ptr(),
                  None if am is None else am.data_ptr(), _addr(row_ptrs), _addr(value_ptrs),
                  ws.data_ptr(), ws.numel(), _stream(dev))
        return rows, values

    def update(self, grad_out, argmax, optimizer, lr, eps, state) -> None:
        code = native_ops.OPTIMIZERS.get(optimizer)
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
                _writable(s, "embedding_bag", "state", dtype, self.device, shape, t)
        state_ptrs = _ptrs(state)
        dev = self.device
        with torch.cuda.device(dev):
            ws = self._workspace(_UPDATE)
            _call("dlrmx_cuda_embedding_bag_update", self.address, go.data_ptr(),
                  None if am is None else am.data_ptr(), code, lr, eps, _addr(state_ptrs),
                  len(state), ws.data_ptr(), ws.numel(), _stream(dev))


# ---- the ops' CUDA implementations ---------------------------------------------------------------

def embedding_bag_forward_impl(weights, ids, offsets, per_sample_weights, padding_idx, pooling,
                               batch_size):
    _require()
    return Batch(weights, ids, offsets, per_sample_weights, padding_idx, pooling,
                 batch_size).forward()


def embedding_bag_dense_grad_impl(grad_out, weights, ids, offsets, per_sample_weights,
                                  padding_idx, pooling, batch_size, argmax):
    _require()
    return Batch(weights, ids, offsets, per_sample_weights, padding_idx, pooling,
                 batch_size).dense_grad(grad_out, argmax)


def embedding_bag_sparse_grad_impl(grad_out, weights, ids, offsets, per_sample_weights,
                                   padding_idx, pooling, batch_size, argmax):
    _require()
    return Batch(weights, ids, offsets, per_sample_weights, padding_idx, pooling,
                 batch_size).sparse_grad(grad_out, argmax)


def embedding_bag_update_impl(grad_out, weights, ids, offsets, per_sample_weights, padding_idx,
                              pooling, batch_size, argmax, optimizer, lr, eps, state) -> None:
    _require()
    Batch(weights, ids, offsets, per_sample_weights, padding_idx, pooling,
          batch_size).update(grad_out, argmax, optimizer, lr, eps, state)


def embedding_bags_impl(anchor, weights, ids, offsets, psw, padding_idx, pooling, batch_size,
                        *args):
    """dlrmx::embedding_bags below autograd (inference mode): the forward kernel."""
    return embedding_bag_forward_impl(weights, ids, offsets, psw, padding_idx, pooling,
                                      batch_size)[0]


def fused_update_impl(grad_out, weights, ids, offsets, psw, padding_idx, pooling, batch_size,
                      argmax, optimizer, hyper, skip_nonfinite, state, skipped) -> None:
    """dlrmx::embedding_bags_update on CUDA: ops._fused_update_cpu's rules."""
    if ops.skip_nonfinite(grad_out, optimizer, skip_nonfinite, skipped):
        return
    lr, eps = hyper.tolist()
    embedding_bag_update_impl(grad_out, weights, ids, offsets, psw, padding_idx, pooling,
                              batch_size, argmax, optimizer, lr, eps, state)


def _interaction_inputs(dense, emb):
    op = "dot_interaction"
    if not isinstance(dense, torch.Tensor) or dense.device.type != "cuda":
        raise TypeError(f"{op}: dense must be a CUDA tensor")
    _dense_cuda(dense, op, "dense", dense.device)
    _dense_cuda(emb, op, "emb", dense.device)
    return native_ops.interaction_sizes(dense, emb)


def dot_interaction_impl(dense, emb) -> torch.Tensor:
    _require()
    B, T, D, width = _interaction_inputs(dense, emb)
    dev = dense.device
    dense, emb = dense.resolve_neg().contiguous(), emb.resolve_neg().contiguous()
    out = torch.empty((B, width), dtype=dense.dtype, device=dev)
    with torch.cuda.device(dev):
        _call("dlrmx_cuda_dot_interaction_forward", _CODES[dense.dtype], dense.data_ptr(),
              emb.data_ptr(), B, T, D, out.data_ptr(), _stream(dev))
    return out


def dot_interaction_backward_impl(grad, dense, emb):
    _require()
    B, T, D, width = _interaction_inputs(dense, emb)
    dev = dense.device
    _dense_cuda(grad, "dot_interaction", "grad", dev)
    if grad.ndim != 2 or tuple(grad.shape) != (B, width):
        raise ValueError(f"dot_interaction_backward: grad has shape {list(grad.shape)}, expected "
                         f"[{B}, {width}]")
    dense, emb = dense.resolve_neg().contiguous(), emb.resolve_neg().contiguous()
    grad = _readable_float(grad, "dot_interaction", "grad", dense.dtype, dev)
    gd, ge = torch.empty_like(dense), torch.empty_like(emb)
    with torch.cuda.device(dev):
        _call("dlrmx_cuda_dot_interaction_backward", _CODES[dense.dtype], grad.data_ptr(),
              dense.data_ptr(), emb.data_ptr(), B, T, D, gd.data_ptr(), ge.data_ptr(),
              _stream(dev))
    return gd, ge


IMPLS = {
    "embedding_bag_forward": embedding_bag_forward_impl,
    "embedding_bag_dense_grad": embedding_bag_dense_grad_impl,
    "embedding_bag_sparse_grad": embedding_bag_sparse_grad_impl,
    "embedding_bag_update": embedding_bag_update_impl,
    "embedding_bags": embedding_bags_impl,
    "embedding_bags_update": fused_update_impl,
    "embedding_bags_psw_grad": ops.psw_grad,
    "dot_interaction": dot_interaction_impl,
    "dot_interaction_backward": dot_interaction_backward_impl,
    "lamb_step": steps.lamb_step,  # the dense optimizers in torch's multi-tensor ops
    "split_sgd_step": steps.split_sgd_step,
}

_IMPL_LIB = None
if torch.backends.cuda.is_built():  # a CPU-only torch registers nothing
    _IMPL_LIB = torch.library.Library("dlrmx", "IMPL")  # noqa: TOR901 (kept alive: owns the impls)
    for _op, _f in IMPLS.items():
        _IMPL_LIB.impl(_op, _f, "CUDA")


# ---- popularity counting (kernels/cuda/sketch.cu) ------------------------------------------------

def _ids_cuda(ids, device, arg="ids") -> torch.Tensor:
    """Ids as a contiguous int64 tensor on `device` (uint64 keys taken bit for bit)."""
    if not isinstance(ids, torch.Tensor):
        a = np.asarray(ids)
        if a.dtype == np.uint64:
            a = a.view(np.int64)
        ids = torch.from_numpy(np.ascontiguousarray(a))
    if getattr(torch, "uint64", None) is not None and ids.dtype == torch.uint64:
        ids = ids.view(torch.int64)
    if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"{arg} must be integers (int64 or uint64 keys), got {ids.dtype}")
    return ids.reshape(-1).to(device=device, dtype=torch.int64).contiguous()


def _sketch_table(table, log2_width) -> None:
    if not (isinstance(table, torch.Tensor) and table.device.type == "cuda"
            and table.dtype is torch.int64 and table.ndim == 2 and table.is_contiguous()):
        raise TypeError("count-min sketch: table must be a contiguous int64 CUDA tensor "
                        "[depth, 2**log2_width]")
    if table.shape[1] != 1 << int(log2_width):
        raise ValueError(f"count-min sketch: table has {table.shape[1]} columns, log2_width "
                         f"{log2_width} means {1 << int(log2_width)}")


def _seeds(seeds, depth) -> np.ndarray:
    s = np.ascontiguousarray(np.asarray(seeds, dtype=np.uint64).reshape(-1))
    if s.size != depth:
        raise ValueError(f"count-min sketch: {s.size} seeds for depth {depth}")
    return s


def cms_update(table: torch.Tensor, log2_width: int, seeds, ids, weights=None,
               conservative: bool = False) -> None:
    """Adds ids (weights[i] times, weights >= 0) into a count-min sketch table on the GPU: the
    layout and hashes of dlrmx.popularity.CountMinSketch (its .seeds, its .table), so the
    counters equal a CPU sketch's. Conservative updates run sequentially on the device."""
    _require()
    _sketch_table(table, log2_width)
    depth, dev = table.shape[0], table.device
    s = _seeds(seeds, depth)
    x = _ids_cuda(ids, dev)
    w = None if weights is None else _ids_cuda(weights, dev, "weights")
    if w is not None and w.shape != x.shape:
        raise ValueError(f"weights has {w.numel()} entries, ids {x.numel()}: one weight per id")
    with torch.cuda.device(dev):
        _call("dlrmx_cuda_cms_update", table.data_ptr(), int(log2_width), depth, s.ctypes.data,
              x.data_ptr(), None if w is None else w.data_ptr(), x.numel(), int(conservative),
              _stream(dev))


def cms_query(table: torch.Tensor, log2_width: int, seeds, ids) -> torch.Tensor:
    """Estimated counts (int64 CUDA tensor), never below the true ones."""
    _require()
    _sketch_table(table, log2_width)
    depth, dev = table.shape[0], table.device
    s = _seeds(seeds, depth)
    x = _ids_cuda(ids, dev)
    out = torch.empty(x.numel(), dtype=torch.int64, device=dev)
    with torch.cuda.device(dev):
        _call("dlrmx_cuda_cms_query", table.data_ptr(), int(log2_width), depth, s.ctypes.data,
              x.data_ptr(), x.numel(), out.data_ptr(), _stream(dev))
    return out


def exact_count(counts: torch.Tensor, ids) -> None:
    """counts[ids[i]] += 1 on the GPU; an id outside [0, len(counts)) is an IndexError naming its
    position, raised before any count changes."""
    _require()
    if not (isinstance(counts, torch.Tensor) and counts.device.type == "cuda"
            and counts.dtype is torch.int64 and counts.ndim == 1 and counts.is_contiguous()):
        raise TypeError("exact counter: counts must be a contiguous 1-D int64 CUDA tensor")
    dev = counts.device
    x = _ids_cuda(ids, dev)
    with torch.cuda.device(dev):
        _call("dlrmx_cuda_exact_count", counts.data_ptr(), counts.numel(), x.data_ptr(),
              x.numel(), _stream(dev))


# ---- the hot/cold cache (kernels/cuda/cache.cu) --------------------------------------------------

class HotMapCUDA:
    """A dlrmx.cache.kernels.HotMap with its slot maps on a GPU: remap/classify CUDA batches."""

    def __init__(self, hot_map, device: torch.device | str = "cuda") -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.num_tables = hot_map.num_tables
        self.maps = [None if m is None else torch.from_numpy(m).to(self.device)
                     for m in hot_map.maps]
        self._map_ptrs = array("q", [0 if m is None else m.data_ptr() for m in self.maps])
        self._lo = array("q", [int(v) for v in hot_map._lo])
        self._hi = array("q", [int(v) for v in hot_map._hi])
        self._rows = array("q", [int(v) for v in hot_map._sizes])

    def remap(self, values: torch.Tensor, offsets: torch.Tensor, batch: int, slots: bool = True):
        """A table-major CUDA batch -> (hot slots, int32, -1 where cold, or None; per-sample hot
        flags, a bool CUDA tensor; the number of cold lookups)."""
        _require()
        dev = self.device
        for arg, t in (("values", values), ("offsets", offsets)):
            _dense_cuda(t, "cache remap", arg, dev)
            if t.ndim != 1 or t.dtype not in _INDEX_DTYPES:
                raise TypeError(f"{arg} must be a 1-D int32 or int64 tensor")
        if offsets.numel() != self.num_tables * batch + 1:
            raise ValueError(f"offsets must have T*B+1 = {self.num_tables * batch + 1} entries "
                             f"for T={self.num_tables} tables and B={batch}, got {offsets.numel()}")
        values, offsets = values.contiguous(), offsets.to(torch.int64).contiguous()
        out = torch.empty(values.numel(), dtype=torch.int32, device=dev) if slots else None
        hot = torch.empty(batch, dtype=torch.uint8, device=dev)
        misses = ctypes.c_int64(0)
        with torch.cuda.device(dev):
            _call("dlrmx_cuda_cache_remap", self.num_tables, _addr(self._map_ptrs),
                  _addr(self._lo), _addr(self._hi), _addr(self._rows), values.data_ptr(),
                  _CODES[values.dtype], values.numel(), offsets.data_ptr(), batch,
                  None if out is None else out.data_ptr(), hot.data_ptr(), ctypes.byref(misses),
                  _stream(dev))
        return out, hot.bool(), int(misses.value)

    def classify(self, values, offsets, batch: int) -> torch.Tensor:
        return self.remap(values, offsets, batch, slots=False)[1]


def _rows_of(t: torch.Tensor, what: str) -> int:
    if not (isinstance(t, torch.Tensor) and t.device.type == "cuda" and t.is_contiguous()
            and t.dim() >= 1):
        raise ValueError(f"{what} must be a contiguous CUDA tensor of rows")
    return t.element_size() * (t[0].numel() if t.shape[0] else int(np.prod(t.shape[1:])))


def _copy_args(name, indexed, packed, idx):
    row_bytes = _rows_of(indexed, f"{name}: the indexed tensor")
    i = _ids_cuda(idx, indexed.device, "idx")
    if (_rows_of(packed, f"{name}: the packed tensor") != row_bytes or packed.dtype != indexed.dtype
            or packed.device != indexed.device or packed.shape[0] < i.numel()):
        raise ValueError(f"{name}: {tuple(packed.shape)} {packed.dtype} cannot hold {i.numel()} "
                         f"rows of {tuple(indexed.shape)} {indexed.dtype}")
    return i, row_bytes


def gather_rows(src: torch.Tensor, idx, out: torch.Tensor) -> torch.Tensor:
    """out[i] = src[idx[i]] on the GPU (any dtype; rows as bytes)."""
    _require()
    i, row_bytes = _copy_args("gather_rows", src, out, idx)
    with torch.cuda.device(src.device):
        _call("dlrmx_cuda_gather_rows", src.data_ptr(), src.shape[0], row_bytes, i.data_ptr(),
              i.numel(), out.data_ptr(), _stream(src.device))
    return out


def scatter_rows(src: torch.Tensor, idx, dst: torch.Tensor) -> torch.Tensor:
    """dst[idx[i]] = src[i] on the GPU (idx distinct)."""
    _require()
    i, row_bytes = _copy_args("scatter_rows", dst, src, idx)
    with torch.cuda.device(dst.device):
        _call("dlrmx_cuda_scatter_rows", src.data_ptr(), i.numel(), row_bytes, i.data_ptr(),
              dst.data_ptr(), dst.shape[0], _stream(dst.device))
    return dst


__all__ = ["available", "unavailable", "lib", "load_error", "library_path", "versions", "Batch", "IMPLS",
           "cms_update", "cms_query", "exact_count", "HotMapCUDA", "gather_rows", "scatter_rows"]
