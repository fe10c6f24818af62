"""The reference DLRM's processed data (its Kaggle .npz and the MLPerf .bin files) converted to
the training format: every value against an independent NumPy computation of the reference's
semantics, and bad files refused with one error line."""

import io
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dlrmx import atomic
from dlrmx.data import open_split, read_spec
from dlrmx.data.loader import FileSource
from dlrmx.data.reference import (convert_bin, convert_npz, find_reference_data, main,
                                  prepare_dataset)

SAMPLE = (Path(__file__).resolve().parents[2] / "shared" / "data" / "criteo"
          / "kaggle_random100_no_final_newline.tsv")


def _synthetic(n=103, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 40, 26)
    counts[3] = 5000  # a table larger than max_ind_range below
    x_cat = rng.integers(0, counts, (n, 26)).astype(np.int32)
    x_int = rng.integers(-3, 3000, (n, 13)).astype(np.int32)  # negatives, as raw Criteo has
    return x_int, x_cat, rng.integers(0, 2, n).astype(np.int32), counts.astype(np.int32)


def _criteo_sample():
    """The reference's preprocessing of a real Criteo sample: missing ints -> 0, each categorical
    column's hashes -> dense ids, counts = distinct values per column."""
    if not SAMPLE.is_file():
        pytest.skip(f"{SAMPLE} not present")
    rows = [line.split("\t") for line in SAMPLE.read_text().splitlines()]
    y = np.array([int(r[0]) for r in rows], np.int32)
    x_int = np.array([[int(v) if v else 0 for v in r[1:14]] for r in rows], np.int32)
    cats = [np.unique([r[14 + j] for r in rows], return_inverse=True) for j in range(26)]
    x_cat = np.stack([inv for _, inv in cats], 1).astype(np.int32)
    return x_int, x_cat, y, np.array([len(u) for u, _ in cats], np.int32)


def _reference_splits(n, days=7):
    """Row numbers of train/test/val as the reference's Kaggle loader computes them."""
    per, extras = divmod(n, days)
    per_day = [per + (1 if d < extras else 0) for d in range(days)]
    chunks = np.array_split(np.arange(n), np.cumsum(per_day)[:-1])
    test, val = np.array_split(chunks[-1], 2)
    return {"train": np.concatenate(chunks[:-1]), "test": test, "val": val}


def _expect(out, arrays, rows, max_ind_range):
    x_int, x_cat, y, counts = arrays
    spec = read_spec(out)
    want_sizes = [int(c) if max_ind_range <= 0 else min(int(c), max_ind_range) for c in counts]
    assert spec["table_sizes"] == want_sizes
    assert spec["rows"] == {s: len(r) for s, r in rows.items()}
    for s, r in rows.items():
        got = open_split(out, s)
        np.testing.assert_array_equal(got.label, y[r])
        # the reference: torch.log(float32(x) + 1) after clamping negatives to 0
        want = np.log(np.maximum(x_int[r], 0).astype(np.float32) + np.float32(1))
        np.testing.assert_allclose(got.dense, want, rtol=1e-6, atol=0)
        ids = x_cat[r] % max_ind_range if max_ind_range > 0 else x_cat[r]
        np.testing.assert_array_equal(got.sparse, ids)
    return spec


def _save_npz(path, arrays, compressed=True, **override):
    x_int, x_cat, y, counts = arrays
    data = {"X_int": x_int, "X_cat": x_cat, "y": y, "counts": counts, **override}
    data = {k: v for k, v in data.items() if v is not None}
    (np.savez_compressed if compressed else np.savez)(path, **data)
    return path


