"""validate_dataset: a spec.json that lies, or files with bad ids, labels, dtypes or values, are
refused before training with a message naming the file, column, row and value; the per-file
statistics are cached and reused while the files are unchanged."""

import json
import os

import numpy as np
import pytest

import dlrmx.data.validate as V
from dlrmx.data import DataFormatError, SplitWriter, validate_dataset, write_dataset, write_split
from dlrmx.data.format import write_spec
from dlrmx.data.loader import FileSource

SIZES = [4, 6, 1000]


def _good(d, n=40):
    rng = np.random.default_rng(1)

    def split(m):
        sparse = rng.integers(0, SIZES, (m, 3)).astype(np.int32)
        return rng.integers(0, 2, m), rng.random((m, 2), dtype=np.float32), sparse
    return write_dataset(d, {"train": split(n), "val": split(30), "test": split(20)}, SIZES)


def _edit_spec(d, **changes):
    spec = json.loads((d / "spec.json").read_text())
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(spec.get(k), dict):
            spec[k].update(v)
        else:
            spec[k] = v
    (d / "spec.json").write_text(json.dumps(spec))


def _resave(d, name, edit):
    a = np.load(d / name)
    np.save(d / name, edit(a.copy()))


def _set(r, c, v, dtype=None):
    def edit(a):
        a = a if dtype is None else a.astype(dtype)
        a[(r, c) if c is not None else r] = v
        return a
    return edit


# each case: how to break a good dataset, and what the message must say
SPEC_CASES = {
    "table_smaller_than_ids": (dict(table_sizes=[4, 6, 10]), None,
                               r"_sparse\.npy: column C3 \(index 2\): id \d+ at row \d+ is >= "
                               r"table_sizes\[2\] = 10 in spec\.json.*re-run dlrmx\.preprocess"),
    "table_size_zero": (dict(table_sizes=[4, 0, 1000]), None,
                        r"spec\.json: table_sizes\[1\] \(C2\) = 0; every table needs a positive"),
    "table_size_string": (dict(table_sizes=[4, "6", 1000]), None, r"table_sizes\[1\] \(C2\) = '6'"),
    "table_size_float": (dict(table_sizes=[4, 6, 2.5]), None, r"table_sizes\[2\] \(C3\) = 2\.5"),
    "table_size_bool": (dict(table_sizes=[True, 6, 1000]), None, r"table_sizes\[0\] \(C1\) = True"),
    "too_few_table_sizes": (dict(table_sizes=[4, 6]), None, "one size per sparse column"),
    "negative_rows": (dict(rows={"val": -1}), None, r"rows\['val'\] = -1; row counts must be "
                                                    "non-negative"),
    "columns_not_a_list": (dict(dense_columns="I1,I2"), None, "dense_columns must be a list"),
}
FILE_CASES = {
    "id_out_of_range": ("val_sparse.npy", _set(17, 2, 1234),
                        r"val_sparse\.npy: column C3 \(index 2\): id 1234 at row 17 is >= "
                        r"table_sizes\[2\] = 1000 in spec\.json"),
    "negative_id": ("test_sparse.npy", _set(4, 1, -3),
                    r"test_sparse\.npy: column C2 \(index 1\): id -3 at row 4 is negative"),
    "uint8_ids": ("train_sparse.npy", lambda a: a.astype(np.uint8),
                  r"train_sparse\.npy: dtype uint8, expected int32 or int64"),
    "uint32_ids": ("train_sparse.npy", lambda a: a.astype(np.uint32), "dtype uint32, expected int"),
    "uint64_ids": ("train_sparse.npy", lambda a: a.astype(np.uint64), "dtype uint64, expected int"),
    "label_half": ("train_label.npy", _set(3, None, 0.5, np.float32),
                   r"train_label\.npy: label 0\.5 at row 3 is not 0 or 1"),
    "label_minus_one": ("val_label.npy", _set(8, None, -1), r"val_label\.npy: label -1 at row 8"),
    "label_seven": ("train_label.npy", _set(39, None, 7), r"label 7 at row 39 is not 0 or 1"),
    "dense_nan": ("train_dense.npy", _set(9, 1, np.nan),
                  r"train_dense\.npy: column I2 \(index 1\): value nan at row 9 is not finite"),
    "dense_inf": ("test_dense.npy", _set(0, 0, -np.inf),
                  r"column I1 \(index 0\): value -inf at row 0"),
}


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_lying_spec_is_refused(tmp_path, case):
    changes, _, match = SPEC_CASES[case]
    d = _good(tmp_path / "d")
    validate_dataset(d)  # fine before; and its cache must not hide the edit
    _edit_spec(d, **changes)
    with pytest.raises(DataFormatError, match=match):
        validate_dataset(d)
    with pytest.raises(DataFormatError, match=match):
        FileSource(d)


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_file_is_refused_with_file_column_row_value(tmp_path, case):
    name, edit, match = FILE_CASES[case]
    d = _good(tmp_path / "d")
    validate_dataset(d)
    _resave(d, name, edit)
    with pytest.raises(DataFormatError, match=match):
        FileSource(d)


