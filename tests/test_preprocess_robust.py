"""`python -m dlrmx.preprocess` on the mistakes and accidents of a real user (issue 8): one
``error:`` line and exit 2, nothing of the user's lost, bad bytes and labels as bad rows, the
temporaries of killed runs cleaned up, the reference DLRM's data sets preprocessed in-process."""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dlrmx import atomic
from dlrmx.data import SPLITS, open_split, read_spec
from dlrmx.preprocess import (InputError, OutputError, PreprocessError, preprocess_reference,
                              preset, run)
from dlrmx.preprocess import inputs as I
from dlrmx.preprocess import pipeline as P
from dlrmx.preprocess.__main__ import build_parser, main
from test_preprocess import KAGGLE_HEAD, make_lines, needs_data, reference_dlrm_mapping

PY = [sys.executable, "-m", "dlrmx.preprocess"]


def cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    """main(argv) in-process: exit code and the stderr lines."""
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err.splitlines()


def one_error(lines: list[str], *parts: str) -> str:
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for p in parts:
        assert p in lines[0], (p, lines[0])
    return lines[0]


def arrays(out: Path) -> dict[str, tuple]:
    return {s: (open_split(out, s).label.copy(), open_split(out, s).sparse.copy(),
                open_split(out, s).dense.copy()) for s in SPLITS}


def assert_same_output(a: Path, b: Path) -> None:
    xa, xb = arrays(a), arrays(b)
    for s in SPLITS:
        for u, v in zip(xa[s], xb[s]):
            np.testing.assert_array_equal(u, v)
    assert read_spec(a)["table_sizes"] == read_spec(b)["table_sizes"]


def hidden(d: Path) -> list[str]:
    return sorted(q.name for q in d.iterdir() if q.name.startswith("."))


@pytest.fixture
def data(tmp_path) -> tuple[Path, list[str]]:
    lines = make_lines(60, 4)
    p = tmp_path / "in.tsv"
    p.write_text("\n".join(lines) + "\n")
    return p, lines


# ------------------------------------------------------------------ 1. the output location
def test_output_that_is_a_file_is_refused_and_kept(tmp_path, data, capsys):
    p, _ = data
    before = p.read_bytes()
    other = tmp_path / "notes.txt"
    other.write_bytes(b"my notes\n")
    for target in (other, p):  # an unrelated file, and the input file itself
        rc, err = cli([p, "-o", target], capsys)
        assert rc == 2
        one_error(err, f"-o/--output {target.resolve()} is an", "not a directory")
        assert target.is_file()
    assert p.read_bytes() == before and other.read_bytes() == b"my notes\n"
    assert hidden(tmp_path) == []  # nothing renamed away (was: .notes.txt.old-XXXX)
    with pytest.raises(OutputError, match="existing file, not a directory"):  # the API: no exit
        run(preset("criteo-kaggle"), [str(p)], other, "polars")


def test_output_that_holds_an_input_is_refused(tmp_path, data, capsys):
    p, _ = data
    before = p.read_bytes()
    (tmp_path / "days").mkdir()
    day = tmp_path / "days" / "day_0"
    shutil.copy(p, day)
    for inp, out in ((p, tmp_path), (tmp_path / "days", tmp_path / "days"), (day, tmp_path)):
        rc, err = cli([inp, "-o", out], capsys)
        assert rc == 2
        one_error(err, f"-o/--output {out.resolve()} contains the input", "would delete it")
    assert p.read_bytes() == before and day.read_bytes() == before


def test_output_directory_that_is_not_ours_is_refused(tmp_path, data, capsys):
    p, _ = data
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("precious")
    rc, err = cli([p, "-o", mine, "-q"], capsys)
    assert rc == 2
    one_error(err, f"-o/--output {mine}", "not an earlier dlrmx.preprocess output",
              "choose a new or empty directory")
    assert (mine / "chapter1.tex").read_text() == "precious" and hidden(tmp_path) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli([p, "-o", empty, "-q"], capsys)[0] == 0  # an empty directory is fine
    assert cli([p, "-o", empty, "-q", "--min-freq", "2"], capsys)[0] == 0  # and ours is replaced
    assert read_spec(empty)["produced_by"]["pipeline"]["categorical_ops"]["min_freq"] == 2