@pytest.mark.parametrize("data", ["synthetic", "criteo"])
@pytest.mark.parametrize("compressed", [True, False])
@pytest.mark.parametrize("max_ind_range", [-1, 7])
def test_npz_matches_the_reference_loader(tmp_path, data, compressed, max_ind_range, monkeypatch):
    arrays = _synthetic() if data == "synthetic" else _criteo_sample()
    monkeypatch.setattr("dlrmx.data.reference.CHUNK_ROWS", 16)  # many chunks across split edges
    src = _save_npz(tmp_path / "kaggle_processed.npz", arrays, compressed)
    out = convert_npz(src, tmp_path / "out", max_ind_range=max_ind_range)
    spec = _expect(out, arrays, _reference_splits(len(arrays[2])), max_ind_range)
    assert spec["produced_by"]["source"] == str(src.resolve())
    assert spec["produced_by"]["max_ind_range"] == max_ind_range
    # no temporary directory left beside the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kaggle_processed.npz", "out"]
    b = FileSource(out, seed=0).get("train", 0, 8)  # the trainer reads it
    assert b.size == 8 and b.values.numel() == 8 * 26


@pytest.mark.parametrize("days", [2, 7, 24])
def test_npz_day_split_for_other_sizes(tmp_path, days):
    arrays = _synthetic(n=days * 3 + days - 1, seed=days)
    out = convert_npz(_save_npz(tmp_path / "k.npz", arrays), tmp_path / "o", days=days)
    _expect(out, arrays, _reference_splits(len(arrays[2]), days), -1)


def _write_bin(path, arrays, rows):
    x_int, x_cat, y, _ = arrays
    rec = np.concatenate([y[:, None], x_int, x_cat], 1).astype("<i4")
    rec[rows].tofile(path)


@pytest.mark.parametrize("with_val", [True, False])
def test_bin_matches_the_mlperf_layout(tmp_path, with_val, monkeypatch):
    arrays = _synthetic(n=90, seed=3)
    monkeypatch.setattr("dlrmx.data.reference.CHUNK_ROWS", 16)
    _write_bin(tmp_path / "terabyte_processed_train.bin", arrays, slice(0, 60))
    _write_bin(tmp_path / "terabyte_processed_test.bin", arrays, slice(60, 81 if with_val else 90))
    if with_val:
        _write_bin(tmp_path / "terabyte_processed_val.bin", arrays, slice(81, 90))
    np.savez(tmp_path / "day_fea_count.npz", counts=arrays[3])
    kind, prefix = find_reference_data(tmp_path / "terabyte_processed.npz", bin_loader=True)
    assert (kind, prefix) == ("bin", tmp_path / "terabyte_processed")
    out = convert_bin(prefix, tmp_path / "out", max_ind_range=10)
    test_end = 81 if with_val else 75  # without a val file the test file is halved
    rows = {"train": np.arange(60), "test": np.arange(60, test_end), "val": np.arange(test_end, 90)}
    spec = _expect(out, arrays, rows, 10)
    assert spec["produced_by"]["counts_file"] == str(tmp_path / "day_fea_count.npz")
    # a second counts file makes the choice ambiguous: name it
    np.savez(tmp_path / "other_fea_count.npz", counts=arrays[3])
    with pytest.raises(ValueError, match="several .*_fea_count.npz.*--counts-file"):
        convert_bin(tmp_path, tmp_path / "out2")
    out = convert_bin(tmp_path, tmp_path / "out2", counts_file=str(tmp_path / "day_fea_count.npz"))
    _expect(out, arrays, rows, -1)


def test_find_reference_data(tmp_path):
    arrays = _synthetic(n=20)
    npz = _save_npz(tmp_path / "k.npz", arrays)
    assert find_reference_data(npz) == ("npz", npz)
    out = convert_npz(npz, tmp_path / "conv")
    assert find_reference_data(out) == ("dlrmx", out)
    _write_bin(tmp_path / "b_train.bin", arrays, slice(0, 10))
    for given in ("b_train.bin", "b", "b.npz"):
        assert find_reference_data(tmp_path / given, bin_loader=True) == ("bin", tmp_path / "b")
    with pytest.raises(ValueError, match="no such file"):
        find_reference_data(tmp_path / "none.npz")
    with pytest.raises(ValueError, match=r"no x_train\.bin beside it"):
        find_reference_data(tmp_path / "x.npz", bin_loader=True)


