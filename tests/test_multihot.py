"""MLPerf DLRMv2 multi-hot inputs: the lookup tables and expansion against a plain version of
MLPerf's rule, --multi-hot-sizes parsing, multi-hot batches, the materialized training format
(and its command line), and the trainer's sources."""

import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dlrmx.data import multihot
from dlrmx.data.format import DataFormatError, open_split, read_spec, write_dataset
from dlrmx.data.loader import FileSource, RandomSource, SyntheticSource, make_batch
from dlrmx.data.multihot import (MLPERF_MULTI_HOT_SIZES, MultiHot, materialize,
                                 parse_multi_hot_sizes)
from dlrmx.data.synthetic import SyntheticCriteo
from dlrmx.data.validate import validate_dataset
from dlrmx.train import TrainConfig
from dlrmx.train.sources import make_source

KAGGLE_HEAD = (Path(__file__).resolve().parents[2] / "shared" / "data" / "criteo"
               / "kaggle_head1000_trailing_fields_stripped.tsv")

# sizes of 1, a size far above its table's rows (9 ids from 3 rows), a wide bag
TABLES = [7, 1, 50, 3, 1000, 20]
SIZES = [3, 1, 5, 9, 100, 1]
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def mlperf_tables(table_sizes, sizes, dist):
    """MLPerf's rule written plainly: global legacy RNG seeded once, tables in order; column 0
    the row id, the other columns drawn for the whole table at once; cast to int32."""
    np.random.seed(0)
    tables = []
    for rows, s in zip(table_sizes, sizes):
        ids = np.arange(rows).reshape(rows, 1)
        if dist == "uniform":
            drawn = np.random.randint(0, rows, size=(rows, s - 1))
        else:
            with np.errstate(invalid="ignore"):
                drawn = np.random.pareto(a=0.25, size=(rows, s - 1)).astype(np.int32) % rows
        tables.append(np.concatenate([ids, drawn], axis=1).astype(np.int32))
    return tables


def mlperf_expand(tables, sparse):
    """Sample by sample, table by table: the bag is the lookup table's row of the id."""
    out = []
    for b in range(sparse.shape[0]):
        row = []
        for t, table in enumerate(tables):
            row.extend(int(v) for v in table[int(sparse[b, t])])
        out.append(row)
    return np.array(out, dtype=np.int64).reshape(sparse.shape[0], -1)


def random_ids(rng, table_sizes, n):
    ids = np.stack([rng.integers(0, r, n) for r in table_sizes], axis=1)
    ids[0] = 0
    ids[1] = np.asarray(table_sizes) - 1  # both ends of every table
    return ids.astype(np.int32)


@pytest.mark.parametrize("dist", ["uniform", "pareto"])
@pytest.mark.parametrize("chunk", [None, 7])
def test_tables_and_expansion_equal_mlperf_rule(dist, chunk, monkeypatch):
    if dist == "pareto" and not X86:
        pytest.skip("MLPerf's pareto ids depend on x86's float->int32 cast")
    if chunk:  # drawing in small row chunks gives the same stream
        monkeypatch.setattr(multihot, "CHUNK_VALUES", chunk)
    ref = mlperf_tables(TABLES, SIZES, dist)
    state = np.random.get_state()
    mh = MultiHot(TABLES, SIZES, dist)
    assert not mh.built
    assert MultiHot.nbytes(TABLES, SIZES) == sum(r * (s - 1) * 4 for r, s in zip(TABLES, SIZES))
    mh.build()
    for t in range(len(TABLES)):
        got = mh.table(t)
        assert got.dtype == np.int32 and got.shape == (TABLES[t], SIZES[t])
        assert np.array_equal(got, ref[t]), t
    assert sum(e.nbytes for e in mh._extra if e is not None) == MultiHot.nbytes(TABLES, SIZES)
    after = np.random.get_state()  # the global generator is left alone
    assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2] == state[2]
    sparse = random_ids(np.random.default_rng(1), TABLES, 29)
    got = mh.expand(sparse)
    assert got.shape == (29, sum(SIZES)) and got.dtype == np.int32
    assert np.array_equal(got, mlperf_expand(ref, sparse))
    if dist == "pareto":  # the heavy tail really hits the cast of values >= 2**31
        assert np.count_nonzero(ref[4][:, 1:] == (-2**31) % 1000) > 100


