"""--preset mlperf-dlrmv2: MLPerf's options under the ones given, fitted to memory (the
available bytes injected), and a short DLRMv2 run end to end."""

import json

import pytest

from dlrmx.train import TrainConfig, presets, run
from dlrmx.train.config import parse_cli


def test_preset_gives_mlperf_options_and_flags_override():
    cfg, _ = parse_cli(["--preset", "mlperf-dlrmv2", "--learning-rate", "0.01"])
    assert (cfg.arch_interaction_op, cfg.dcn_num_layers, cfg.dcn_low_rank_dim) == ("dcn", 3, 512)
    assert (cfg.arch_sparse_feature_size, cfg.arch_mlp_bot, cfg.arch_mlp_top) == \
        (128, "13-512-256-128", "1024-1024-512-256-1")
    assert cfg.multi_hot_sizes == "mlperf" and cfg.optimizer == "rowwise_adagrad"
    assert cfg.mini_batch_size == 65536 and cfg.mlperf_auc_threshold == 0.80275
    assert cfg.learning_rate == 0.01  # given: not the preset's 0.005
    assert cfg.preset_fixed == ""
    cfg, _ = parse_cli(["--preset", "mlperf-dlrmv2", "--mini-batch-size", "4096"])
    assert cfg.mini_batch_size == 4096 and cfg.preset_fixed == "mini_batch_size"


def test_unknown_preset_is_one_named_error():
    with pytest.raises(ValueError, match="--preset must be one of"):
        TrainConfig.from_dict({"preset": "mlperf-v9"})


def _fake_estimate(cfg):
    """Bytes: 1 GiB of tables at scale 1 plus 10 KiB per sample of the batch."""
    return cfg.synthetic_scale * 2**30 + cfg.mini_batch_size * 10240


def test_fit_halves_the_batch_then_the_tables_and_says_so(capsys):
    cfg = TrainConfig.from_dict({"preset": "mlperf-dlrmv2"}).validate()
    notes = presets.fit(cfg, _fake_estimate, available=int(0.5 * 2**30))
    assert cfg.mini_batch_size == presets.MIN_BATCH  # 65536 -> 2048 first
    assert cfg.synthetic_scale < 1 and _fake_estimate(cfg) <= presets.FIT_FRACTION * 0.5 * 2**30
    assert cfg.synthetic_scale * 2 * 2**30 + 2048 * 10240 > presets.FIT_FRACTION * 0.5 * 2**30
    assert notes and "batch 2048 instead of MLPerf's 65536" in notes[0]
    assert f"tables scaled to {cfg.synthetic_scale:g}" in capsys.readouterr().err


def test_fit_leaves_what_the_user_gave_and_what_fits():
    cfg = TrainConfig.from_dict({"preset": "mlperf-dlrmv2", "mini_batch_size": 32768}).validate()
    presets.fit(cfg, _fake_estimate, available=int(0.5 * 2**30))
    assert cfg.mini_batch_size == 32768  # given: only the tables shrink
    cfg = TrainConfig.from_dict({"preset": "mlperf-dlrmv2"}).validate()
    assert presets.fit(cfg, _fake_estimate, available=2**40) == []
    assert cfg.mini_batch_size == 65536 and cfg.synthetic_scale == 1.0
    plain = TrainConfig().validate()
    assert presets.fit(plain, _fake_estimate, available=1) == []  # no preset: nothing changes


def test_dlrmv2_preset_trains_end_to_end(tmp_path):
    res = run(dict(preset="mlperf-dlrmv2", mini_batch_size=128, synthetic_scale=1e-4,
                   dcn_low_rank_dim=32, arch_mlp_top="64-32-1", num_batches=60, eval_samples=2048,
                   test_freq=30, run_dir=str(tmp_path / "run"), progress=False, plots=False,
                   checkpoint_freq=0))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["arch_interaction_op"] == "dcn" and saved["multi_hot_sizes"] == "mlperf"
    assert saved["precision"] in ("fp32", "bf16")
    # the preset keeps MLPerf's target (AUC 0.80275): the synthetic data can reach it
    assert res.stopped in ("completed", "auc_threshold") and res.final["test"]["auc"] > 0.6, res.final
