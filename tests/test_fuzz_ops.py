"""Fuzzing the native ops: random shapes, layouts (expanded, transposed, strided views), dtypes
(wrong ones too), bad offsets and ids, huge batch sizes, per-sample weights, padding, modes,
optimizer states and hyper-parameters. Every case must give the reference result or raise a clean
Python exception; never crash, never a silent wrong answer.

Hypothesis draws the cases here (derandomized: CI runs the same ones every time); worker
subprocesses (tests/_fuzz_worker.py) run and judge them in batches, so a segfault or abort is a
failed case, not a lost test run. When a worker dies, the case it was running is re-run alone to
confirm, and the rest of its batch goes on in a fresh worker.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

WORKER = Path(__file__).with_name("_fuzz_worker.py")
WORKERS = 2  # CI has 2 cores
ISAS = ["scalar", "avx2", "avx512"]
OPTIMIZERS = ["sgd", "split_sgd", "rowwise_adagrad", "adagrad"]
VIEWS = ["contiguous", "strided", "transposed", "expanded"]
BIG = [2**31, 2**60, 2**62]


def common(draw) -> dict:
    return dict(seed=draw(st.integers(0, 2**16)), isa=draw(st.sampled_from(ISAS)),
                threads=draw(st.sampled_from([1, 2])))


def pick_fault(draw, faults: list[str]):
    """None for about half the cases (they must give the right answer), else one fault."""
    return draw(st.sampled_from(faults)) if draw(st.booleans()) else None


@st.composite
def embedding_cases(draw) -> dict:
    T = draw(st.integers(1, 3))
    tables = [[draw(st.integers(1, 40)), draw(st.sampled_from([1, 3, 16, 17, 32, 64]))] for _ in range(T)]
    B = draw(st.integers(0, 5))
    lengths = draw(st.lists(st.integers(0, 4), min_size=T * B, max_size=T * B))
    op = draw(st.sampled_from(["forward", "dense_grad", "sparse_grad", "update"]))
    optimizer = draw(st.sampled_from(OPTIMIZERS)) if op == "update" else None
    pooling = draw(st.sampled_from([0, 1, 2]))
    psw = pooling == 0 and draw(st.booleans())
    if op == "update":
        weight_dtype = "bfloat16" if optimizer == "split_sgd" else "float32"
    else:
        weight_dtype = draw(st.sampled_from(["float32", "bfloat16"]))
    ids_view = draw(st.sampled_from(["contiguous", "strided", "expanded"]))
    (rows0, dim0), n = tables[0], sum(lengths)

    faults = [f"batch={b}" for b in BIG] + ["batch_wrap", f"batch={B + 1}", "batch=-1", "ids_float", "ids_int16",
                                            "ids_2d", "offsets_float", "weights_float64", "weights_int",
                                            "weights_1d", "no_tables", "mixed_dtypes", "pooling_bad",
                                            "psw_wrong_len", "psw_float64", "psw_with_mean",
                                            "padding_bad", "padding_count"]
    if rows0 > 1:
        faults.append("weights_expanded")
        if dim0 > 1:
            faults += ["weights_transposed", "weights_columns"]
    if n > 0:
        faults += ["id_high", "id_negative"]
    if T * B > 0:
        faults += ["offsets_start", "offsets_decrease", "offsets_end"]
    if op != "forward":
        faults += ["grad_shape", "grad_int"]
        if pooling == 2:
            faults += ["argmax_missing", "argmax_int32"]
    if op == "update":
        faults += ["lr_nan", "lr_negative", "lr_inf", "eps_nan", "eps_negative", "optimizer_unknown",
                   "optimizer_mismatch", "weights_alias"]
        if optimizer == "sgd":
            faults.append("state_extra")
        else:
            faults += ["state_dtype", "state_shape", "state_alias", "state_missing"]
            if rows0 > 1:
                faults.append("state_expanded")
                if dim0 > 1 or optimizer == "rowwise_adagrad":
                    faults.append("state_transposed")
    return dict(
        kind="embedding", **common(draw), tables=tables, B=B, lengths=lengths, op=op,
        optimizer=optimizer, pooling=pooling, psw=psw, weight_dtype=weight_dtype,
        padding=[draw(st.sampled_from([-1, -1, 0, rows - 1])) for rows, _ in tables],
        special=draw(st.integers(0, 3)) == 0, same_ids=ids_view == "expanded", ids_view=ids_view,
        index_dtype=draw(st.sampled_from(["int32", "int64"])),
        offsets_dtype=draw(st.sampled_from(["int32", "int64"])),
        offsets_view=draw(st.sampled_from(["contiguous", "strided"])),
        psw_view=draw(st.sampled_from(["contiguous", "strided"])),
        grad_view=draw(st.sampled_from(VIEWS)),
        grad_dtype=draw(st.sampled_from(["float32", "float32", "float64", "bfloat16"])),
        lr=draw(st.sampled_from([0.0, 0.01, 0.5])), eps=draw(st.sampled_from([1e-8, 0.1])),
        via_ops=op == "forward" and draw(st.booleans()), fault=pick_fault(draw, faults),
    )


@st.composite
def interaction_cases(draw) -> dict:
    D = draw(st.sampled_from([1, 2, 4, 16, 17]))
    op = draw(st.sampled_from(["forward", "backward"]))
    faults = ["dtype_mixed", "dtype_float64", "dense_1d", "batch_mismatch", "emb_huge"]
    faults += ["emb_width"] if D > 1 else []
    faults += ["grad_shape", "grad_int"] if op == "backward" else []
    return dict(kind="interaction", **common(draw), B=draw(st.integers(0, 4)), D=D,
                T=draw(st.integers(0, 4)), dtype=draw(st.sampled_from(["float32", "bfloat16"])), op=op,
                dense_view=draw(st.sampled_from(VIEWS)), emb_view=draw(st.sampled_from(VIEWS)),
                grad_view=draw(st.sampled_from(VIEWS)), fault=pick_fault(draw, faults))


DENSE_FAULTS = ["param_transposed", "param_dtype", "state_expanded", "state_transposed", "state_dtype",
                "state_shape", "alias_state_param", "alias_params", "grad_int", "grad_shape", "list_len"]


def shapes(draw) -> list:
    """The first tensor is 2-D with both sides > 1, so every layout fault applies to it."""
    first = [draw(st.integers(2, 6)), draw(st.integers(2, 6))]
    rest = draw(st.lists(st.lists(st.integers(0, 5), max_size=2), max_size=2))
    return [first] + rest


@st.composite
def lamb_cases(draw) -> dict:
    hyper_faults = ["lr=nan", "lr=-1", "lr=1e300", "beta1=1.0", "beta1=nan", "beta2=-0.5", "beta2=1.0",
                    "eps=nan", "eps=-1", "weight_decay=nan", "weight_decay=inf", "max_weight_norm=nan",
                    "max_weight_norm=-1"]
    hyper = dict(lr=draw(st.sampled_from([0.0, 1e-3, 0.1])), beta1=draw(st.sampled_from([0.0, 0.9])),
                 beta2=draw(st.sampled_from([0.5, 0.999])), eps=draw(st.sampled_from([1e-6, 1e-3])),
                 weight_decay=draw(st.sampled_from([0.0, 0.01])),
                 max_weight_norm=draw(st.sampled_from([0.0, 0.5, 10.0])))
    return dict(kind="lamb", **common(draw), shapes=shapes(draw), hyper=hyper,
                bias_correction=draw(st.booleans()), step=draw(st.integers(1, 3)),
                grad_view=draw(st.sampled_from(VIEWS)),
                grad_dtype=draw(st.sampled_from(["float32", "float64", "bfloat16"])),
                fault=pick_fault(draw, DENSE_FAULTS + ["step_zero"] + [f"hyper:{h}" for h in hyper_faults]))


@st.composite
def split_sgd_cases(draw) -> dict:
    hyper_faults = ["lr=nan", "lr=-1", "weight_decay=nan", "weight_decay=-1"]
    return dict(kind="split_sgd", **common(draw), shapes=shapes(draw),
                hyper=dict(lr=draw(st.sampled_from([0.0, 0.01, 0.5])),
                           weight_decay=draw(st.sampled_from([0.0, 0.1]))),
                grad_view=draw(st.sampled_from(VIEWS)),
                grad_dtype=draw(st.sampled_from(["float32", "float64", "bfloat16"])),
                fault=pick_fault(draw, DENSE_FAULTS + [f"hyper:{h}" for h in hyper_faults]))


def draw_cases(strategy, n: int) -> list[dict]:
    """n cases from `strategy`, the same ones on every run."""
    found = []

    @settings(max_examples=n, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def gather(case):
        found.append(case)

    gather()
    return found


def start_worker(cases: list[dict], path: Path) -> subprocess.Popen:
    path.write_text(json.dumps(cases))
    env = dict(os.environ, OMP_NUM_THREADS="2")
    return subprocess.Popen([sys.executable, str(WORKER), str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def collect(proc: subprocess.Popen, timeout: float = 600) -> tuple[dict[int, dict], int, str]:
    out, err = proc.communicate(timeout=timeout)
    results = {}
    for line in out.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            results[r["i"]] = r
    return results, proc.returncode, err


def run_batches(batches: list[list[dict]], tmp: Path) -> list[str]:
    """Runs every batch (in parallel workers) to the end; returns the failures, one line each."""
    failures, queue, k = [], [b for b in batches if b], 0
    while queue:
        running = []
        for batch in queue[:WORKERS]:
            k += 1
            running.append((batch, start_worker(batch, tmp / f"cases{k}.json")))
        queue = queue[WORKERS:]
        for batch, proc in running:
            results, rc, err = collect(proc)
            for i, case in enumerate(batch):
                if i in results and not results[i]["ok"]:
                    failures.append(f"{results[i]['detail']}\n    case: {json.dumps(case)}")
            if len(results) < len(batch):  # the worker died in case len(results)
                crashed = len(results)
                alone, rc_alone, err_alone = collect(start_worker([batch[crashed]], tmp / f"alone{k}.json"))
                again = "crashes alone too" if rc_alone != 0 else "passes alone (state left by earlier cases?)"
                failures.append(f"CRASH (exit {rc}) in case {crashed} of its batch; it {again}\n"
                                f"    case: {json.dumps(batch[crashed])}\n    stderr: {(err_alone or err)[-1500:]}")
                queue.append(batch[crashed + 1:])
    return failures


def test_native_ops_never_crash_nor_answer_wrong(tmp_path):
    cases = (draw_cases(embedding_cases(), 220) + draw_cases(interaction_cases(), 60)
             + draw_cases(lamb_cases(), 50) + draw_cases(split_sgd_cases(), 40))
    faulty = sum(c["fault"] is not None for c in cases)
    assert 0.3 < faulty / len(cases) < 0.7, "the strategies should mix valid and faulty cases"
    batches = [cases[w::WORKERS] for w in range(WORKERS)]
    failures = run_batches(batches, tmp_path)
    assert not failures, f"{len(failures)} of {len(cases)} fuzz cases failed:\n" + "\n".join(failures[:20])
