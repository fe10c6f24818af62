"""dlrmx.preprocess with the Polars engine: exact values against an independent Python version."""

from __future__ import annotations

import gzip
import math
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dlrmx.data import open_split, read_spec
from dlrmx.preprocess import from_dict, preset, run, use_reference_semantics
from dlrmx.preprocess.config import CategoricalOps, RowOrder
from dlrmx.preprocess.report import BadInputError

DATA = Path(__file__).parents[2] / "shared" / "data"
KAGGLE_HEAD = DATA / "criteo" / "kaggle_head1000_trailing_fields_stripped.tsv"
KAGGLE_RANDOM = DATA / "criteo" / "kaggle_random100_no_final_newline.tsv"
AVAZU = DATA / "avazu_sample100.csv"
needs_data = pytest.mark.skipif(not KAGGLE_HEAD.is_file(), reason="shared/data samples absent")

AVAZU_YAML = """
name: avazu
schema:
  columns: [id, click, hour, C1, banner_pos, site_id, site_domain, site_category, app_id,
            app_domain, app_category, device_id, device_ip, device_model, device_type,
            device_conn_type, C14, C15, C16, C17, C18, C19, C20, C21]
  label: click
  dense: [C15, C16]
  categorical: [hour, C1, banner_pos, site_id, site_domain, site_category, app_id, app_domain,
                app_category, device_id, device_ip, device_model, device_type, device_conn_type,
                C14, C17, C18, C19, C20, C21]
  delimiter: ","
  header: true
  categorical_parse: string
operations:
  - drop_columns: [device_ip]
  - categorify: {min_freq: 2, order: frequency}
  - split: {by: days, days: 10}
"""


# ---------------------------------------------------------------- independent reference version
def ref_parse(line: str) -> tuple[int, list[int], list[int | None]]:
    """Criteo line -> label, dense ints (missing 0), hex keys (None when missing)."""
    f = line.rstrip("\n").split("\t")
    f += [""] * (40 - len(f))
    return int(f[0]), [int(x) if x else 0 for x in f[1:14]], [int(x, 16) if x else None for x in f[14:40]]


def ref_ids(keys_per_row: list[list], order: str, min_freq: int, reserved_first: bool) -> tuple:
    """Per column: key -> id, written out the long way."""
    ncol = len(keys_per_row[0])
    maps, sizes = [], []
    for j in range(ncol):
        col = [r[j] for r in keys_per_row if r[j] is not None]
        cnt = Counter(col)
        first = {}
        for i, k in enumerate(col):
            first.setdefault(k, i)
        kept = [k for k in cnt if cnt[k] >= min_freq]
        kept.sort(key=(lambda k: (-cnt[k], k)) if order == "frequency" else (lambda k: first[k]))
        base = 1 if reserved_first else 0
        maps.append({k: base + i for i, k in enumerate(kept)})
        sizes.append(len(kept) + 1)
    return maps, sizes


def ref_pipeline(lines: list[str], order="frequency", min_freq=1, missing="reserved",
                 reserved_first=True, max_ind_range=0, days=7):
    rows = [ref_parse(x) for x in lines]
    keys = []
    for _, _, k in rows:
        if max_ind_range:
            k = [None if v is None else v % max_ind_range for v in k]
        if missing == "zero":
            k = [0 if v is None else v for v in k]
        keys.append(k)
    maps, sizes = ref_ids(keys, order, min_freq, reserved_first)
    reserved = [0 if reserved_first else s - 1 for s in sizes]
    sparse = np.array([[maps[j].get(k[j], reserved[j]) if k[j] is not None else reserved[j]
                        for j in range(26)] for k in keys], dtype=np.int64)
    dense = np.array([[math.log(max(x, 0) + 1) for x in d] for _, d, _ in rows], dtype=np.float64)
    label = np.array([lab for lab, _, _ in rows])
    if days is None:  # split by: none
        return {"train": np.arange(len(lines))}, label, dense, sparse, sizes
    idx = np.array_split(np.arange(len(lines)), days)
    train = np.concatenate(idx[:-1])
    test, val = np.array_split(idx[-1], 2)
    return {"train": train, "val": val, "test": test}, label, dense, sparse, sizes