def test_labels_of_other_dtypes_holding_0_and_1_are_accepted(tmp_path):
    d = _good(tmp_path / "d")
    for dtype in (np.float32, np.float64, np.int64, np.uint8, np.bool_):
        _resave(d, "train_label.npy", lambda a: a.astype(dtype))
        out = validate_dataset(d)
        assert out["stats"]["train"]["label"] == {"not_01": 0}
    np.save(d / "train_sparse.npy", np.load(d / "train_sparse.npy").astype(np.int64))
    assert validate_dataset(d)["stats"]["train"]["sparse"]["max"][2] < 1000


def test_stats_are_cached_and_recomputed_only_for_changed_files(tmp_path, monkeypatch):
    d = _good(tmp_path / "d")
    calls = []
    real = V.file_stats
    monkeypatch.setattr(V, "file_stats", lambda part, arr: calls.append(part) or real(part, arr))
    first = validate_dataset(d)
    assert len(calls) == 9 and sorted(first["computed"]) == sorted(
        f"{s}_{p}.npy" for s in ("train", "val", "test") for p in ("label", "dense", "sparse"))
    assert first["cache"] == str(d / V.STATS_FILE) and (d / V.STATS_FILE).is_file()
    sparse = np.load(d / "train_sparse.npy")
    assert first["stats"]["train"]["sparse"] == {"min": sparse.min(0).tolist(),
                                                 "max": sparse.max(0).tolist()}
    calls.clear()
    second = validate_dataset(d)
    assert calls == [] and second["computed"] == [] and second["stats"] == first["stats"]
    # same size, new content: the mtime tells
    st = os.stat(d / "train_sparse.npy")
    sparse[5, 0] = 3
    sparse[6, 0] = 9  # out of range for table 0 (size 4)
    np.save(d / "train_sparse.npy", sparse)
    os.utime(d / "train_sparse.npy", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(DataFormatError, match=r"column C1 \(index 0\): id 9 at row 6"):
        validate_dataset(d)
    assert calls == ["sparse"]


def test_read_only_directory_goes_uncached(tmp_path, monkeypatch):
    d = _good(tmp_path / "d")

    def denied(*a, **k):
        raise PermissionError("read-only file system")
    monkeypatch.setattr(V.tempfile, "mkstemp", denied)
    out = validate_dataset(d)
    assert out["cache"] is None and not (d / V.STATS_FILE).exists()
    assert validate_dataset(d)["computed"]  # nothing cached: computed again


def test_corrupt_cache_is_ignored(tmp_path):
    d = _good(tmp_path / "d")
    (d / V.STATS_FILE).write_text("{not json")
    assert len(validate_dataset(d)["computed"]) == 9
    # a forged cache entry for a different mtime is not trusted
    data = json.loads((d / V.STATS_FILE).read_text())
    data["files"]["val_sparse.npy"]["mtime_ns"] += 1
    data["files"]["val_sparse.npy"]["stats"]["max"][2] = 5000
    (d / V.STATS_FILE).write_text(json.dumps(data))
    assert validate_dataset(d)["computed"] == ["val_sparse.npy"]


# --------------------------------------------------------------------------- the writers
def test_writers_refuse_bad_labels_and_ids(tmp_path):
    dense, ids = np.zeros((3, 2), np.float32), np.zeros((3, 1), np.int32)
    with pytest.raises(DataFormatError, match="label 0.5 at row 1 is not 0 or 1"):
        write_split(tmp_path, "train", np.array([0, 0.5, 1]), dense, ids)  # was cast to 0
    with pytest.raises(DataFormatError, match=r"column C1 \(index 0\): id -2 at row 2 is negative"):
        write_split(tmp_path, "train", np.array([0, 1, 1]), dense, np.array([[0], [1], [-2]]))
    with pytest.raises(DataFormatError, match=r"column C2 \(index 1\): id 6 at row 0 is >= "
                                              r"table_sizes\[1\] = 6"):
        write_dataset(tmp_path / "w", {"train": (np.array([1]), dense[:1],
                                                 np.array([[0, 6, 0]]))}, SIZES)
    w = SplitWriter(tmp_path, "val", 3, 2, 1)
    with pytest.raises(DataFormatError, match=r"val_label\.npy: label 2 at row 0"):
        w.write(slice(0, 1), np.array([2]), dense[:1], ids[:1])
    with pytest.raises(ValueError, match=r"table_sizes\[0\] \(C1\) = 0"):
        write_spec(tmp_path, dense_columns=["I1"], sparse_columns=["C1"], label_column="label",
                   table_sizes=[0], rows={}, produced_by={})
