"""Runs fuzz cases of the native ops (see test_fuzz_ops.py) and judges each one.

    python tests/_fuzz_worker.py CASES.json

CASES.json holds a list of case dicts. For each case the worker prints `start <i>` and then one
JSON line {"i", "ok", "detail"}, flushed, so that when a case crashes the interpreter the parent
knows which one it was. A case passes when the op returns the reference result (a valid case) or
raises a clean exception (a case with a `fault`): TypeError / ValueError / IndexError /
RuntimeError with a message. A valid case that raises, or a faulty one that returns, fails.
"""

from __future__ import annotations

import json
import sys
import traceback

import torch
import torch.nn.functional as F

import dlrmx.ops as ops
from dlrmx.nn.sparse_optim import combine_fp32, split_fp32

CLEAN_ERRORS = (TypeError, ValueError, IndexError, RuntimeError)
DTYPES = {"int16": torch.int16, "int32": torch.int32, "int64": torch.int64, "float32": torch.float32,
          "float64": torch.float64, "bfloat16": torch.bfloat16}


class Wrong(AssertionError):
    """The op returned, but not the reference result."""


class OpRaised(Exception):
    """An exception raised by the op under test (not by the harness around it)."""


def op(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001  (judged by the caller)
        raise OpRaised() from e


def close(got: torch.Tensor, want: torch.Tensor, what: str, rtol=1e-4, atol=1e-4) -> None:
    try:
        torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol, equal_nan=True)
    except AssertionError as e:
        raise Wrong(f"{what}: {str(e).splitlines()[0:3]}") from None


def view(t: torch.Tensor, how: str) -> torch.Tensor:
    """The same values in another layout (read-only inputs must accept any). "expanded" needs
    every entry along dim 0 equal to the first (see `as_input`)."""
    if how == "strided" and t.dim() > 0:  # every other entry of a buffer twice as long
        buf = torch.zeros((t.shape[0] * 2,) + tuple(t.shape[1:]), dtype=t.dtype)
        buf[::2] = t
        return buf[::2]
    if how == "transposed" and t.dim() == 2:
        return t.t().contiguous().t()
    if how == "expanded" and t.dim() > 0 and t.shape[0] > 0 and torch.equal(t, t[:1].expand(t.shape)):
        return t[:1].expand(t.shape)
    return t


