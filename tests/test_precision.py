"""--precision auto: the rule with the CPU flags and the measurement injected, and what a run
records and keeps."""

import json

import pytest
import torch

from dlrmx.train import precision, run


def test_rule_without_native_bf16_is_fp32_whatever_the_timing():
    p, why = precision.choose(False, "this CPU has no native bf16 dot products", None)
    assert p == "fp32" and "no native bf16" in why


@pytest.mark.parametrize("fp32,bf16,want", [(10.0, 4.0, "bf16"), (10.0, 9.6, "fp32"),
                                            (10.0, 9.4, "bf16"), (5.0, 9.0, "fp32")])
def test_rule_takes_bf16_only_when_measured_faster_by_the_margin(fp32, bf16, want):
    p, why = precision.choose(True, "AVX512_BF16", {"fp32": fp32 / 1e3, "bf16": bf16 / 1e3})
    assert p == want
    assert f"bf16 {bf16:.1f} ms vs fp32 {fp32:.1f} ms" in why


def test_given_precision_is_not_measured(monkeypatch):
    monkeypatch.setattr(precision, "measure", lambda *a, **k: pytest.fail("measured"))
    assert precision.resolve("fp32", [[13, 4]], 64, False)["precision"] == "fp32"


def test_measure_times_both_precisions_at_the_model_shapes():
    t = precision.measure([[13, 32, 8], [20, 16, 1]], rows=64, autocast=False, reps=1)
    assert set(t) == {"fp32", "bf16"} and all(v > 0 for v in t.values())
    t = precision.measure([[13, 8]], rows=16, autocast=True, reps=1)  # LAMB/Adagrad: autocast
    assert t["bf16"] > 0


def _cfg(tmp_path, **kw):
    return dict(dict(num_batches=6, mini_batch_size=32, eval_samples=256, synthetic_scale=1e-4,
                     run_dir=str(tmp_path / "run"), progress=False, plots=False,
                     checkpoint_freq=3), **kw)


@pytest.mark.parametrize("native,times,want", [
    (False, None, "fp32"), (True, {"fp32": 2.0, "bf16": 1.0}, "bf16"),
    (True, {"fp32": 1.0, "bf16": 2.0}, "fp32")])
def test_auto_run_follows_the_rule_and_records_it(tmp_path, monkeypatch, capsys, native, times, want):
    monkeypatch.setattr(precision, "native_bf16", lambda: (native, "flags"))
    monkeypatch.setattr(precision, "measure", lambda *a, **k: times)
    run(_cfg(tmp_path))
    rec = json.loads((tmp_path / "run" / "precision.json").read_text())
    assert rec["requested"] == "auto" and rec["precision"] == want
    assert rec["gemms"] and all(g["forward"] in ("mkl", "onednn") for g in rec["gemms"])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == want
    assert f"precision: {want} (auto: " in capsys.readouterr().out
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["model"]["bottom.0.weight"].dtype == (torch.bfloat16 if want == "bf16" else torch.float32)


def test_resume_keeps_the_precision_chosen_first(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda: (True, "flags"))
    monkeypatch.setattr(precision, "measure", lambda *a, **k: {"fp32": 2.0, "bf16": 1.0})

    def stop(step):
        if step == 3:
            raise KeyboardInterrupt

    run(_cfg(tmp_path), on_step=stop)
    monkeypatch.setattr(precision, "measure", lambda *a, **k: pytest.fail("measured again"))
    res = run(_cfg(tmp_path, resume=True))
    assert res.stopped == "completed"
    assert json.loads((tmp_path / "run" / "precision.json").read_text())["precision"] == "bf16"