def test_prepare_dataset_converts_once_and_notices_a_changed_source(tmp_path, monkeypatch):
    arrays = _synthetic(n=30)
    npz = _save_npz(tmp_path / "kaggle.npz", arrays)
    out = prepare_dataset(npz)
    assert out == tmp_path / "kaggle.dlrmx" and read_spec(out)["rows"]["train"] > 0
    calls = []
    monkeypatch.setattr("dlrmx.data.reference.convert_npz",
                        lambda *a, **k: calls.append(a) or out)
    assert prepare_dataset(npz) == out and calls == []  # reused
    assert prepare_dataset(npz, max_ind_range=5) == out and len(calls) == 1  # other options
    _save_npz(npz, _synthetic(n=31))
    prepare_dataset(npz)
    assert len(calls) == 2  # the source changed


# ------------------------------------------------------------------------------- errors
def _truncated_member(path, arrays):
    """A valid zip whose X_cat.npy header promises more rows than its data holds."""
    x_int, x_cat, y, counts = arrays
    with zipfile.ZipFile(path, "w") as zf:
        for key, a in (("X_int", x_int), ("y", y), ("counts", counts), ("X_cat", x_cat)):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, a)
            data = buf.getvalue()
            zf.writestr(f"{key}.npy", data[:-26 * 4 * 5] if key == "X_cat" else data)


def _bad_id(arrays):
    x_cat = arrays[1].copy()
    x_cat[5, 3] = arrays[3][3]
    return x_cat


BAD_NPZ = {
    "missing": (lambda p, a: None, r"k\.npz: no such file"),
    "not_a_zip": (lambda p, a: p.write_bytes(b"\x93NUMPY garbage" * 10),
                  r"k\.npz: not a readable \.npz \(zip\) file"),
    "truncated_zip": (lambda p, a: (_save_npz(p, a), p.write_bytes(p.read_bytes()[:3000])),
                      r"k\.npz: not a readable \.npz"),
    "truncated_member": (_truncated_member, r"k\.npz: key 'X_cat' is truncated: expected 103 rows"),
    "missing_key": (lambda p, a: _save_npz(p, a, counts=None),
                    r"k\.npz: missing key 'counts' \(found \['X_cat', 'X_int', 'y'\]\)"),
    "wrong_shape_x_int": (lambda p, a: _save_npz(p, a, X_int=a[0][:, :12]),
                          r"k\.npz: key 'X_int' has shape \(103, 12\), expected \(N, 13\) with "
                          r"N = 103"),
    "wrong_shape_counts": (lambda p, a: _save_npz(p, a, counts=a[3][:25]),
                           r"key 'counts' has shape \(25,\), expected \(26,\)"),
    "rows_differ": (lambda p, a: _save_npz(p, a, y=a[2][:100]),
                    r"key 'X_int' has shape \(103, 13\), expected \(N, 13\) with N = 100"),
    "float_ids": (lambda p, a: _save_npz(p, a, X_cat=a[1].astype(np.float32)),
                  r"key 'X_cat' has dtype float32, expected integers"),
    "id_too_large": (lambda p, a: _save_npz(p, a, X_cat=_bad_id(a)),
                     r"k\.npz key 'X_cat': column C4 \(index 3\): id 5000 at row 5 is >= "
                     r"table_sizes\[3\] = 5000"),
    "bad_label": (lambda p, a: _save_npz(p, a, y=np.where(np.arange(103) == 9, 2, a[2])),
                  r"k\.npz key 'y': label 2 at row 9 is not 0 or 1"),
}


