"""Training on several processes for real: torchrun over loopback with gloo, 2 and 3 ranks,
against a single process on the same global batches."""

import json
import os
import re
import signal
import shutil
import socket
import subprocess
import sys
import time

import pytest
import torch

from dlrmx.distributed.checkpoint import attach
from dlrmx.distributed.data import slice_batch
from dlrmx.distributed.launch import split_bounds
from dlrmx.distributed.plan import place, report
from dlrmx.nn.sparse_optim import combine_fp32
from dlrmx.train import checkpoint as ckpt

ARGS = ["--arch-sparse-feature-size=8", "--arch-mlp-bot=13-16-8", "--arch-mlp-top=16-1",
        "--mini-batch-size=250", "--synthetic-scale=0.0005", "--eval-samples=3001",
        "--test-freq=5", "--precision=fp32", "--gemm-library=mkl",
        "--no-progress", "--no-plots", "--threads=1", "--print-freq=3",
        "--sparse-dense-boundary=100", "--dist-timeout=60"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(run_dir, nproc: int, *extra: str, timeout: int = 240) -> subprocess.CompletedProcess:
    py = [sys.executable, "-m"]
    launch = [] if nproc == 1 else ["torch.distributed.run", f"--nproc-per-node={nproc}",
                                    f"--master-port={_port()}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    given = {e.split("=")[0] for e in extra}  # extra flags replace ARGS' defaults
    args = [a for a in (*ARGS, "--num-batches=9") if a.split("=")[0] not in given]
    cmd = py + launch + (["-m"] if launch else []) + ["dlrmx.train", *args, f"--run-dir={run_dir}",
                                                      *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _load(path):
    """A checkpoint with a sharded run's pieces assembled into whole tables."""
    state = ckpt.load(path)
    attach(state, path, whole=True)
    return state


def _fp32(state):
    """A checkpoint's model with split-SGD tables as their exact fp32 weights."""
    out = {}
    for k, v in state["model"].items():
        if v.dtype == torch.int16:  # a trail: combined with its bf16 upper halves
            t = k.rsplit("_", 1)[1]
            out[f"embeddings.weights.{t}"] = combine_fp32(state["model"][f"embeddings.weights.{t}"], v)
        elif k not in out:
            out[k] = v.float()
    return out


def _close(a, b, atol):
    a, b = _fp32(a), _fp32(b)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=atol), (k, float((a[k] - b[k]).abs().max()))


def test_split_and_placement():
    assert split_bounds(10, 3) == [0, 4, 7, 10] and split_bounds(2, 3) == [0, 1, 2, 2]
    p = place([5, 5000, 3000, 10000, 50], 2, 100, 8, "sgd")
    assert p.replicated == [0, 4]
    owner = {q.table: q.rank for q in p.pieces}
    assert owner[3] != owner[1] and owner[1] == owner[2]  # size-balanced, whole tables
    # more ranks than large tables: columns split so every rank works (not for row-wise Adagrad)
    cols = place([5, 5000], 3, 100, 8, "sgd").pieces
    assert [(q.col_lo, q.col_hi) for q in cols] == [(0, 3), (3, 6), (6, 8)]
    assert len({q.rank for q in cols}) == 3
    assert len(place([5, 5000], 3, 100, 8, "rowwise_adagrad").pieces) == 1
    # a table over the per-rank limit: row ranges on as many ranks as it needs
    rows = place([10000, 200], 3, 100, 8, "sgd", max_bytes_per_rank=150_000).pieces
    assert [(q.row_lo, q.row_hi) for q in rows if q.table == 0] == [(0, 3334), (3334, 6667), (6667, 10000)]
    with pytest.raises(ValueError, match="needs 4 ranks of --max-table-bytes-per-rank"):
        place([10000], 3, 100, 8, "sgd", max_bytes_per_rank=100_000)
    # what the busiest rank sends per step: a global batch of 250 over 2 ranks, a table each
    sent = report(place([5000, 5000, 50], 2, 100, 8, "sgd"), [5000, 5000, 50], 8, "sgd", 250,
                  1000)["bytes_per_step"]
    assert sent == {"all_to_all_ids": 125 * 16,  # its samples' ids of the other rank's table
                    "all_to_all_pooled": 4 * (125 * 8 + 125 * 8),  # rows out, gradients out
                    "all_reduce_replicated": 50 * 8 * 8,  # fp64, ring: 2 (w - 1) / w = 1
                    "all_reduce_dense": 1000 * 4}


def test_slice_batch_keeps_the_bags():
    from dlrmx.data.loader import RandomSource

    b = RandomSource([7, 9, 11], 1, 0, num_indices_per_lookup=4, fixed=False).get("train", 0, 10)
    lo, hi = 3, 7
    part = slice_batch(b, lo, hi)
    for t in range(3):
        for i in range(hi - lo):
            want = b.values[b.offsets[t * 10 + lo + i]:b.offsets[t * 10 + lo + i + 1]]
            got = part.values[part.offsets[t * 4 + i]:part.offsets[t * 4 + i + 1]]
            assert torch.equal(want, got)
    assert torch.equal(part.dense, b.dense[lo:hi])


RANDOM = ("--data-generation=random", "--arch-embedding-size=3000-40-500-20",
          "--num-indices-per-lookup=4")  # bags of 1-4 ids: a bag's ids span row pieces


@pytest.mark.parametrize("nproc,optimizer,data,layout", [
    (2, "sgd", (), ()), (3, "split_sgd", (), ()), (2, "rowwise_adagrad", (), ()),
    (3, "sgd", (), ("--sparse-dense-boundary=5000",)),  # 1 large table, 3 ranks: column-wise
    (3, "split_sgd", RANDOM, ("--max-table-bytes-per-rank=50K",)),  # the 3000-row table row-wise
    (2, "rowwise_adagrad", RANDOM, ("--max-table-bytes-per-rank=80K",)),
])
def test_ranks_train_as_one_process(tmp_path, nproc, optimizer, data, layout):
    """A global batch of 250 (not divisible by 3) split over the ranks: after 9 steps with an
    evaluation in between, the weights equal the single process's to float rounding (the MLP
    gradients are summed in another order, and row pieces add partial sums), and the evaluation
    is the same."""
    one = _train(tmp_path / "one", 1, f"--optimizer={optimizer}", *data)
    many = _train(tmp_path / "many", nproc, f"--optimizer={optimizer}", *data, *layout)
    pieces = json.loads((tmp_path / "many" / "placement.json").read_text())["pieces"]
    if "--sparse-dense-boundary=5000" in layout:
        assert [p["columns"] for p in pieces] == [[0, 3], [3, 6], [6, 8]]
    if data:
        assert [p["rows"] for p in pieces if p["table"] == 0] == [[0, 1500], [1500, 3000]]
    a, b = _load(tmp_path / "one" / "checkpoint.pt"), _load(tmp_path / "many" / "checkpoint.pt")
    _close(a, b, atol=1e-5)
    line = [ln for ln in one.stdout.splitlines() if ln.startswith("final AUC")]
    assert line and line[0][:16] in many.stdout  # AUC to 4 digits
    assert many.stdout.count("final AUC") == 1  # rank 0 speaks for the run
    comm = json.loads((tmp_path / "many" / "summary.json").read_text())["communication"]
    assert comm["bytes"] > 0 and 0 < comm["share"] < 1  # the step's time in collectives
    assert (tmp_path / "many" / "placement.json").is_file()


def test_checkpoint_of_three_ranks_loads_in_one_and_two(tmp_path):
    """Rank 0 writes the single-process state_dict (the owners send their tables), so a model
    trained on 3 ranks evaluates the same on 1 or 2."""
    three = _train(tmp_path / "three", 3, "--num-batches=4", "--checkpoint-freq=2")
    # each rank wrote its pieces; the checkpoint at step 2 is gone with its shards
    shards = list((tmp_path / "three").glob("checkpoint.shards-*"))
    assert [d.name for d in shards] == ["checkpoint.shards-000000004"], shards
    assert sorted(f.name for f in shards[0].iterdir()) == ["rank0.pt", "rank1.pt", "rank2.pt"]
    raw = ckpt.load(tmp_path / "three" / "checkpoint.pt")
    pieces = raw["shards"]["pieces"]
    assert pieces and all(f"embeddings.weights.{p['table']}" not in raw["model"] for p in pieces)
    auc = [ln for ln in three.stdout.splitlines() if ln.startswith("final AUC")][0][:16]
    model = f"--load-model={tmp_path / 'three' / 'checkpoint.pt'}"
    for n in (1, 2):
        res = _train(tmp_path / f"eval{n}", n, model, "--inference-only")
        assert auc in res.stdout, (n, res.stdout[-500:])


def test_spark_torch_distributor_trains_like_one_process(tmp_path):
    """Spark's TorchDistributor (local mode) launches 2 ranks; the result equals a single
    process's on the same global batches."""
    pytest.importorskip("pyspark")
    from dlrmx.train import run
    from dlrmx.train.spark import train_on_spark

    cfg = dict(arch_sparse_feature_size=8, arch_mlp_bot="13-16-8", arch_mlp_top="16-1",
               mini_batch_size=250, synthetic_scale=0.0005, eval_samples=3001, num_batches=6,
               test_freq=-1, precision="fp32", gemm_library="mkl", progress=False, plots=False,
               threads=1, sparse_dense_boundary=100)
    spark = train_on_spark({**cfg, "run_dir": str(tmp_path / "spark")}, num_processes=2)
    one = run({**cfg, "run_dir": str(tmp_path / "one")})
    assert spark["steps"] == one.steps == 6
    assert abs(spark["final"]["test"]["auc"] - one.final["test"]["auc"]) < 1e-4
    _close(_load(tmp_path / "spark" / "checkpoint.pt"),
           _load(tmp_path / "one" / "checkpoint.pt"), 1e-5)


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="OpenMPI's mpirun absent")
def test_mpirun_launches_the_same_run(tmp_path):
    """mpirun sets OpenMPI's rank variables, not torch's: the ranks still join (gloo over TCP
    on MASTER_ADDR:MASTER_PORT) and train as torchrun's do."""
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", "-x",
           f"MASTER_PORT={_port()}", "-x", "OMP_NUM_THREADS=1", sys.executable, "-m",
           "dlrmx.train", *ARGS, "--num-batches=9", f"--run-dir={tmp_path / 'mpi'}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    _train(tmp_path / "torchrun", 2)
    _close(_load(tmp_path / "mpi" / "checkpoint.pt"),
           _load(tmp_path / "torchrun" / "checkpoint.pt"), 1e-5)
    assert res.stdout.count("final AUC") == 1


def _env_launch(tmp_path, world: int, port: int) -> list[subprocess.Popen]:
    """Ranks started by hand with torch's env:// variables (what any launcher sets)."""
    procs = []
    for r in range(world):
        env = {**os.environ, "RANK": str(r), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dlrmx.train",
             *[a for a in ARGS if a.split("=")[0] not in ("--print-freq", "--test-freq",
                                                           "--dist-timeout")],
             "--num-batches=100000", "--print-freq=1",
             "--test-freq=0", "--dist-timeout=5", f"--run-dir={tmp_path / 'run'}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_a_failed_rank_stops_the_others_within_the_timeout(tmp_path, fault):
    procs = _env_launch(tmp_path, 2, _port())
    try:
        for line in procs[0].stdout:  # rank 0's progress lines: training is under way
            if line.startswith("step 15/"):
                break
        if fault == "killed":
            procs[1].kill()
        else:
            os.kill(procs[1].pid, signal.SIGSTOP)
        t0 = time.monotonic()
        _, err = procs[0].communicate(timeout=60)
        waited = time.monotonic() - t0
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert procs[0].returncode == 2 and waited < 30, (procs[0].returncode, waited)
    assert re.search(r"error: rank 0 of 2 stopped at step \d+: a collective with the other ranks "
                     r"failed within --dist-timeout 5 s", err), err[-2000:]
    # the laggard is named when its last noted step is behind (it can die within the same step)
    assert "behind it: rank 1 (last at step" in err or "one of them died, hung or left" in err


def test_killed_job_resumes_exactly_on_the_same_world_size(tmp_path):
    """Both ranks killed while training (checkpoints every 10 steps, written atomically): a
    torchrun --resume ends with the same weights, bit for bit, as an uninterrupted run."""
    extra = ("--num-batches=200", "--checkpoint-freq=10")
    _train(tmp_path / "full", 2, *extra)
    port = _port()
    procs = []
    for r in range(2):
        env = {**os.environ, "RANK": str(r), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "dlrmx.train", *ARGS, *extra,
                                       f"--run-dir={tmp_path / 'part'}"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    path = tmp_path / "part" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not path.exists() and time.monotonic() < deadline and procs[0].poll() is None:
        time.sleep(0.05)
    for p in procs:
        p.kill()
        p.wait()
    step = _load(path)["step"]
    assert 10 <= step < 200, step  # killed mid-run
    res = _train(tmp_path / "part", 2, "--resume")
    assert "completed: 200 steps" in res.stdout
    a, b = _load(tmp_path / "full" / "checkpoint.pt"), _load(path)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_torchrun_restarts_resume_from_the_last_checkpoint(tmp_path):
    """torchrun --max-restarts: a worker killed mid-run, torchrun starts the job again and the
    ranks continue from the last checkpoint, to the same weights as an uninterrupted run."""
    extra = ["--num-batches=200", "--checkpoint-freq=10"]
    _train(tmp_path / "full", 2, *extra)
    given = {e.split("=")[0] for e in extra}
    # the restarted round reads its peers' addresses under its own attempt's keys (launch.init):
    # the dead round's stale ones made it fail to connect now and then
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--max-restarts=1",
           f"--master-port={_port()}", "-m", "dlrmx.train",
           *[a for a in ARGS if a.split("=")[0] not in given], *extra,
           f"--run-dir={tmp_path / 'part'}"]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    path = tmp_path / "part" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not path.exists() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.05)
    workers = subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True)
    os.kill(int(workers.stdout.split()[-1]), signal.SIGKILL)
    out, err = job.communicate(timeout=240)
    assert job.returncode == 0, err[-3000:]
    assert "resuming from" in err and "completed: 200 steps" in out
    a, b = _load(tmp_path / "full" / "checkpoint.pt"), _load(path)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