def test_int32_draws_equal_numpy_default_int64_draws():
    """MultiHot draws int32 straight; MLPerf draws NumPy's default int64 and casts."""
    for rows in (1, 2, 3, 1000, 40_000_000, 2**31 - 1):
        a = np.random.RandomState(0).randint(0, rows, size=(5, 7))
        c = np.random.RandomState(0).randint(0, rows, size=(5, 7), dtype=np.int32)
        assert np.array_equal(a, c), rows


def test_seed_and_distribution_change_the_tables():
    base = MultiHot([100], [4]).table(0)
    assert not np.array_equal(base, MultiHot([100], [4], seed=1).table(0))
    assert not np.array_equal(base, MultiHot([100], [4], "pareto").table(0))
    assert np.array_equal(base[:, 0], np.arange(100))


def test_expand_refuses_bad_ids_and_shapes():
    mh = MultiHot([4, 5], [2, 3])
    with pytest.raises(ValueError, match=r"table 1: id 5 at row 1 is outside \[0, 5\)"):
        mh.expand(np.array([[0, 0], [1, 5]]))
    with pytest.raises(ValueError, match=r"table 0: id -1 at row 0"):
        mh.expand(np.array([[-1, 0]]))
    with pytest.raises(ValueError, match=r"sparse must be \[batch, 2\]"):
        mh.expand(np.zeros((3, 3), np.int32))
    with pytest.raises(ValueError, match="dtype float"):
        mh.expand(np.zeros((3, 2)))
    assert mh.expand(np.zeros((0, 2), np.int32)).shape == (0, 5)
    with pytest.raises(ValueError, match="--multi-hot-distribution"):
        MultiHot([4], [2], "zipf")
    with pytest.raises(ValueError, match="table 0 .entry 1. has size 0"):
        MultiHot([4], [0])
    with pytest.raises(ValueError, match="2 sizes for 1 tables"):
        MultiHot.nbytes([4], [1, 2])


def test_parse_multi_hot_sizes():
    assert parse_multi_hot_sizes("", 26) is None and parse_multi_hot_sizes("  ", 3) is None
    assert parse_multi_hot_sizes("mlperf", 26) == MLPERF_MULTI_HOT_SIZES
    assert parse_multi_hot_sizes("MLPerf", 26) == MLPERF_MULTI_HOT_SIZES
    assert len(MLPERF_MULTI_HOT_SIZES) == 26 and sum(MLPERF_MULTI_HOT_SIZES) == 214
    assert parse_multi_hot_sizes("4", 3) == [4, 4, 4]
    assert parse_multi_hot_sizes("1-2-30", 3) == [1, 2, 30]
    bad = {("mlperf", 3): r"--multi-hot-sizes mlperf .*26 sizes.*there are 3 tables; give 3",
           ("1-2", 3): r"--multi-hot-sizes '1-2' has 2 entries but there are 3 tables; give 3",
           ("1-0-3", 3): r"entry 2 of 3 \('0'\) is not a positive integer",
           ("1-x-3", 3): r"entry 2 of 3 \('x'\)",
           ("1--3", 3): r"entry 2 of 3 \(''\)",
           ("0", 3): r"the value \('0'\) is not a positive integer",
           ("2.5", 3): r"the value \('2.5'\)",
           ("1,2,3", 3): r"separate the sizes with dashes.*'1-2-3'"}
    for (text, n), pattern in bad.items():
        with pytest.raises(ValueError, match=pattern):
            parse_multi_hot_sizes(text, n)