def _run_cli(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_bad_npz_gives_one_error_line(tmp_path, capsys, case):
    make, match = BAD_NPZ[case]
    make(tmp_path / "k.npz", _synthetic())
    rc, err = _run_cli(capsys, [str(tmp_path / "k.npz"), "-o", str(tmp_path / "out")])
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert re.search(match, err), err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp dir removed


def _bin_files(tmp_path, train_bytes=None, counts=True, test=True):
    arrays = _synthetic(n=40)
    _write_bin(tmp_path / "p_train.bin", arrays, slice(0, 30))
    if train_bytes is not None:
        data = (tmp_path / "p_train.bin").read_bytes()
        (tmp_path / "p_train.bin").write_bytes(data[:train_bytes])
    if test:
        _write_bin(tmp_path / "p_test.bin", arrays, slice(30, 40))
    if counts:
        keys = {"counts": arrays[3]} if counts is True else counts
        np.savez(tmp_path / "p_fea_count.npz", **keys)


BAD_BIN = {
    "not_multiple_of_160": (dict(train_bytes=160 * 7 + 12),
                            r"p_train\.bin: size 1132 bytes is not a multiple of 160"),
    "no_test_file": (dict(test=False), r"p_test\.bin: no such file"),
    "no_counts_file": (dict(counts=False), r"no \*_fea_count\.npz counts files.*--counts-file"),
    "counts_wrong_key": (dict(counts={"count": np.ones(26)}),
                         r"p_fea_count\.npz: missing key 'counts'"),
}


@pytest.mark.parametrize("case", sorted(BAD_BIN))
def test_bad_bin_gives_one_error_line(tmp_path, capsys, case):
    kwargs, match = BAD_BIN[case]
    _bin_files(tmp_path, **kwargs)
    rc, err = _run_cli(capsys, [str(tmp_path / "p_train.bin"), "-o", str(tmp_path / "out")])
    assert rc == 2 and err.count("\n") == 1, err
    assert re.search(match, err), err
    assert not (tmp_path / "out").exists()


def test_cli_converts_refuses_to_clobber_and_has_help(tmp_path, capsys):
    _bin_files(tmp_path)
    argv = [str(tmp_path), "-o", str(tmp_path / "out"), "--max-ind-range", "3"]
    assert main(argv) == 0
    assert "train 30 rows" in capsys.readouterr().out
    assert read_spec(tmp_path / "out")["table_sizes"] == [min(int(c), 3) for c in _synthetic(40)[3]]
    rc, err = _run_cli(capsys, argv)
    assert rc == 2 and "already holds training data" in err and "--force" in err
    assert main(argv[:3] + ["--force"]) == 0  # replaced, now without --max-ind-range
    assert read_spec(tmp_path / "out")["produced_by"]["max_ind_range"] == -1
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    rc, err = _run_cli(capsys, [str(tmp_path), "-o", str(tmp_path / "mine"), "--force"])
    assert rc == 2 and "refusing to replace it" in err and "--force" not in err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    for bad, msg in [(["--bogus"], "unrecognized argument --bogus"),
                     (["--max-ind"], "unrecognized argument --max-ind (did you mean --max-ind-range?)"),
                     (["-o", "x2"], "-o/--out-dir given twice"),
                     (["--max-ind-range", "-7"], "--max-ind-range must be > 0 or -1")]:
        rc, err = _run_cli(capsys, argv[:3] + bad)
        assert rc == 2 and msg in err, (bad, err)
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "python -m dlrmx.data.reference" in capsys.readouterr().out


def test_cli_as_a_module_prints_only_the_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dlrmx.data.reference", str(tmp_path / "no.npz"),
                        "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [f"error: {tmp_path / 'no.npz'}: no such file or directory"]


def test_a_killed_conversion_leaves_nothing_behind_the_next_one(tmp_path):
    npz = tmp_path / "kaggle_processed.npz"
    _save_npz(npz, _synthetic())
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f".out.tmp-{atomic._host()}-{dead}-0123abcd"
    (stale / "x").mkdir(parents=True)
    convert_npz(npz, out)
    assert not stale.exists() and (out / "spec.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