# ------------------------------------------------------------------ 2. bytes that are not UTF-8
def latin1_rows(lines: list[str]) -> tuple[bytes, list[int]]:
    """The lines as bytes with three that are not UTF-8 (one the unterminated last line)."""
    raw = [x.encode() for x in lines]
    bad = [2, 31, len(raw)]  # 1-based line numbers
    raw[1] = raw[1].replace(b"\t", b"\tcaf\xe9", 1)  # Latin-1 e-acute in a dense field
    raw[30] = b"\xff\xfe" + raw[30]
    raw[-1] = raw[-1] + b"\x80"
    return b"\n".join(raw), bad


@pytest.mark.parametrize("gz", [False, True])
def test_invalid_utf8_is_a_bad_row(tmp_path, data, capsys, gz):
    _, lines = data
    body, bad = latin1_rows(lines)
    p = tmp_path / ("mixed.tsv.gz" if gz else "mixed.tsv")
    p.write_bytes(gzip.compress(body) if gz else body)
    clean = tmp_path / "clean.tsv"  # the same rows without the bad lines
    clean.write_text("\n".join(x for i, x in enumerate(lines, 1) if i not in bad) + "\n")
    cfg = ["--split", "none"]
    assert cli([clean, "-o", tmp_path / "want", "-q", *cfg], capsys)[0] == 0
    rc, _ = cli([p, "-o", tmp_path / "q", "-q", *cfg], capsys)
    assert rc == 0
    assert_same_output(tmp_path / "q", tmp_path / "want")  # the valid rows, exactly
    q = (tmp_path / "q" / "quarantine.tsv").read_text().splitlines()[1:]
    assert [r.split("\t", 3)[:3] for r in q] == [[str(p), str(n), "*:invalid_utf8"] for n in bad]
    assert q[0].split("\t", 3)[3] == body.split(b"\n")[1].decode("utf-8", "backslashreplace")
    rep = (tmp_path / "q" / "report.json").read_text()
    assert '"invalid_utf8": 3' in rep
    assert cli([p, "-o", tmp_path / "d", "-q", "--on-bad-row", "drop", *cfg], capsys)[0] == 0
    assert_same_output(tmp_path / "d", tmp_path / "want")
    assert not (tmp_path / "d" / "quarantine.tsv").exists()
    rc, err = cli([p, "-o", tmp_path / "f", "--on-bad-row", "fail", *cfg], capsys)
    assert rc == 2 and not (tmp_path / "f").exists()
    one_error(err, f"{p}:2: *:invalid_utf8", "caf\\\\xe9")


def test_utf8_copy_across_block_edges(tmp_path, monkeypatch):
    """Line numbers and kept bytes survive blocks that cut lines and characters anywhere."""
    rows = [b"a\tb", "\u00e9\u20ac\t1".encode(), b"x\xc3", b"", b"\r\xff\r", b"last\xe9"]
    src = tmp_path / "s"
    src.write_bytes(b"\n".join(rows))
    for block in (1, 2, 3, 5, 64):
        monkeypatch.setattr(I, "BLOCK", block)
        assert I.has_invalid_utf8(src)
        dst = tmp_path / f"d{block}"
        assert I.utf8_copy(src, dst) == [3, 5, 6]
        got = dst.read_bytes().split(b"\n")
        want = [r.decode("utf-8", "backslashreplace").encode() for r in rows]
        assert got == want
    src.write_bytes("\u00e9\n\u20ac".encode())
    assert not I.has_invalid_utf8(src)


