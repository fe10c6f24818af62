import json

import numpy as np
import pytest

from dlrmx.data import FORMAT_VERSION, SplitWriter, open_split, read_spec, write_spec, write_split
from dlrmx.data.format import DataFormatError, sparse_dtype


def _spec(d, rows, sizes=(5, 7)):
    return write_spec(d, dense_columns=["I1", "I2", "I3"], sparse_columns=["C1", "C2"],
                      label_column="label", table_sizes=list(sizes), rows=rows,
                      produced_by={"tool": "test"})


def test_roundtrip_memmap(tmp_path):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 10)
    dense = rng.random((10, 3))
    sparse = rng.integers(0, 5, (10, 2))
    write_split(tmp_path, "train", label, dense, sparse)
    for s in ("val", "test"):
        write_split(tmp_path, s, label[:0], dense[:0], sparse[:0])
    spec = _spec(tmp_path, {"train": 10})
    assert read_spec(tmp_path) == spec and spec["format_version"] == FORMAT_VERSION
    sp = open_split(tmp_path, "train")
    assert isinstance(sp.dense, np.memmap) and len(sp) == 10
    assert sp.label.dtype == np.int8 and sp.dense.dtype == np.float32 and sp.sparse.dtype == np.int32
    np.testing.assert_array_equal(sp.label, label)
    np.testing.assert_array_equal(sp.dense, dense.astype(np.float32))
    np.testing.assert_array_equal(sp.sparse, sparse)
    assert len(open_split(tmp_path, "val", mmap=False)) == 0
    # Plain numpy reads the files too.
    assert np.load(tmp_path / "train_sparse.npy").shape == (10, 2)


def test_writer_fills_in_pieces_and_permuted(tmp_path):
    w = SplitWriter(tmp_path, "train", 4, 1, 1)
    w.write(np.array([3, 1]), np.array([1, 0]), np.array([[1.0], [2.0]]), np.array([[7], [8]]))
    w.write(slice(0, 1), np.array([1]), np.array([[3.0]]), np.array([[9]]))
    w.write(slice(2, 3), np.array([0]), np.array([[4.0]]), np.array([[6]]))
    w.close()
    np.testing.assert_array_equal(np.load(tmp_path / "train_sparse.npy")[:, 0], [9, 8, 6, 7])


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="row counts"):
        write_split(tmp_path, "train", np.zeros(3), np.zeros((2, 1)), np.zeros((3, 1), np.int32))
    with pytest.raises(ValueError, match="split must be"):
        write_split(tmp_path, "dev", np.zeros(1), np.zeros((1, 1)), np.zeros((1, 1), np.int32))
    write_split(tmp_path, "train", np.zeros(2), np.zeros((2, 3)), np.zeros((2, 2), np.int32))
    _spec(tmp_path, {"train": 3})
    with pytest.raises(DataFormatError, match=r"train_label\.npy: shape \(2,\), expected \(3,\)"):
        open_split(tmp_path, "train")
    spec = json.loads((tmp_path / "spec.json").read_text())
    spec["format_version"] = 99
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="format_version"):
        read_spec(tmp_path)


def test_sparse_dtype_widens_for_huge_tables():
    assert sparse_dtype([10, 2**31 - 1]) == np.int32
    assert sparse_dtype([10, 2**31]) == np.int64
