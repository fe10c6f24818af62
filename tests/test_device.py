"""--device and the parts of the CUDA path that run without a GPU: the dense optimizers' torch
implementations (the ops' CUDA kernels) against the native CPU kernels, and the clear errors of
every device combination that cannot run. tests/test_cuda.py holds the checks that need a GPU."""

import pytest
import torch

from dlrmx import cuda, native_ops, ops
from dlrmx.nn.sparse_optim import combine_fp32, split_fp32
from dlrmx.optim import steps
from dlrmx.train import TrainConfig, device, run
from dlrmx.train.__main__ import main
from dlrmx.train.config import parse_cli

SHAPES = [(37, 13), (1,), (0, 5), (129, 64), (3, 1000)]  # odd sizes, an empty and a long tensor


def _tensors(seed, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=g) * scale).to(dtype) for s in SHAPES]


@pytest.mark.parametrize("weight_decay,max_weight_norm,bias_correction",
                         [(0.0, 10.0, True), (0.01, 0.0, False), (0.1, 0.5, True)])
def test_torch_lamb_equals_the_native_kernel(weight_decay, max_weight_norm, bias_correction):
    params = _tensors(0)
    params[1].zero_()  # a zero weight norm: trust ratio 1
    mine, theirs = [p.clone() for p in params], [p.clone() for p in params]
    moments = [[torch.zeros_like(p) for p in params] for _ in range(4)]
    for step in range(1, 4):
        grads = _tensors(step, scale=0.1)
        args = (1e-2, 0.9, 0.999, 1e-6, weight_decay, max_weight_norm, bias_correction, step)
        steps.lamb_step(mine, grads, moments[0], moments[1], *args)
        native_ops.EAGER.lamb_step(theirs, grads, moments[2], moments[3], *args)
    for a, b, m, n in zip(mine, theirs, moments[0], moments[2]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m, n, rtol=1e-6, atol=1e-7)
    assert not torch.equal(mine[0], params[0])  # the step moved the weights


@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.bfloat16])
def test_torch_split_sgd_equals_the_native_kernel(grad_dtype):
    fp32 = _tensors(1)
    halves = [split_fp32(p) for p in fp32]
    mine = [(u.clone(), t.clone()) for u, t in halves]
    theirs = [(u.clone(), t.clone()) for u, t in halves]
    for step in range(3):
        grads = _tensors(10 + step, grad_dtype)
        steps.split_sgd_step([u for u, _ in mine], [t for _, t in mine], grads, 0.37, 1e-3)
        native_ops.EAGER.split_sgd_step([u for u, _ in theirs], [t for _, t in theirs], grads,
                                        0.37, 1e-3)
    exact = total = 0
    for (u, t), (v, s), start in zip(mine, theirs, fp32):
        a, b = combine_fp32(u, t), combine_fp32(v, s)
        ulps = (a.view(torch.int32).long() - b.view(torch.int32).long()).abs()
        assert ulps.numel() == 0 or int(ulps.max()) <= 1  # a double rounding: one ulp
        exact, total = exact + int((ulps == 0).sum()), total + ulps.numel()
        assert a.numel() == 0 or not torch.equal(a, start)
    assert exact >= 0.999 * total


def test_the_torch_steps_name_a_bad_argument():
    p = [torch.zeros(3)]
    with pytest.raises(ValueError, match="exp_avg\\[0\\] must have shape \\[3\\]"):
        steps.lamb_step(p, p, [torch.zeros(4)], p, 0.1, 0.9, 0.99, 1e-6, 0, 0, True, 1)
    with pytest.raises(TypeError, match="params\\[0\\] must be torch.bfloat16"):
        steps.split_sgd_step(p, [torch.zeros(3, dtype=torch.int16)], p, 0.1, 0.0)
    with pytest.raises(ValueError, match="1 grads for 2 params"):
        steps.split_sgd_step([torch.zeros(3, dtype=torch.bfloat16)] * 2,
                             [torch.zeros(3, dtype=torch.int16)] * 2, p, 0.1, 0.0)


def _cfg(tmp_path, **kw):
    return TrainConfig(run_dir=str(tmp_path / "run"), progress=False, plots=False,
                       num_batches=4, synthetic_scale=0.0005, **kw)


@pytest.mark.parametrize("kw,match", [
    (dict(hot_device="cuda"), "--hot-device cuda puts the hot rows on the GPU.*add --device cuda"),
    (dict(device="cuda", hot_cache_budget="1M", hot_device="cpu"),
     "keeps the tables in host memory.*--hot-device cuda"),
    (dict(device="tpu"), "--device must be one of"),
])
def test_device_combinations_that_cannot_run_are_named(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _cfg(tmp_path, **kw).validate()


def test_hot_device_follows_device():
    assert TrainConfig(hot_cache_budget="1M").validate().hot_tier == "cpu"
    assert TrainConfig(device="cuda", hot_cache_budget="1M").validate().hot_tier == "cuda"
    assert TrainConfig(device="cuda", hot_cache_budget="1M",
                       hot_device="none").validate().hot_tier == "none"


def test_several_processes_refuse_the_gpu():
    with pytest.raises(ValueError, match="--device cuda trains in one process"):
        device.target(TrainConfig(device="cuda").validate(), distributed=True)


@pytest.mark.skipif(cuda.available(), reason="this machine can train on CUDA")
def test_cuda_without_kernels_or_gpu_is_a_clear_error_before_any_work(tmp_path, capsys):
    with pytest.raises(ValueError, match="--device cuda needs dlrmx's CUDA kernels and a GPU"):
        run(_cfg(tmp_path, device="cuda"))
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert main(["--device", "cuda", f"--run-dir={tmp_path / 'cli'}"]) == 2  # one error line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --device cuda needs"), err
    cfg, notes = parse_cli(["--use-gpu"])  # the reference falls back to the CPU, and so do we
    assert cfg.device == "cpu" and any(n.startswith("--use-gpu") for n in notes)


@pytest.mark.skipif(cuda.available(), reason="this machine has CUDA kernels")
def test_ids_off_the_cpu_need_the_cuda_kernels():
    w = [torch.zeros(4, 2)]
    off = torch.tensor([0, 1])
    with pytest.raises(TypeError, match="ids must be on the CPU or a CUDA device, got meta"):
        ops.embedding_bags(w, torch.zeros(1, dtype=torch.int64, device="meta"), off, 1)


def test_cpu_batches_are_not_copied():
    from dlrmx.data.loader import Batch

    b = Batch(torch.zeros(2, 13), torch.zeros(4, dtype=torch.int64), torch.arange(5),
              torch.zeros(2))
    assert device.to_device(b, TrainConfig().validate(), torch.device("cpu")) is b
    assert not device.host_tables(TrainConfig(hot_cache_budget="1M").validate())
    assert device.host_tables(TrainConfig(device="cuda", hot_cache_budget="1M").validate())