# ------------------------------------------------------------------ 3. errors a user can cause
def test_empty_input_and_truncated_gzip_name_the_file(tmp_path, data, capsys):
    p, _ = data
    empty = tmp_path / "train.txt"
    empty.write_bytes(b"")
    rc, err = cli([empty, "-o", tmp_path / "o"], capsys)
    assert rc == 2
    one_error(err, f"input {empty} is empty")
    trunc = tmp_path / "day_0.gz"
    trunc.write_bytes(gzip.compress(p.read_bytes())[:300])
    r = subprocess.run(PY + [str(trunc), "-o", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    one_error(r.stderr.splitlines(), f"input {trunc}", "truncated or corrupt gzip")
    assert not (tmp_path / "o").exists() and hidden(tmp_path) == []


def test_permission_denied_names_the_path(tmp_path, data, capsys, monkeypatch):
    p, _ = data
    ro = tmp_path / "ro"
    ro.mkdir()
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **k):  # a read-only directory (root ignores chmod, so say it here)
        if self.parent == ro:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    rc, err = cli([p, "-o", ro / "out"], capsys)
    assert rc == 2
    one_error(err, f"cannot create the output {ro / 'out'}", "Permission denied", str(ro))


def test_full_disk_names_the_file_and_the_space(tmp_path, data, capsys, monkeypatch):
    p, _ = data
    out = tmp_path / "o"
    assert cli([p, "-o", out, "-q"], capsys)[0] == 0
    before = arrays(out)

    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    rc, err = cli([p, "-o", out, "-q", "--min-freq", "2"], capsys)
    assert rc == 2
    line = one_error(err, "no space left on the device writing", "_label.npy", "needs about",
                     "free in")
    assert str(tmp_path) in line
    assert hidden(tmp_path) == [] and read_spec(out)["produced_by"]["pipeline"][
        "categorical_ops"]["min_freq"] == 1  # the earlier output is untouched
    np.testing.assert_array_equal(arrays(out)["train"][1], before["train"][1])
    monkeypatch.undo()

    def polars_full(self, *a, **k):  # Polars says it in the text only: "(os error 28)"
        raise OSError("No space left on device (os error 28)")

    monkeypatch.setattr(pl.DataFrame, "write_ipc", polars_full)
    monkeypatch.setattr(pl.DataFrame, "write_parquet", polars_full)
    rc, err = cli([p, "-o", out, "-q"], capsys)
    assert rc == 2
    one_error(err, "no space left on the device writing", str(tmp_path / ".o.tmp-"))
    assert hidden(tmp_path) == []


def test_too_little_space_is_refused_before_writing(tmp_path, data, capsys, monkeypatch):
    p, _ = data
    monkeypatch.setattr(P, "_free", lambda path: 100)
    rc, err = cli([p, "-o", tmp_path / "o"], capsys)
    assert rc == 2
    one_error(err, f"not enough space in {tmp_path}", "need about", "100 B is free")


def test_broken_config_yaml_is_one_error_line(tmp_path, data, capsys):
    y = tmp_path / "avazu.yaml"
    y.write_text("schema: {columns: [a, b]\n  label: a\n")
    rc, err = cli([data[0], "-o", tmp_path / "o", "--config", y], capsys)
    assert rc == 2
    one_error(err, f"--config {y}: not a valid YAML file")


def test_programming_errors_still_surface(tmp_path, data, monkeypatch):
    p, _ = data

    def broken(*a, **k):
        raise KeyError("bug")

    monkeypatch.setattr(P, "write_splits", broken)
    with pytest.raises(KeyError):
        main([str(p), "-o", str(tmp_path / "o")])
    assert hidden(tmp_path) == []


# ------------------------------------------------------------------ 4. labels are 0 or 1
def test_labels_other_than_0_and_1_are_bad_rows(tmp_path, data, capsys):
    _, lines = data
    wrong = {3: "-1", 10: "2", 20: "7"}  # 1-based line -> label
    edited = [(wrong[i] + x[1:]) if i in wrong else x for i, x in enumerate(lines, 1)]
    p = tmp_path / "labels.tsv"
    p.write_text("\n".join(edited) + "\n")
    rc, _ = cli([p, "-o", tmp_path / "o", "-q", "--split", "none"], capsys)
    assert rc == 0
    sp = open_split(tmp_path / "o", "train")
    want = [int(x[0]) for i, x in enumerate(lines, 1) if i not in wrong]
    np.testing.assert_array_equal(sp.label, want)
    q = (tmp_path / "o" / "quarantine.tsv").read_text().splitlines()[1:]
    assert [(r.split("\t")[1], r.split("\t")[2]) for r in q] == \
        [(str(i), "label:bad_label") for i in sorted(wrong)]


# ------------------------------------------------------------------ 5. temporaries of killed runs
SLOW_RUN = """
import sys, time
import dlrmx.preprocess.polars_engine as pe
parse = pe.PolarsEngine.parse
def slow(*a, **k):
    r = parse(*a, **k)
    print("parsed", flush=True)
    time.sleep(120)
    return r
pe.PolarsEngine.parse = slow
from dlrmx.preprocess.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_temporaries_of_killed_runs_are_removed_live_ones_kept(tmp_path, data, capsys):
    p, _ = data
    out = tmp_path / "o"
    child = subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(p), "-o", str(out), "-q"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "parsed"  # mid-run, its temporary on disk
        live = [q for q in tmp_path.iterdir() if q.name.startswith(".o.tmp-")]
        assert len(live) == 1 and f"-{child.pid}-" in live[0].name
        # A run into the same output while the other one lives leaves its temporary alone.
        assert cli([p, "-o", out], capsys)[0] == 0
        assert live[0].is_dir()
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert live[0].is_dir() and (live[0] / "_work" / "parsed").is_dir()  # SIGKILL left it
    stale_old = tmp_path / f".o.old-{atomic._host()}-{dead_pid()}-0123abcd"  # killed mid-replace
    (stale_old / "x").mkdir(parents=True)
    legacy = tmp_path / ".o.tmp-89abcdef"  # an older version's name: no owner to check
    foreign = tmp_path / ".o.tmp-otherhost-1-89abcdef"
    legacy.mkdir()
    foreign.mkdir()
    unrelated = tmp_path / ".other.tmp-x-1-89abcdef"
    unrelated.mkdir()
    rc = main([str(p), "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert not live[0].exists() and not stale_old.exists()
    assert legacy.is_dir() and foreign.is_dir() and unrelated.is_dir()
    assert "removed temporaries of earlier runs that were killed" in text
    assert str(live[0]) in text and str(stale_old) in text and str(legacy) in text
    rep = (out / "report.json").read_text()
    assert str(live[0]) in rep and str(foreign) in rep


# ------------------------------------------------------------------ 6. flags
@pytest.mark.parametrize("argv,msg", [
    (["-o", "a", "-o", "b"], "error: -o/--output given twice (a and b)"),
    (["-o", "a", "--output", "b"], "error: -o/--output given twice (a and b)"),
    (["-o", "a", "--preset", "criteo-kaggle", "--preset", "criteo-terabyte"],
     "error: --preset given twice (criteo-kaggle and criteo-terabyte)"),
    (["-o", "a", "--min-freq", "1", "--min-freq", "2"], "error: --min-freq given twice (1 and 2)"),
    (["-o", "a", "--min-fre", "2"], "error: unrecognized argument --min-fre (did you mean --min-freq?)"),
    (["-o", "a", "--engin=polars"], "error: unrecognized argument --engin (did you mean --engine?)"),
])
def test_repeated_and_unknown_flags(tmp_path, data, capsys, monkeypatch, argv, msg):
    p, _ = data
    monkeypatch.chdir(tmp_path)  # "a" and "b" are relative output paths
    rc, err = cli([p, *argv], capsys)
    assert rc == 2 and one_error(err).startswith(msg)
    assert not Path("a").exists() and not Path("b").exists()


def test_repeatable_flags_and_a_subprocess_error(tmp_path, data):
    a = build_parser().parse_args(["x", "-o", "y", "--spark-conf", "a=1", "--spark-conf", "b=2"])
    assert a.spark_conf == ["a=1", "b=2"]
    r = subprocess.run(PY + [str(data[0]), "-o", str(tmp_path / "o"), "--min-freq", "1",
                             "--min-freq", "2"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.splitlines() == [
        "error: --min-freq given twice (1 and 2): give it once"]
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ 7. the reference DLRM
def test_max_ind_range_off_as_the_reference(tmp_path, data, capsys):
    p, _ = data
    assert cli([p, "-o", tmp_path / "plain", "-q"], capsys)[0] == 0
    for v in ("-1", "0"):
        assert cli([p, "-o", tmp_path / v, "-q", "--max-ind-range", v], capsys)[0] == 0
        assert_same_output(tmp_path / v, tmp_path / "plain")
        assert read_spec(tmp_path / v)["produced_by"]["pipeline"]["categorical_ops"][
            "max_ind_range"] == 0
    assert cli([p, "-o", tmp_path / "m", "-q", "--max-ind-range", "3"], capsys)[0] == 0
    assert max(read_spec(tmp_path / "m")["table_sizes"]) <= 4  # 3 keys + the reserved id


@needs_data
def test_preprocess_reference_kaggle(tmp_path):
    raw = tmp_path / "input" / "train.txt"
    raw.parent.mkdir()
    shutil.copy(KAGGLE_HEAD, raw)
    out = preprocess_reference("kaggle", str(raw), str(tmp_path / "k"), -1, False)
    assert out == (tmp_path / "k").resolve()
    lines = KAGGLE_HEAD.read_text().splitlines()
    ref = reference_dlrm_mapping(lines)
    spec = read_spec(out)
    assert spec["table_sizes"] == [len(d) + 1 for d in ref]
    days = np.array_split(np.arange(len(lines)), 7)
    assert spec["rows"] == {"train": sum(map(len, days[:-1])), "val": len(days[-1]) // 2,
                            "test": len(days[-1]) - len(days[-1]) // 2}
    got = np.concatenate([open_split(out, s).sparse for s in ("train", "test", "val")])
    want = [[ref[j][int((x.split("\t") + [""] * 40)[14 + j] or "0", 16)] for j in range(26)]
            for x in lines]
    np.testing.assert_array_equal(got, want)
    m = preprocess_reference("kaggle", raw, tmp_path / "m", 100, False)
    assert max(read_spec(m)["table_sizes"]) <= 101
    with pytest.raises(InputError, match="--raw-data-file .*nope.txt: no such file"):
        preprocess_reference("kaggle", tmp_path / "nope.txt", tmp_path / "x", -1, False)
    with pytest.raises(ValueError, match="--data-set 'avazu'"):
        preprocess_reference("avazu", raw, tmp_path / "x", -1, False)


@needs_data
def test_preprocess_reference_terabyte_few_days(tmp_path):
    lines = KAGGLE_HEAD.read_text().splitlines()
    parts = [lines[:400], lines[400:700], lines[700:]]
    d = tmp_path / "input"
    d.mkdir()
    (d / "day_0").write_text("\n".join(parts[0]) + "\n")
    (d / "day_1.gz").write_bytes(gzip.compress(("\n".join(parts[1]) + "\n").encode()))
    (d / "day_2").write_text("\n".join(parts[2]) + "\n")
    (d / "day_10_notes.txt").write_text("not a day\n")
    assert I.reference_day_files(d / "day") == [d / "day_0", d / "day_1.gz", d / "day_2"]
    out = preprocess_reference("terabyte", str(d / "day"), str(tmp_path / "tb"), -1, False)
    spec = read_spec(out)
    assert spec["rows"] == {"train": 700, "test": 150, "val": 150}  # day_2 halved
    assert [i["rows"] for i in spec["produced_by"]["inputs"]] == [400, 300, 300]
    labels = {s: open_split(out, s).label for s in SPLITS}
    np.testing.assert_array_equal(labels["train"], [int(x[0]) for x in lines[:700]])
    np.testing.assert_array_equal(labels["test"], [int(x[0]) for x in lines[700:850]])
    np.testing.assert_array_equal(labels["val"], [int(x[0]) for x in lines[850:]])
    (d / "day_2").unlink()  # two days: day_0 train, day_1 halved
    spec = read_spec(preprocess_reference("terabyte", d / "day", tmp_path / "tb2", -1, False))
    assert spec["rows"] == {"train": 400, "test": 150, "val": 150}
    (d / "day_0").unlink()
    with pytest.raises(InputError, match=r"day_0 is missing"):
        preprocess_reference("terabyte", d / "day", tmp_path / "x", -1, False)
    with pytest.raises(InputError, match=r"--raw-data-file .*/nope: no day files .*nope_0"):
        preprocess_reference("terabyte", d / "nope", tmp_path / "x", -1, False)
    shutil.copy(KAGGLE_HEAD, d / "day_0")
    with pytest.raises(PreprocessError, match="contains the input"):  # never SystemExit
        preprocess_reference("terabyte", d / "day", d, -1, False)


@pytest.mark.parametrize("ops,msg", [
    ("  - categorify: {min_freq: two}\n", "categorical_ops.min_freq must be an integer, got str"),
    ("  - row_order: {order: shuffle_all, seed: x}\n", "row_order.seed must be an integer"),
    ("  - hex_to_int: {max_ind_range: -5}\n", "max_ind_range must be > 0, or 0 / -1 for off"),
])
def test_pipeline_values_of_the_wrong_type_are_one_error_line(tmp_path, data, capsys, ops, msg):
    p, _ = data
    cfg = tmp_path / "p.yaml"
    cfg.write_text("preset: criteo-kaggle\noperations:\n" + ops)
    rc, err = cli([p, "-o", tmp_path / "o", "--config", cfg], capsys)
    assert rc == 2
    one_error(err, msg)