def check_against_reference(out: Path, lines: list[str], **kw) -> None:
    splits, label, dense, sparse, sizes = ref_pipeline(lines, **kw)
    spec = read_spec(out)
    assert spec["table_sizes"] == sizes
    for s, idx in splits.items():
        sp = open_split(out, s)
        np.testing.assert_array_equal(sp.label, label[idx])
        np.testing.assert_allclose(sp.dense, dense[idx], rtol=1e-6)
        np.testing.assert_array_equal(sp.sparse, sparse[idx])


# ---------------------------------------------------------------- fixtures
def make_lines(n: int, seed: int) -> list[str]:
    """Criteo-like rows: small hex vocabularies, empty fields, negative ints, stripped tails."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ints = ["" if rng.random() < 0.2 else str(int(rng.integers(-3, 200))) for _ in range(13)]
        cats = ["" if rng.random() < 0.15 else f"{int(rng.zipf(1.5)) * 2654435761 % 2**32:08x}"
                for _ in range(26)]
        line = "\t".join([str(int(rng.integers(0, 2)))] + ints + cats)
        if rng.random() < 0.3:
            line = line.rstrip("\t")  # trailing empty fields stripped, as in the real sample
        out.append(line)
    return out


@pytest.fixture
def small(tmp_path) -> tuple[Path, list[str]]:
    lines = make_lines(200, 1)
    p = tmp_path / "train.txt"
    p.write_text("\n".join(lines) + "\n")
    return p, lines


def kaggle(**cat) -> "PipelineConfig":  # noqa: F821
    cfg = preset("criteo-kaggle")
    return replace(cfg, categorical_ops=replace(cfg.categorical_ops, **cat))


# ---------------------------------------------------------------- tests
def test_hand_written_exact_values(tmp_path):
    lines = ["1\t5\t-2\t" + "\t" * 10 + "\t0000000a\t0000000b",  # I2 negative -> 0; C3.. missing
             "0\t\t3" + "\t" * 11 + "\t0000000b\t0000000b\t00000001",
             "1\t0" + "\t" * 12 + "\t0000000b"]
    p = tmp_path / "t.tsv"
    p.write_text("\n".join(lines))
    cfg = replace(kaggle(), split=replace(kaggle().split, by="none"))
    run(cfg, [str(p)], tmp_path / "out", engine="polars")
    sp = open_split(tmp_path / "out", "train")
    # C1: 0xb twice, 0xa once -> b=1, a=2 (frequency), reserved 0. C2: b twice -> 1. C3: 1 -> 1.
    np.testing.assert_array_equal(sp.sparse[:, :3], [[2, 1, 0], [1, 1, 1], [1, 0, 0]])
    assert (sp.sparse[:, 3:] == 0).all()
    np.testing.assert_allclose(sp.dense[:, :2], np.log1p([[5, 0], [0, 3], [0, 0]]), rtol=1e-7)
    np.testing.assert_array_equal(sp.label, [1, 0, 1])
    spec = read_spec(tmp_path / "out")
    assert spec["table_sizes"][:3] == [3, 2, 2] and spec["rows"] == {"train": 3, "val": 0, "test": 0}
    d = pl.read_parquet(tmp_path / "out" / "dictionaries" / "C1.parquet")
    assert d.to_dicts() == [{"key": 11, "id": 1, "count": 2, "first_pos": 1},
                            {"key": 10, "id": 2, "count": 1, "first_pos": 0}]


@pytest.mark.parametrize("kw", [dict(), dict(order="first_seen", min_freq=2),
                                dict(min_freq=3, reserved_id="last", max_ind_range=1000,
                                     missing="zero")])
def test_matches_reference_version(small, tmp_path, kw):
    p, lines = small
    run(kaggle(**kw), [str(p)], tmp_path / "out", engine="polars")
    ref_kw = {k: v for k, v in kw.items() if k != "reserved_id"}
    check_against_reference(tmp_path / "out", lines, reserved_first=kw.get("reserved_id") != "last",
                            **ref_kw)


def reference_dlrm_mapping(lines: list[str]) -> list[dict[int, int]]:
    """The reference DLRM's rule: empty -> "0", int(x, 16), ids in first-seen order over all rows
    (a Python dict's insertion order), numbered from 0."""
    dicts: list[dict[int, int]] = [{} for _ in range(26)]
    for line in lines:
        f = line.split("\t")
        f += [""] * (40 - len(f))
        for j in range(26):
            dicts[j].setdefault(int(f[14 + j] or "0", 16), len(dicts[j]))
    return dicts


def test_first_seen_reproduces_reference_dlrm(small, tmp_path):
    p, lines = small
    rep = run(use_reference_semantics(preset("criteo-kaggle")), [str(p)], tmp_path / "o", "polars")
    ref = reference_dlrm_mapping(lines)
    for j in range(26):
        d = pl.read_parquet(tmp_path / "o" / "dictionaries" / f"C{j + 1}.parquet")
        assert dict(zip(d["key"], d["id"])) == ref[j]
        assert rep.table_sizes[f"C{j + 1}"] == len(ref[j]) + 1  # + the reserved id, last
    got = np.concatenate([open_split(tmp_path / "o", s).sparse for s in ("train", "test", "val")])
    want = [[ref[j][int((line.split("\t") + [""] * 40)[14 + j] or "0", 16)] for j in range(26)]
            for line in lines]
    np.testing.assert_array_equal(got, want)


def test_split_sizes_follow_array_split(tmp_path):
    lines = make_lines(23, 2)  # 23 = 7 * 3 + 2: days 0-1 get 4 rows, the rest 3
    p = tmp_path / "t.tsv"
    p.write_text("\n".join(lines) + "\n")
    rep = run(kaggle(), [str(p)], tmp_path / "o", "polars")
    assert rep.rows == {"train": 20, "val": 1, "test": 2}  # last day (3 rows): test 2, val 1
    np.testing.assert_array_equal(open_split(tmp_path / "o", "test").label,
                                  [int(x[0]) for x in lines[20:22]])


def test_terabyte_split_by_files_and_gzip(tmp_path):
    files = []
    for d in range(3):
        lines = make_lines(10 + d, 10 + d)
        f = tmp_path / "in" / f"day_{d}.gz"
        f.parent.mkdir(exist_ok=True)
        with gzip.open(f, "wt") as g:
            g.write("\n".join(lines) + "\n")
        files.append(lines)
    rep = run(preset("criteo-terabyte"), [str(tmp_path / "in")], tmp_path / "o", "polars")
    assert rep.rows == {"train": 21, "test": 6, "val": 6}
    np.testing.assert_array_equal(open_split(tmp_path / "o", "val").label,
                                  [int(x[0]) for x in files[2][6:]])


def bad_lines() -> tuple[list[str], dict]:
    good = make_lines(6, 3)
    cats = "\t".join(["0000000a"] * 26)
    ints = "\t".join(["1"] * 13)
    bad = [
        "1\t" + ints + "\t" + cats + "\textra",  # too many fields
        "0\t1\tx7" + "\t1" * 11 + "\t" + cats,  # I2 non-numeric
        "0\t" + ints + "\tzz12\t" + "\t".join(["0000000a"] * 25),  # C1 non-hex
        "0\t99999999999999999999" + "\t1" * 12 + "\t" + cats,  # I1 overflows int64
        "0\t" + ints + "\t" + "1" * 17 + "\t" + "\t".join(["0000000a"] * 25),  # C1 hex overflow
        "\t" + ints + "\t" + cats,  # missing label
        "",  # empty line: missing label
    ]
    lines = good[:3] + bad + good[3:]
    kinds = {("*", "too_many_fields"): 1, ("I2", "non_numeric"): 1, ("C1", "non_hex"): 1,
             ("I1", "overflow"): 1, ("C1", "overflow"): 1, ("label", "missing_label"): 2}
    return lines, kinds


def test_bad_rows_quarantine(tmp_path):
    lines, kinds = bad_lines()
    p = tmp_path / "bad.tsv"
    p.write_text("\n".join(lines) + "\n")
    rep = run(replace(kaggle(), split=replace(kaggle().split, by="none")), [str(p)],
              tmp_path / "o", "polars")
    assert dict(rep.bad.counts) == kinds and rep.bad.rows == 7
    assert rep.rows["train"] == 6
    q = (tmp_path / "o" / "quarantine.tsv").read_text().splitlines()
    assert q[0] == "file\tline\tproblems\ttext" and len(q) == 8
    first = q[1].split("\t", 3)
    assert first[0] == str(p.resolve()) and first[1] == "4" and first[2] == "*:too_many_fields"
    assert first[3] == lines[3]
    assert [r.split("\t")[1] for r in q[1:]] == [str(i) for i in range(4, 11)]
    assert rep.bad.examples[1].problems == ["I2:non_numeric"] and rep.bad.examples[1].line == 5
    # The good rows are exactly the reference's view of the good lines.
    good = lines[:3] + lines[10:]
    _, label, dense, sparse, _ = ref_pipeline(good, days=None)
    sp = open_split(tmp_path / "o", "train")
    np.testing.assert_array_equal(sp.sparse, sparse)
    np.testing.assert_array_equal(sp.label, label)


EDGE_VALUES = ["", "0", "7", "-7", "+7", "+", "-", "--7", "+-7", " 7", "7 ", "\t", "0x1f", "0X1F",
               "1f", "-1f", "+1f", "1F", "g", "7.0", "1e3", "1_000", "\u0667", "\uff17", "\u00a07",
               "127", "128", "-128", "-129", "9223372036854775807", "9223372036854775808",
               "-9223372036854775808", "-9223372036854775809", "7fffffffffffffff",
               "8000000000000000", "0000000000000000000000ff", "ffffffffffffffffff", "abc\r"]


def test_screen_agrees_with_diagnosis():
    """The fast per-row screen (casts only) marks exactly the rows the regex rules flag, for every
    field kind: label, dense, hex key, int key."""
    from dlrmx.preprocess.polars_engine import parse_frame, screen_frame

    cfg = from_dict({"schema": {"columns": ["y", "d", "h", "i", "s"], "label": "y", "dense": ["d"],
                                "categorical": ["h", "i", "s"], "parse_overrides": {"i": "int",
                                                                                     "s": "string"}}})
    lines = ["1\t1\t1\t1\tx"]
    for v in EDGE_VALUES:
        for j in range(4):  # the edge value in one field, good values elsewhere
            f = ["1", "1", "1", "1", "x"]
            f[j] = v.replace("\t", "")
            lines.append("\t".join(f))
    lines += ["1\t1\t1\t1\tx\textra", "", "1"]
    lf = pl.DataFrame({"line": lines}).with_row_index("pos").select(
        pl.col("pos").cast(pl.Int64), pl.lit(0, pl.Int32).alias("file_idx"),
        pl.col("pos").cast(pl.Int64).alias("line_no"), "line").lazy()
    screened = screen_frame(lf, cfg).collect()
    diag, names = parse_frame(lf, cfg)
    flagged = diag.select(pl.any_horizontal(names)).collect().to_series()
    assert screened["_bad"].to_list() == flagged.to_list()
    assert 0 < flagged.sum() < len(lines)


def test_bad_rows_drop_and_fail(tmp_path):
    lines, _ = bad_lines()
    p = tmp_path / "bad.tsv"
    p.write_text("\n".join(lines) + "\n")
    cfg = replace(kaggle(), on_bad_row="drop")
    rep = run(cfg, [str(p)], tmp_path / "o", "polars")
    assert rep.bad.rows == 7 and not (tmp_path / "o" / "quarantine.tsv").exists()
    with pytest.raises(BadInputError, match=r"bad.tsv:4: \*:too_many_fields"):
        run(replace(cfg, on_bad_row="fail"), [str(p)], tmp_path / "o2", "polars")
    assert not (tmp_path / "o2").exists() and not list(tmp_path.glob(".o2*"))


def test_row_order_shuffles(small, tmp_path):
    p, lines = small
    base = kaggle()
    run(base, [str(p)], tmp_path / "in", "polars")
    ref = open_split(tmp_path / "in", "train")
    rows_in = {tuple(r) for r in ref.sparse}
    for order in ("shuffle_all", "shuffle_day"):
        cfg = replace(base, row_order=RowOrder(order, seed=3))
        run(cfg, [str(p)], tmp_path / order, "polars")
        run(cfg, [str(p)], tmp_path / (order + "2"), "polars")
        a, b = open_split(tmp_path / order, "train"), open_split(tmp_path / (order + "2"), "train")
        np.testing.assert_array_equal(a.sparse, b.sparse)  # seeded: reproducible
        assert not np.array_equal(a.sparse, ref.sparse)
        # The same rows (label, dense and ids together), permuted.
        key = lambda s: sorted(zip(s.label.tolist(), map(tuple, s.dense.tolist()), map(tuple, s.sparse.tolist())))
        assert key(a) == key(ref)
        np.testing.assert_array_equal(open_split(tmp_path / order, "val").sparse,
                                      open_split(tmp_path / "in", "val").sparse)
    day0 = len(np.array_split(np.arange(200), 7)[0])
    a = open_split(tmp_path / "shuffle_day", "train")
    assert {tuple(r) for r in a.sparse[:day0]} == {tuple(r) for r in ref.sparse[:day0]}
    assert rows_in


def test_dictionary_reuse_and_unseen_keys(small, tmp_path):
    p, lines = small
    run(kaggle(), [str(p)], tmp_path / "a", "polars")
    new = make_lines(50, 99)
    q = tmp_path / "new.tsv"
    q.write_text("\n".join(new) + "\n")
    run(kaggle(), [str(q)], tmp_path / "b", "polars", dictionaries=tmp_path / "a" / "dictionaries")
    assert read_spec(tmp_path / "b")["table_sizes"] == read_spec(tmp_path / "a")["table_sizes"]
    maps = [dict(zip(*pl.read_parquet(tmp_path / "a" / "dictionaries" / f"C{j}.parquet")
                     .select("key", "id").to_numpy().T)) for j in range(1, 27)]
    got = np.concatenate([open_split(tmp_path / "b", s).sparse for s in ("train", "test", "val")])
    want = [[maps[j].get(k, 0) if k is not None else 0 for j, k in enumerate(ref_parse(x)[2])]
            for x in new]
    np.testing.assert_array_equal(got, want)
    assert (got == 0).any()
    with pytest.raises(ValueError, match="max_ind_range"):
        run(kaggle(max_ind_range=7), [str(q)], tmp_path / "c", "polars",
            dictionaries=tmp_path / "a" / "dictionaries")


def test_rerun_replaces_output_atomically(small, tmp_path):
    p, _ = small
    out = tmp_path / "o"
    run(kaggle(), [str(p)], out, "polars")
    (out / "stale.txt").write_text("old")
    run(kaggle(min_freq=2), [str(p)], out, "polars")
    assert not (out / "stale.txt").exists() and read_spec(out)["produced_by"]["pipeline"][
        "categorical_ops"]["min_freq"] == 2
    with pytest.raises(FileNotFoundError):
        run(kaggle(), [str(tmp_path / "missing.tsv")], out, "polars")
    assert read_spec(out)["produced_by"]["pipeline"]["categorical_ops"]["min_freq"] == 2
    assert sorted(x.name for x in tmp_path.iterdir() if x.name.startswith(".")) == []


def test_config_errors():
    with pytest.raises(ValueError, match="unknown operation"):
        from_dict({"preset": "criteo-kaggle", "operations": [{"bucketize": {}}]})
    with pytest.raises(ValueError, match="unknown key 'min_frq'"):
        from_dict({"preset": "criteo-kaggle", "operations": [{"categorify": {"min_frq": 2}}]})
    with pytest.raises(ValueError, match="'C99' is not in schema.columns"):
        from_dict({"preset": "criteo-kaggle", "operations": [{"drop_columns": ["C99"]}]})
    with pytest.raises(ValueError, match="order must be one of"):
        replace(kaggle(), categorical_ops=CategoricalOps(order="random")).validate()


# ---------------------------------------------------------------- real samples
@needs_data
def test_real_kaggle_samples_missing_trailing_fields(tmp_path):
    head = KAGGLE_HEAD.read_text().splitlines()
    rand = KAGGLE_RANDOM.read_text().splitlines()
    assert {len(x.split("\t")) for x in head} == {37, 38, 40}
    rep = run(kaggle(), [str(KAGGLE_HEAD), str(KAGGLE_RANDOM)], tmp_path / "o", "polars")
    assert rep.bad.rows == 0 and rep.input_rows == 1100
    check_against_reference(tmp_path / "o", head + rand)


@needs_data
def test_avazu_yaml(tmp_path):
    y = tmp_path / "avazu.yaml"
    y.write_text(AVAZU_YAML)
    from dlrmx.preprocess import load_yaml
    rep = run(load_yaml(y), [str(AVAZU)], tmp_path / "o", "polars")
    rows = [r.split(",") for r in AVAZU.read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    assert rep.bad.rows == 0 and sum(rep.rows.values()) == len(rows) == 100
    spec = read_spec(tmp_path / "o")
    assert "device_ip" not in spec["sparse_columns"] and len(spec["sparse_columns"]) == 19
    # Independent check of one column: site_id with min_freq 2, frequency order.
    j = header.index("site_id")
    cnt = Counter(r[j] for r in rows)
    kept = sorted((k for k in cnt if cnt[k] >= 2), key=lambda k: (-cnt[k], k))
    ids = {k: i + 1 for i, k in enumerate(kept)}
    got = np.concatenate([open_split(tmp_path / "o", s).sparse for s in ("train", "test", "val")])
    col = spec["sparse_columns"].index("site_id")
    np.testing.assert_array_equal(got[:, col], [ids.get(r[j], 0) for r in rows])
    dense = np.concatenate([open_split(tmp_path / "o", s).dense for s in ("train", "test", "val")])
    np.testing.assert_allclose(dense[:, 0], np.log1p([float(r[header.index("C15")]) for r in rows]),
                               rtol=1e-6)


@needs_data
def test_cli(tmp_path):
    py = [sys.executable, "-m", "dlrmx.preprocess"]
    h = subprocess.run(py + ["--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--engine", "--master", "--on-bad-row", "--dictionaries", "--reference",
                 "--row-order", "--max-ind-range", "--min-freq", "--order"):
        assert flag in h
    r = subprocess.run(py + [str(KAGGLE_RANDOM), "-o", str(tmp_path / "o"), "--reference",
                             "--row-order", "shuffle_all", "--engine", "polars"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "rows: train 86, val 7, test 7" in r.stdout and "bad rows: 0" in r.stdout
    r = subprocess.run(py + [str(tmp_path / "nope"), "-o", str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "nope" in r.stderr


def test_no_torch_import():
    code = "import sys, dlrmx.preprocess.__main__, dlrmx.preprocess.polars_engine; " \
           "assert 'torch' not in sys.modules and 'pyspark' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