def as_input(values: torch.Tensor, dtype: str, how: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(the values the op will see, in fp32 for the reference; the op's input in dtype and layout)."""
    if how == "expanded" and values.dim() > 0 and values.shape[0] > 0:
        values = values[:1].expand(values.shape).clone()
    x = values.to(DTYPES[dtype])
    return x.float(), view(x, how)


def special(w: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    pick = torch.rand(w.shape, generator=g)
    w = w.clone()
    w[pick < 0.1] = float("nan")
    w[(pick >= 0.1) & (pick < 0.2)] = float("-inf")
    w[(pick >= 0.2) & (pick < 0.25)] = float("inf")
    return w


# ---- embedding bags -----------------------------------------------------------------------------

def embedding_case(c: dict, g: torch.Generator):
    T, B = len(c["tables"]), c["B"]
    weights = []
    for rows, dim in c["tables"]:
        w = torch.randn(rows, dim, generator=g)
        weights.append(special(w, g) if c["special"] else w)
    lengths = torch.tensor(c["lengths"], dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    ids = torch.cat([torch.randint(0, rows, (int(offsets[(t + 1) * B] - offsets[t * B]),), generator=g)
                     for t, (rows, _) in enumerate(c["tables"])]) if T * B else torch.zeros(0, dtype=torch.long)
    if c["same_ids"]:
        ids.zero_()
    psw = torch.rand(ids.numel(), generator=g) if c["psw"] else None
    return weights, ids, offsets, psw


def embedding_reference(c, weights, ids, offsets, psw):
    """Per-table torch.nn.functional.embedding_bag in float64, and its weight gradients."""
    B, outs, leaves = c["B"], [], []
    for t, w in enumerate(weights):
        lo, hi = int(offsets[t * B]), int(offsets[(t + 1) * B])
        leaf = w.double().requires_grad_()
        local = offsets[t * B:(t + 1) * B + 1] - lo
        pad = c["padding"][t]
        outs.append(F.embedding_bag(ids[lo:hi], leaf, local, mode=["sum", "mean", "max"][c["pooling"]],
                                    per_sample_weights=None if psw is None else psw[lo:hi].double(),
                                    include_last_offset=True, padding_idx=None if pad < 0 else pad))
        leaves.append(leaf)
    return torch.cat(outs, 1), leaves


def run_embedding(c: dict, g: torch.Generator) -> None:
    weights, ids, offsets, psw = embedding_case(c, g)
    wdtype = DTYPES[c["weight_dtype"]]
    if wdtype == torch.bfloat16:  # the reference reads the same (rounded) values
        weights = [w.to(torch.bfloat16).float() for w in weights]
    optimizer = c.get("optimizer")
    split = optimizer == "split_sgd"
    state = []
    if c["op"] == "update":
        if split:
            pairs = [split_fp32(w) for w in weights]
            weights = [combine_fp32(u, s) for u, s in pairs]  # exact masters
            stored, state = [u for u, _ in pairs], [s for _, s in pairs]
        else:
            stored = [w.clone() for w in weights]
            if optimizer == "rowwise_adagrad":
                state = [torch.rand(w.shape[0], generator=g) for w in weights]
            elif optimizer == "adagrad":
                state = [torch.rand(w.shape, generator=g) for w in weights]
    else:
        stored = [w.to(wdtype) for w in weights]
    seen = [u.float() for u in stored]  # what the op reads: for split_sgd the bf16 upper halves
    ref_out, leaves = embedding_reference(c, seen, ids, offsets, psw)
    width = ref_out.shape[1]
    grad, grad_in = as_input(torch.randn(c["B"], width, generator=g), c["grad_dtype"], c["grad_view"])

    # The call's arguments, then the one fault of the case.
    a = dict(weights=stored, ids=view(ids.to(DTYPES[c["index_dtype"]]), c["ids_view"]),
             offsets=view(offsets.to(DTYPES[c["offsets_dtype"]]), c["offsets_view"]),
             psw=None if psw is None else view(psw, c["psw_view"]), padding=list(c["padding"]),
             pooling=c["pooling"], B=c["B"], grad=grad_in,
             optimizer=optimizer, lr=c["lr"], eps=c["eps"], state=[s for s in state])
    argmax = torch.empty(0, dtype=torch.long)
    if c["op"] != "forward" and c["pooling"] == 2:
        argmax = torch.ops.dlrmx.embedding_bag_forward(stored, ids, offsets, psw, a["padding"], 2, c["B"])[1]
    a["argmax"] = argmax
    apply_embedding_fault(c["fault"], a, g)
    before = [s.clone() for s in a["state"]]

    head = (a["ids"], a["offsets"], a["psw"], a["padding"], a["pooling"], a["B"])
    if c["op"] == "forward":
        if c["via_ops"]:  # the Python entry point the modules use
            mode = {0: "sum", 1: "mean", 2: "max"}.get(a["pooling"], "bad")
            out = op(ops.embedding_bags, a["weights"], a["ids"], a["offsets"], a["B"], pooling=mode,
                     per_sample_weights=a["psw"], padding_idx=a["padding"])
        else:
            out = op(torch.ops.dlrmx.embedding_bag_forward, a["weights"], *head)[0]
        close(out, ref_out, "forward", rtol=1e-4, atol=1e-4)
        return
    ref_out.backward(grad.double())
    ref_grads = [leaf.grad for leaf in leaves]
    if c["op"] == "dense_grad":
        got = op(torch.ops.dlrmx.embedding_bag_dense_grad, a["grad"], a["weights"], *head, a["argmax"])
        for t, (x, want) in enumerate(zip(got, ref_grads)):
            close(x, want, f"dense grad of table {t}")
    elif c["op"] == "sparse_grad":
        rows, values = op(torch.ops.dlrmx.embedding_bag_sparse_grad, a["grad"], a["weights"], *head, a["argmax"])
        for t, (r, v, want) in enumerate(zip(rows, values, ref_grads)):
            if r.numel() > 1 and not bool((r[1:] > r[:-1]).all()):
                raise Wrong(f"sparse grad rows of table {t} not sorted and unique: {r.tolist()}")
            dense = torch.zeros(want.shape, dtype=torch.float64).index_add_(0, r, v.double())
            close(dense, want, f"sparse grad of table {t}")
    else:
        op(torch.ops.dlrmx.embedding_bag_update, a["grad"], a["weights"], *head, a["argmax"],
           a["optimizer"], a["lr"], a["eps"], a["state"])
        check_update(c, weights, ref_grads, a, before)


def check_update(c, weights, ref_grads, a, state_before):
    lr, eps = c["lr"], c["eps"]
    for t, (w0, G) in enumerate(zip(weights, ref_grads)):
        w0 = w0.double()
        if c["optimizer"] in ("sgd", "split_sgd"):
            want = w0 - lr * G
        elif c["optimizer"] == "adagrad":
            s = state_before[t].double() + G * G
            want = w0 - lr * G / (s.sqrt() + eps)
            close(a["state"][t], s, f"adagrad state of table {t}")
        else:
            s = state_before[t].double() + (G * G).mean(1)
            want = w0 - lr * G / (s.sqrt() + eps)[:, None]
            close(a["state"][t], s, f"row-wise adagrad state of table {t}")
        got = combine_fp32(a["weights"][t], a["state"][t]) if c["optimizer"] == "split_sgd" else a["weights"][t]
        close(got, want, f"{c['optimizer']} update of table {t}")


def apply_embedding_fault(fault, a, g) -> None:
    if fault is None:
        return
    n = a["ids"].numel()
    if fault in ("id_high", "id_negative"):
        a["ids"] = a["ids"].clone()  # a writable copy, whatever the view
        a["ids"][n // 2 if fault == "id_high" else n - 1] = 10**6 if fault == "id_high" else -1
    elif fault == "offsets_start":
        a["offsets"] = a["offsets"] + 1
    elif fault in ("offsets_decrease", "offsets_end"):
        a["offsets"] = a["offsets"].clone()
        if fault == "offsets_decrease":
            a["offsets"][1] = a["offsets"][-1] + 1
        else:
            a["offsets"][-1] += 1
    elif fault == "batch_wrap":  # 16 tables * 2^60 bags wraps to 0: one offset, no ids "fit"
        a["weights"] = [a["weights"][0].clone() for _ in range(16)]
        a["padding"], a["B"] = [-1] * 16, 2**60
        a["ids"], a["offsets"], a["psw"] = a["ids"][:0], a["offsets"][:1], None
        if a["state"]:
            a["state"] = [a["state"][0].clone() for _ in range(16)]
    elif fault.startswith("batch="):
        a["B"] = int(fault.split("=")[1])
    elif fault == "ids_float":
        a["ids"] = a["ids"].float()
    elif fault == "ids_int16":
        a["ids"] = a["ids"].to(torch.int16)
    elif fault == "ids_2d":
        a["ids"] = a["ids"].reshape(1, -1)
    elif fault == "offsets_float":
        a["offsets"] = a["offsets"].double()
    elif fault == "weights_float64":
        a["weights"] = [w.double() for w in a["weights"]]
    elif fault == "weights_int":
        a["weights"] = [w.view(torch.int16) if w.dtype == torch.bfloat16 else w.view(torch.int32) for w in a["weights"]]
    elif fault == "weights_transposed":
        a["weights"][0] = a["weights"][0].t().contiguous().t()
    elif fault == "weights_expanded":
        a["weights"][0] = a["weights"][0][:1].expand(a["weights"][0].shape)
    elif fault == "weights_columns":
        w = a["weights"][0]
        a["weights"][0] = torch.cat([w, w], 1)[:, ::2]
    elif fault == "weights_1d":
        a["weights"][0] = a["weights"][0].reshape(-1)
    elif fault == "no_tables":
        a["weights"], a["padding"] = [], []
    elif fault == "mixed_dtypes":
        a["weights"].append(a["weights"][0].double() if a["weights"][0].dtype == torch.bfloat16
                            else a["weights"][0].to(torch.bfloat16))
        a["padding"].append(-1)
    elif fault == "pooling_bad":
        a["pooling"] = 3
    elif fault == "psw_wrong_len":
        a["psw"] = torch.ones(n + 1)
    elif fault == "psw_float64":
        a["psw"] = torch.ones(n, dtype=torch.float64)
    elif fault == "psw_with_mean":
        a["psw"], a["pooling"] = torch.ones(n), 1
    elif fault == "padding_bad":
        a["padding"][0] = a["weights"][0].shape[0] + 3
    elif fault == "padding_count":
        a["padding"].append(-1)
    elif fault == "grad_shape":
        a["grad"] = torch.ones(a["grad"].shape[0] + 1, a["grad"].shape[1])
    elif fault == "grad_int":
        a["grad"] = a["grad"].to(torch.int32)
    elif fault == "argmax_missing":
        a["argmax"] = torch.empty(0, dtype=torch.long)
    elif fault == "argmax_int32":
        a["argmax"] = a["argmax"].int()
    elif fault == "state_transposed":
        a["state"][0] = a["state"][0].t().contiguous().t() if a["state"][0].dim() == 2 else a["state"][0][:1].expand(a["state"][0].shape)
    elif fault == "state_expanded":
        a["state"][0] = a["state"][0][:1].expand(a["state"][0].shape)
    elif fault == "state_dtype":
        a["state"][0] = a["state"][0].double()
    elif fault == "state_shape":
        a["state"][0] = a["state"][0][:-1]
    elif fault == "state_alias":  # the state is the weight itself (or a view of its bytes)
        w = a["weights"][0]
        a["state"][0] = w.view(torch.int16) if w.dtype == torch.bfloat16 else (w if a["state"][0].dim() == 2 else w[:, 0])
    elif fault == "state_missing":
        a["state"] = a["state"][:-1]
    elif fault == "state_extra":
        a["state"] = [torch.zeros(1)]
    elif fault == "weights_alias":  # two tables on one buffer: rows would race between threads
        a["weights"].append(a["weights"][0])
        a["padding"].append(-1)
        if a["state"]:
            s = a["state"][0]
            a["state"].append(torch.zeros_like(s))
    elif fault in ("lr_nan", "lr_negative", "lr_inf", "eps_nan", "eps_negative"):
        name, value = fault.split("_")
        a[name] = {"nan": float("nan"), "negative": -0.5, "inf": float("inf")}[value]
    elif fault == "optimizer_unknown":
        a["optimizer"] = "adam"
    elif fault == "optimizer_mismatch":
        a["optimizer"] = "sgd" if a["optimizer"] == "split_sgd" else "split_sgd"
    else:
        raise KeyError(f"unknown fault {fault}")


# ---- dot interaction ----------------------------------------------------------------------------

def interaction_reference(dense: torch.Tensor, emb: torch.Tensor, T: int) -> torch.Tensor:
    """[dense | z_i . z_j for i > j], i major, with z = (dense, emb's T blocks)."""
    z = torch.cat([dense.unsqueeze(1), emb.reshape(dense.shape[0], T, dense.shape[1])], 1)
    zz = z @ z.transpose(1, 2)
    pairs = [zz[:, i, j] for i in range(T + 1) for j in range(i)]
    return torch.cat([dense] + [p.unsqueeze(1) for p in pairs], 1)


def run_interaction(c: dict, g: torch.Generator) -> None:
    B, D, T = c["B"], c["D"], c["T"]
    dtype = DTYPES[c["dtype"]]
    dense, d = as_input(torch.randn(B, D, generator=g), c["dtype"], c["dense_view"])
    emb, e = as_input(torch.randn(B, T * D, generator=g), c["dtype"], c["emb_view"])
    width = D + (T + 1) * T // 2
    grad, gr = as_input(torch.randn(B, width, generator=g), "float32", c["grad_view"])
    ref_in = [dense.double().requires_grad_(), emb.double().requires_grad_()]
    ref = interaction_reference(*ref_in, T)
    fault = c["fault"]
    if fault == "emb_width":
        e = torch.randn(B, T * D + 1).to(dtype)
    elif fault == "dtype_mixed":
        e = e.to(torch.bfloat16 if dtype == torch.float32 else torch.float32)
    elif fault == "dtype_float64":
        d, e = d.double(), e.double()
    elif fault == "dense_1d":
        d = d.reshape(-1)
    elif fault == "batch_mismatch":
        e = torch.randn(B + 1, T * D).to(dtype)
    elif fault == "grad_shape":
        gr = torch.randn(B, width + 1)
    elif fault == "grad_int":
        gr = gr.to(torch.int64)
    elif fault == "emb_huge":  # T = 2^40: the pair count overflows
        d, e = torch.zeros(1, 1, dtype=dtype), torch.zeros(1, 1, dtype=dtype).expand(1, 2**40)
    # bf16 rounds inputs and outputs; fp32 accumulates in a different order
    tol = dict(rtol=2e-2, atol=5e-2 * max(1, D) ** 0.5) if dtype == torch.bfloat16 else dict(rtol=1e-4, atol=1e-4)
    if c["op"] == "forward":
        close(op(torch.ops.dlrmx.dot_interaction, d, e), ref, "interaction forward", **tol)
        return
    gd, ge = op(torch.ops.dlrmx.dot_interaction_backward, gr, d, e)
    ref.backward(grad.to(dtype).double())
    for got, leaf, what in ((gd, ref_in[0], "dense"), (ge, ref_in[1], "emb")):
        want = torch.zeros_like(leaf) if leaf.grad is None else leaf.grad  # None: no use (T = 0)
        close(got, want, f"interaction grad of {what}", **tol)


# ---- dense optimizers ---------------------------------------------------------------------------

def lamb_reference(p, g, m, v, h, bias_correction, step):
    b1, b2 = h["beta1"], h["beta2"]
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    c1 = 1 / (1 - b1**step) if bias_correction else 1.0
    c2 = 1 / (1 - b2**step) if bias_correction else 1.0
    u = (m * c1) / ((v * c2).sqrt() + h["eps"]) + h["weight_decay"] * p
    wn, un = p.norm(), u.norm()
    if h["max_weight_norm"] > 0:
        wn = wn.clamp(max=h["max_weight_norm"])
    ratio = wn / un if wn > 0 and un > 0 else 1.0
    return p - h["lr"] * ratio * u, m, v


def apply_dense_fault(fault, a, state_keys) -> None:
    """Faults shared by lamb_step and split_sgd_step; the first tensor is 2-D, both sides > 1."""
    if fault is None:
        return
    k = state_keys[0]
    if fault == "param_transposed":
        a["params"][0] = a["params"][0].t().contiguous().t()
    elif fault == "param_dtype":
        a["params"][0] = a["params"][0].double()
    elif fault == "state_expanded":
        a[k][0] = a[k][0][:1].expand(a[k][0].shape)
    elif fault == "state_transposed":
        a[k][0] = a[k][0].t().contiguous().t()
    elif fault == "state_dtype":
        a[k][0] = a[k][0].to(torch.float64 if a[k][0].dtype == torch.float32 else torch.int32)
    elif fault == "state_shape":
        a[k][0] = a[k][0].reshape(-1)
    elif fault == "alias_state_param":
        a[k][0] = a["params"][0].view(a[k][0].dtype)
    elif fault == "alias_params":
        a["params"].append(a["params"][0])
        for key in ("grads", *state_keys):
            a[key].append(torch.zeros_like(a[key][0]))
    elif fault == "grad_int":
        a["grads"][0] = a["grads"][0].to(torch.int64)
    elif fault == "grad_shape":
        a["grads"][0] = a["grads"][0].reshape(-1)
    elif fault == "list_len":
        a["grads"] = a["grads"][:-1]
    elif fault.startswith("hyper:"):
        name, value = fault[6:].split("=")
        a["hyper"][name] = float(value)
    elif fault == "step_zero":
        a["step"] = 0
    else:
        raise KeyError(f"unknown fault {fault}")


def run_lamb(c: dict, g: torch.Generator) -> None:
    ps = [torch.randn(s, generator=g) for s in c["shapes"]]
    gs, g_in = zip(*[as_input(torch.randn(s, generator=g), c["grad_dtype"], c["grad_view"]) for s in c["shapes"]])
    ms = [torch.randn(s, generator=g) * 0.1 for s in c["shapes"]]
    vs = [torch.rand(s, generator=g) * 0.1 for s in c["shapes"]]
    ref = [lamb_reference(p.double(), gr.double(), m.double(), v.double(), c["hyper"], c["bias_correction"], c["step"])
           for p, gr, m, v in zip(ps, gs, ms, vs)]
    a = dict(params=[p.clone() for p in ps], grads=list(g_in),
             exp_avg=[m.clone() for m in ms], exp_avg_sq=[v.clone() for v in vs], hyper=dict(c["hyper"]), step=c["step"])
    apply_dense_fault(c["fault"], a, ["exp_avg", "exp_avg_sq"])
    h = a["hyper"]
    op(torch.ops.dlrmx.lamb_step, a["params"], a["grads"], a["exp_avg"], a["exp_avg_sq"], h["lr"],
       h["beta1"], h["beta2"], h["eps"], h["weight_decay"], h["max_weight_norm"], c["bias_correction"],
       a["step"])
    for i, (p, m, v) in enumerate(ref):
        close(a["exp_avg"][i], m, f"exp_avg[{i}]")
        close(a["exp_avg_sq"][i], v, f"exp_avg_sq[{i}]")
        close(a["params"][i], p, f"params[{i}]", rtol=1e-3, atol=1e-4)


def run_split_sgd(c: dict, g: torch.Generator) -> None:
    masters = [torch.randn(s, generator=g) for s in c["shapes"]]
    gs, g_in = zip(*[as_input(torch.randn(s, generator=g), c["grad_dtype"], c["grad_view"]) for s in c["shapes"]])
    lr, wd = c["hyper"]["lr"], c["hyper"]["weight_decay"]
    pairs = [split_fp32(x) for x in masters]
    a = dict(params=[u for u, _ in pairs], trails=[t for _, t in pairs],
             grads=list(g_in), hyper=dict(c["hyper"]), step=1)
    apply_dense_fault(c["fault"], a, ["trails"])
    op(torch.ops.dlrmx.split_sgd_step, a["params"], a["trails"], a["grads"], a["hyper"]["lr"],
       a["hyper"]["weight_decay"])
    for i, (x, gr) in enumerate(zip(masters, gs)):
        want = x.double() - lr * (gr.double() + wd * x.double())
        close(combine_fp32(a["params"][i], a["trails"][i]), want, f"params[{i}]")


RUNNERS = {"embedding": run_embedding, "interaction": run_interaction, "lamb": run_lamb,
           "split_sgd": run_split_sgd}


def judge(c: dict) -> tuple[bool, str]:
    if c["isa"] not in ops.isa_info()["supported"]:
        c["isa"] = "scalar"
    ops.set_isa(c["isa"])
    torch.set_num_threads(c["threads"])
    g = torch.Generator().manual_seed(c["seed"])
    try:
        RUNNERS[c["kind"]](c, g)
    except Wrong as e:
        return False, f"wrong result: {e}"
    except OpRaised as wrapped:
        e = wrapped.__cause__
        message = str(e).strip()
        if not isinstance(e, CLEAN_ERRORS) or type(e) is NotImplementedError or not message:
            return False, f"unclean exception {type(e).__name__}: {message!r}"
        if c["fault"] is None:
            return False, f"a valid case was rejected: {type(e).__name__}: {message.splitlines()[0]}"
        return True, f"{type(e).__name__}: {message.splitlines()[0]}"
    except Exception as e:  # noqa: BLE001  (a bug of the harness or of an unguarded fault)
        return False, f"harness error {type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"
    if c["fault"] is not None:
        return False, f"fault {c['fault']!r} was accepted silently"
    return True, "ok"


def main(path: str) -> None:
    with open(path) as f:
        cases = json.load(f)
    for i, c in enumerate(cases):
        print(f"start {i}", flush=True)
        ok, detail = judge(c)
        print(json.dumps({"i": i, "ok": ok, "detail": detail}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