KAGGLE_HEAD = (__import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data"
               / "criteo" / "kaggle_head1000_trailing_fields_stripped.tsv")


@pytest.mark.skipif(not KAGGLE_HEAD.is_file(), reason="../shared/data Criteo sample absent")
def test_real_criteo_rows_each_rank_reading_its_slice(tmp_path):
    """The preprocessed real sample: a part read from the files equals that slice of the whole
    batch, and 2 ranks (each reading only its rows) train as one process."""
    from dlrmx.data.loader import FileSource
    from dlrmx.preprocess import preset
    from dlrmx.preprocess import run as preprocess

    out = tmp_path / "criteo"
    preprocess(preset("criteo-kaggle"), [str(KAGGLE_HEAD)], out, engine="polars")
    src = FileSource(out, seed=3)
    for split, index in (("train", 2), ("val", 0)):
        whole = src.get(split, index, 64, 1)
        part = src.get(split, index, 64, 1, (13, 40))
        want = slice_batch(whole, 13, min(40, whole.size))
        for f in ("dense", "values", "offsets", "label"):
            assert torch.equal(getattr(part, f), getattr(want, f)), (split, f)
    data = ("--data-generation=dataset", f"--processed-data-file={out}", "--mini-batch-size=63",
            "--num-batches=0", "--nepochs=2")
    _train(tmp_path / "one", 1, *data)
    _train(tmp_path / "two", 2, *data)
    _close(_load(tmp_path / "one" / "checkpoint.pt"),
           _load(tmp_path / "two" / "checkpoint.pt"), 1e-5)