def test_make_batch_multi_hot_layout():
    rng = np.random.default_rng(3)
    sizes, b = [2, 1, 4], 5
    sparse = rng.integers(0, 100, (b, sum(sizes))).astype(np.int32)
    dense, label = rng.random((b, 13), dtype=np.float32), rng.integers(0, 2, b)
    batch = make_batch(dense, sparse, label, bag_sizes=sizes)
    assert batch.offsets.shape == (len(sizes) * b + 1,) and batch.offsets.dtype == torch.int64
    assert batch.values.shape == (b * sum(sizes),) and batch.values.dtype == torch.int32
    cols = np.cumsum([0] + sizes)
    for t in range(len(sizes)):  # bag t*B + b: sample b's ids of table t
        for i in range(b):
            lo, hi = int(batch.offsets[t * b + i]), int(batch.offsets[t * b + i + 1])
            assert hi - lo == sizes[t]
            assert batch.values[lo:hi].tolist() == sparse[i, cols[t]:cols[t + 1]].tolist()
    assert make_batch(dense, sparse, label, bag_sizes=sizes).offsets is batch.offsets  # cached
    one = make_batch(dense, sparse[:, :3], label, bag_sizes=[1, 1, 1])  # all ones = one-hot
    plain = make_batch(dense, sparse[:, :3], label)
    assert torch.equal(one.values, plain.values) and torch.equal(one.offsets, plain.offsets)
    with pytest.raises(ValueError, match="7 columns but bag_sizes add up to 6"):
        make_batch(dense, sparse, label, bag_sizes=[2, 2, 2])


def _one_hot_dir(path, tables=TABLES, rows=(203, 41), seed=5):
    rng = np.random.default_rng(seed)

    def split(n):
        return (rng.integers(0, 2, n).astype(np.int8), rng.random((n, 13), dtype=np.float32),
                random_ids(rng, tables, n))
    return write_dataset(path, {"train": split(rows[0]), "val": split(rows[1])}, tables)


def test_materialized_directory_reads_as_in_memory_expansion(tmp_path):
    inp = _one_hot_dir(tmp_path / "in")
    out = materialize(inp, tmp_path / "out", SIZES, "uniform")
    spec = read_spec(out)
    assert spec["multi_hot_sizes"] == SIZES and spec["table_sizes"] == TABLES
    made = spec["produced_by"]
    assert made["tool"] == "dlrmx.data.multihot"
    assert made["multi_hot"]["distribution"] == "uniform" and made["multi_hot"]["seed"] == 0
    assert "randint" in made["multi_hot"]["rule"]
    assert made["input"]["path"] == str(inp.resolve())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # no temporaries left
    mh = MultiHot(TABLES, SIZES)
    for split in ("train", "val"):
        a, b = open_split(inp, split), open_split(out, split)
        assert b.sparse.shape == (len(a), sum(SIZES)) and b.sparse.dtype == np.int32
        assert np.array_equal(b.sparse, mh.expand(np.asarray(a.sparse)))
        assert np.array_equal(a.label, b.label) and np.array_equal(a.dense, b.dense)
    stored = FileSource(out, seed=3, block_batches=2)
    expanded = FileSource(inp, seed=3, block_batches=2, multi_hot=MultiHot(TABLES, SIZES))
    assert stored.multi_hot_sizes == expanded.multi_hot_sizes == SIZES
    for split, n in (("train", stored.num_batches("train", 16)), ("val", 3)):
        for i in range(n):
            x, y = stored.get(split, i, 16, epoch=1), expanded.get(split, i, 16, epoch=1)
            for f in ("dense", "values", "offsets", "label"):
                assert torch.equal(getattr(x, f), getattr(y, f)), (split, i, f)
            assert x.offsets[-1] == x.size * sum(SIZES)
    with pytest.raises(ValueError, match="multi-hot already"):
        FileSource(out, multi_hot=mh)
    with pytest.raises(ValueError, match="built for table sizes"):
        FileSource(inp, multi_hot=MultiHot([5] * len(TABLES), SIZES))


