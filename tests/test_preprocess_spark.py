"""The Spark engine gives the same dictionaries and output as the Polars engine.

Few tests, one shared local[2] session (Spark starts slowly)."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("no Java for Spark", allow_module_level=True)

from dlrmx.data import SPLITS, open_split, read_spec  # noqa: E402
from dlrmx.preprocess import load_yaml, run  # noqa: E402
from dlrmx.preprocess.spark_engine import SparkEngine, start_session  # noqa: E402
from test_preprocess import (AVAZU, AVAZU_YAML, KAGGLE_HEAD, KAGGLE_RANDOM, bad_lines, kaggle,  # noqa: E402
                             make_lines, needs_data)


@pytest.fixture(scope="session")
def spark():
    s = start_session("local[2]", {"spark.sql.shuffle.partitions": "4",
                                   "spark.driver.memory": "1g"})
    yield s
    s.stop()


def assert_same(a, b, cfg) -> None:
    sa, sb = read_spec(a), read_spec(b)
    sa["produced_by"].pop("created"), sb["produced_by"].pop("created")
    assert sa["produced_by"].pop("engine") == "polars" and sb["produced_by"].pop("engine") == "spark"
    assert sa == sb
    for s in SPLITS:
        x, y = open_split(a, s), open_split(b, s)
        np.testing.assert_array_equal(x.label, y.label)
        np.testing.assert_array_equal(x.dense, y.dense)
        np.testing.assert_array_equal(x.sparse, y.sparse)
    for c in cfg.categorical:
        assert pl.read_parquet(a / "dictionaries" / f"{c}.parquet").equals(
            pl.read_parquet(b / "dictionaries" / f"{c}.parquet")), c


def test_spark_equals_polars_with_bad_rows_and_both_joins(spark, tmp_path):
    lines, kinds = bad_lines()
    lines = make_lines(300, 5)[:150] + lines + make_lines(300, 5)[150:]
    raw = [x.encode() for x in lines]
    # Labels that are not 0/1 and bytes that are not UTF-8 are bad rows in both engines.
    raw[20], raw[30] = b"2" + raw[20][1:], b"-1" + raw[30][1:]
    raw[40] = raw[40].replace(b"\t", b"\tcaf\xe9", 1)
    raw[250] = b"\xff" + raw[250]
    kinds = {**kinds, ("label", "bad_label"): 2, ("*", "invalid_utf8"): 2}
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "part_1.tsv").write_bytes(b"\n".join(raw[:200]) + b"\n")
    (tmp_path / "in" / "part_2.tsv").write_bytes(b"\n".join(raw[200:]))
    cfg = replace(kaggle(min_freq=2, max_ind_range=5000, order="frequency"),
                  row_order=replace(kaggle().row_order, order="shuffle_day", seed=7))
    rp = run(cfg, [str(tmp_path / "in")], tmp_path / "p", "polars")
    eng = SparkEngine(spark=spark, broadcast_limit_mb=0.0005)  # ~20 keys: big tables sort-merge
    rs = run(cfg, [str(tmp_path / "in")], tmp_path / "s", eng)
    assert {"broadcast", "merge"} == set(eng.join_kinds.values())
    assert_same(tmp_path / "p", tmp_path / "s", cfg)
    assert dict(rs.bad.counts) == dict(rp.bad.counts) == kinds
    assert (tmp_path / "p" / "quarantine.tsv").read_text() == (tmp_path / "s" / "quarantine.tsv").read_text()
    assert [e.describe() for e in rs.bad.examples] == [e.describe() for e in rp.bad.examples]
    q = (tmp_path / "s" / "quarantine.tsv").read_text()
    assert "part_1.tsv\t41\t*:invalid_utf8\t" in q and "caf\\xe9" in q  # file, line, the bytes
    assert "part_2.tsv\t51\t*:invalid_utf8\t\\xff" in q


@needs_data
def test_spark_equals_polars_on_real_samples(spark, tmp_path):
    from dlrmx.preprocess import use_reference_semantics
    cfg = use_reference_semantics(kaggle())
    inputs = [str(KAGGLE_HEAD), str(KAGGLE_RANDOM)]
    run(cfg, inputs, tmp_path / "p", "polars")
    run(cfg, inputs, tmp_path / "s", SparkEngine(spark=spark))
    assert_same(tmp_path / "p", tmp_path / "s", cfg)
    y = tmp_path / "avazu.yaml"
    y.write_text(AVAZU_YAML)
    acfg = load_yaml(y)
    run(acfg, [str(AVAZU)], tmp_path / "ap", "polars")
    run(acfg, [str(AVAZU)], tmp_path / "as", SparkEngine(spark=spark))
    assert_same(tmp_path / "ap", tmp_path / "as", acfg)