def test_validation_checks_multi_hot_columns_by_table(tmp_path):
    inp = _one_hot_dir(tmp_path / "in")
    out = materialize(inp, tmp_path / "out", SIZES, "pareto", link=False)
    assert read_spec(out)["produced_by"]["label_and_dense"]["train_label"] == "copied"
    path = out / "val_sparse.npy"
    arr = np.load(path)
    arr[7, 3 + 1 + 5 + 2] = 3  # table 3 (3 rows), its third id
    np.save(path, arr)
    with pytest.raises(DataFormatError, match=r"val_sparse\.npy: column C4 \(table 3; file column "
                       r"11, id 3 of its 9 per bag\): id 3 at row 7 is >= table_sizes\[3\] = 3"):
        validate_dataset(out)
    spec = json.loads((out / "spec.json").read_text())
    spec["multi_hot_sizes"] = SIZES[:-1]
    (out / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(DataFormatError, match=r"multi_hot_sizes must be a list of 6 positive"):
        validate_dataset(out)
    spec["multi_hot_sizes"] = [1] * len(SIZES)  # wrong width for the files
    (out / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(DataFormatError, match=r"shape \(203, 119\), expected \(203, 6\)"):
        validate_dataset(out)


def test_command_line_and_its_refusals(tmp_path, capsys):
    inp = _one_hot_dir(tmp_path / "in", rows=(20, 5))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "dlrmx.data.multihot", str(inp), "-o", str(out),
                        "--multi-hot-sizes", "2", "--multi-hot-distribution", "uniform"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Warning" not in r.stderr, r.stderr
    assert "wrote" in r.stdout and read_spec(out)["multi_hot_sizes"] == [2] * len(TABLES)

    def refused(argv, pattern, where):
        before = sorted(p.name for p in tmp_path.iterdir())
        assert multihot.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and re.search(pattern, err), err
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing half-written
        if where is not None:
            assert not where.exists() or (where / "spec.json").is_file()

    new = tmp_path / "new"
    refused([str(inp), "-o", str(new)], "--multi-hot-sizes", new)
    refused([str(inp), "-o", str(new), "--multi-hot-sizes", "1-2"], "has 2 entries but there "
            "are 6 tables", new)
    refused([str(inp), "-o", str(new), "--multi-hot-sizes", "mlperf"], "mlperf .*26", new)
    refused([str(inp), "-o", str(new), "--multi-hot-sizes", ""], "is empty", new)
    refused([str(inp), "-o", str(new), "--multi-hot-sizes", "2", "--multi-hot-distribution",
             "zipf"], "invalid choice", new)
    refused([str(tmp_path / "nope"), "-o", str(new), "--multi-hot-sizes", "2"], "not a "
            "directory", new)
    refused([str(out), "-o", str(new), "--multi-hot-sizes", "2"], "already multi-hot", new)
    refused([str(inp), "-o", str(inp), "--multi-hot-sizes", "2"], "must not be the input", None)
    refused([str(inp), "-o", str(inp / "sub"), "--multi-hot-sizes", "2"], "must not be the "
            "input", None)
    refused([str(inp), "-o", str(out), "--multi-hot-sizes", "3"], "--force", out)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    refused([str(inp), "-o", str(other), "--multi-hot-sizes", "2", "--force"], "refusing",
            None)
    assert (other / "keep.txt").read_text() == "mine"
    assert read_spec(out)["multi_hot_sizes"] == [2] * len(TABLES)  # untouched by the refusals
    assert multihot.main([str(inp), "-o", str(out), "--multi-hot-sizes", "3", "--force"]) == 0
    assert read_spec(out)["multi_hot_sizes"] == [3] * len(TABLES)


def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch):
    inp = _one_hot_dir(tmp_path / "in")
    calls = []

    def failing(self, sparse):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real(self, sparse)
    real = MultiHot.expand
    monkeypatch.setattr(multihot, "CHUNK_VALUES", 64)
    monkeypatch.setattr(MultiHot, "expand", failing)
    with pytest.raises(OSError, match="No space left.*train_sparse.npy"):
        materialize(inp, tmp_path / "out", SIZES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_sources_pass_multi_hot(tmp_path):
    sizes = "7-1-50-3-1000-20"
    cfg = TrainConfig(data_generation="random", arch_embedding_size=sizes,
                      multi_hot_sizes="-".join(map(str, SIZES)), numpy_rand_seed=9)
    src = make_source(cfg)
    assert isinstance(src, RandomSource) and src.multi_hot_sizes == SIZES
    batch = src.get("train", 2, 16)
    assert batch.offsets.tolist() == make_batch(np.zeros((16, 13)), np.zeros((16, 119), np.int32),
                                                np.zeros(16), bag_sizes=SIZES).offsets.tolist()
    # the same ids as the one-hot stream, expanded (the seed of the tables is MLPerf's, not 9)
    plain = make_source(TrainConfig(data_generation="random", arch_embedding_size=sizes,
                                    num_indices_per_lookup=1, num_indices_per_lookup_fixed=True,
                                    numpy_rand_seed=9)).get("train", 2, 16)
    ids = plain.values.numpy().reshape(len(TABLES), 16).T
    want = make_batch(plain.dense.numpy(), MultiHot(TABLES, SIZES).expand(ids),
                      plain.label.numpy(), bag_sizes=SIZES)
    assert torch.equal(batch.values, want.values) and torch.equal(batch.label, plain.label)

    gen_sizes = [5 + i for i in range(26)]
    syn = make_source(TrainConfig(arch_embedding_size="-".join(map(str, gen_sizes)),
                                  multi_hot_sizes="mlperf", eval_samples=64))
    assert isinstance(syn, SyntheticSource) and syn.multi_hot_sizes == MLPERF_MULTI_HOT_SIZES
    sb = SyntheticCriteo(gen_sizes, seed=123).batch("val", 0, 64)
    got = syn.get("val", 0, 64)
    assert torch.equal(got.values, make_batch(sb.dense, MultiHot(gen_sizes, MLPERF_MULTI_HOT_SIZES)
                                              .expand(sb.sparse), sb.label,
                                              bag_sizes=MLPERF_MULTI_HOT_SIZES).values)

    inp = _one_hot_dir(tmp_path / "in")
    out = materialize(inp, tmp_path / "out", SIZES, "pareto")

    def ds(d, **kw):
        return make_source(TrainConfig(data_generation="dataset", processed_data_file=str(d), **kw))
    assert ds(inp).multi_hot_sizes is None
    assert ds(inp, multi_hot_sizes="2").multi_hot_sizes == [2] * len(TABLES)
    assert ds(out).multi_hot_sizes == SIZES
    assert ds(out, multi_hot_sizes="-".join(map(str, SIZES)),
              multi_hot_distribution="pareto").multi_hot is None
    with pytest.raises(ValueError, match=r"--multi-hot-sizes 2: .* multi-hot already with sizes "
                       r"3-1-5-9-100-1; leave --multi-hot-sizes empty"):
        ds(out, multi_hot_sizes="2")
    with pytest.raises(ValueError, match="--multi-hot-distribution uniform: .*'pareto'"):
        ds(out, multi_hot_sizes="-".join(map(str, SIZES)))


@pytest.mark.skipif(not KAGGLE_HEAD.is_file(), reason="../shared/data Criteo sample absent")
def test_real_criteo_sample_materializes_mlperf(tmp_path):
    from dlrmx.preprocess import preset
    from dlrmx.preprocess import run as preprocess

    one = tmp_path / "criteo"
    preprocess(preset("criteo-kaggle"), [str(KAGGLE_HEAD)], one, engine="polars")
    out = materialize(one, tmp_path / "mlperf", MLPERF_MULTI_HOT_SIZES)
    spec = read_spec(out)
    mh = MultiHot(spec["table_sizes"], MLPERF_MULTI_HOT_SIZES)
    src = FileSource(out, shuffle=False)
    for split in ("train", "val"):
        a = open_split(one, split)
        batch = src.get(split, 0, 64)
        want = make_batch(np.array(a.dense[:64]), mh.expand(np.array(a.sparse[:64])),
                          np.array(a.label[:64]), bag_sizes=MLPERF_MULTI_HOT_SIZES)
        assert torch.equal(batch.values, want.values) and torch.equal(batch.offsets, want.offsets)
        assert batch.values.numel() == 64 * 214
