"""dlrmx.nn.EmbeddingBag where torch.nn.EmbeddingBag users go next: bf16 weights, the meta
device, strict state_dict loading both ways with a fused optimizer, sparse gradients under DDP."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import dlrmx.nn as dn

BF16_ULP = 2.0 ** -7  # relative spacing of bf16 values (8 significant bits)


def bags(rows: int, batch: int, per_bag: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, rows, (batch * per_bag,), generator=g)
    return ids, torch.arange(0, batch * per_bag, per_bag)


def exact_pool(weight: torch.Tensor, ids, offsets, mode: str) -> torch.Tensor:
    """float64 pooling of the stored values: the exact answer to round once."""
    ends = torch.cat([offsets[1:], torch.tensor([ids.numel()])])
    rows = [weight.double()[ids[a:b]] for a, b in zip(offsets.tolist(), ends.tolist())]
    return torch.stack([r.sum(0) if mode == "sum" else r.mean(0) for r in rows])


def exact_grad(weight, ids, offsets, mode: str, grad_out) -> torch.Tensor:
    per_bag = int(offsets[1] - offsets[0])
    scale = 1.0 if mode == "sum" else 1.0 / per_bag
    g = torch.zeros(weight.shape, dtype=torch.float64)
    g.index_add_(0, ids, grad_out.double().repeat_interleave(per_bag, 0) * scale)
    return g


@pytest.mark.parametrize("how", ["dtype", "to"])
@pytest.mark.parametrize("mode", ["sum", "mean"])
@pytest.mark.parametrize("sparse", [False, True])
def test_bf16_weights_give_bf16_output_and_gradients_like_torch(how, mode, sparse):
    kw = dict(mode=mode, sparse=sparse, **({"dtype": torch.bfloat16} if how == "dtype" else {}))
    ref, ours = torch.nn.EmbeddingBag(40, 16, **kw), dn.EmbeddingBag(40, 16, **kw)
    if how == "to":
        ref, ours = ref.to(torch.bfloat16), ours.to(torch.bfloat16)
    ours.load_state_dict(ref.state_dict())
    assert ours.weight.dtype == torch.bfloat16
    ids, offsets = bags(40, batch=12, per_bag=4, seed=1)
    want, got = ref(ids, offsets), ours(ids, offsets)
    assert got.dtype == want.dtype == torch.bfloat16
    exact = exact_pool(ours.weight.detach(), ids, offsets, mode)
    if mode == "sum":  # fp32 accumulation, one rounding: the correctly rounded bf16
        assert torch.equal(got, exact.to(torch.bfloat16))
    # torch rounds ties away from zero: at most one bf16 step apart
    torch.testing.assert_close(got.float(), want.float(), rtol=BF16_ULP, atol=1e-6)
    grad_out = torch.randn(want.shape).to(torch.bfloat16)
    want.backward(grad_out)
    got.backward(grad_out)
    g_ref, g_ours = ref.weight.grad, ours.weight.grad
    assert g_ours.dtype == g_ref.dtype == torch.bfloat16 and g_ours.is_sparse == g_ref.is_sparse == sparse
    g_exact = exact_grad(ours.weight, ids, offsets, mode, grad_out)
    if mode == "sum":
        assert torch.equal(g_ours.to_dense(), g_exact.to(torch.bfloat16))
    # torch accumulates the rows' gradients in bf16: off by a few steps of the summands' size
    scale = exact_grad(ours.weight, ids, offsets, mode, grad_out.abs()).float()
    diff = (g_ours.to_dense().float() - g_ref.to_dense().float()).abs()
    assert torch.all(diff <= 4 * BF16_ULP * scale + 1e-6)


def test_bf16_with_a_fused_optimizer_is_refused_with_the_way_out():
    with pytest.raises(NotImplementedError, match="SplitSGD"):
        dn.EmbeddingBag(10, 4, dtype=torch.bfloat16, optimizer=dn.SGD(lr=0.1))
    with pytest.raises(NotImplementedError, match="dtype"):
        dn.EmbeddingBag(10, 4, dtype=torch.float16)


OPTIMIZERS = [None, dn.SGD(lr=0.1), dn.SplitSGD(lr=0.1), dn.RowWiseAdagrad(lr=0.1), dn.Adagrad(lr=0.1)]


def fresh(opt):
    return None if opt is None else type(opt)(lr=0.1)


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: getattr(o, "name", "none"))
def test_meta_device_like_torch(opt):
    ours = dn.EmbeddingBag(12, 4, mode="sum", padding_idx=2, device="meta", optimizer=fresh(opt))
    ref = torch.nn.EmbeddingBag(12, 4, mode="sum", padding_idx=2, device="meta")
    assert ours.weight.is_meta and all(b.is_meta for b in ours.buffers())
    ids, offsets = torch.tensor([1, 2, 3, 5], device="meta"), torch.tensor([0, 2], device="meta")
    out = ours(ids, offsets)
    assert out.is_meta and out.shape == ref(ids, offsets).shape == (2, 4)
    assert ours(ids, offsets).dtype == ref(ids, offsets).dtype
    ours.to_empty(device="cpu")
    ours.reset_parameters()
    w = ours.fp32_weight()
    assert w.device.type == "cpu" and torch.isfinite(w).all() and 0.5 < w.std() < 1.5  # N(0, 1)
    assert torch.all(w[2] == 0)
    for name, state in ours.optimizer_state_dict().items():
        assert torch.equal(state, torch.zeros_like(state)), name  # initial_accumulator_value
    check = torch.nn.EmbeddingBag(12, 4, mode="sum", padding_idx=2)
    check.load_state_dict({"weight": ours.weight.detach().float()})  # what forward reads (split-SGD: bf16)
    cpu_ids, cpu_offsets = torch.tensor([1, 2, 3, 5]), torch.tensor([0, 2])
    torch.testing.assert_close(ours(cpu_ids, cpu_offsets), check(cpu_ids, cpu_offsets))


def test_meta_bf16_keeps_dtype():
    ours = dn.EmbeddingBag(8, 4, dtype=torch.bfloat16, device="meta")
    out = ours(torch.tensor([[1, 2]], device="meta"))
    assert out.is_meta and out.dtype == torch.bfloat16 and out.shape == (1, 4)


def train(bag, seeds):
    for s in seeds:
        ids, offsets = bags(30, batch=6, per_bag=3, seed=s)
        bag(ids, offsets).square().sum().backward()


@pytest.mark.parametrize("opt", OPTIMIZERS[1:], ids=lambda o: o.name)
def test_strict_state_dict_both_ways_with_a_fused_optimizer(opt):
    ours = dn.EmbeddingBag(30, 8, mode="sum", optimizer=fresh(opt))
    train(ours, [0, 1])
    assert list(ours.state_dict()) == ["weight"] and ours.state_dict()["weight"].dtype == torch.float32
    ref = torch.nn.EmbeddingBag(30, 8, mode="sum")
    ref.load_state_dict(ours.state_dict())  # strict: no extra key
    assert torch.equal(ref.weight, ours.fp32_weight())  # split-SGD: the trail too, bit for bit
    back = dn.EmbeddingBag(30, 8, mode="sum", optimizer=fresh(opt))
    back.load_state_dict(ref.state_dict())  # strict: nothing missing
    assert torch.equal(back.fp32_weight(), ours.fp32_weight())
    want_keys = {"optimizer_state"} if opt.name in ("rowwise_adagrad", "adagrad") else set()
    assert set(ours.optimizer_state_dict()) == want_keys
    back.load_optimizer_state_dict(ours.optimizer_state_dict())
    train(ours, [2, 3])
    train(back, [2, 3])
    assert torch.equal(back.fp32_weight(), ours.fp32_weight())
    for key, value in ours.optimizer_state_dict().items():
        assert torch.equal(back.optimizer_state_dict()[key], value)
    with pytest.raises(ValueError, match="expected the keys"):
        back.load_optimizer_state_dict({"nope": torch.zeros(1)})


# ---- DDP --------------------------------------------------------------------------------------

def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One rank: torch's and dlrmx's sparse EmbeddingBag (same weights) under DDP, two SGD
    steps on this rank's batch; saves the losses, the all-reduced gradients and the local ones."""
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=60))
    torch.manual_seed(0)
    ref = torch.nn.EmbeddingBag(30, 8, mode="sum", sparse=True)
    ours = dn.EmbeddingBag(30, 8, mode="sum", sparse=True)
    ours.load_state_dict(ref.state_dict())
    models = {"ref": torch.nn.parallel.DistributedDataParallel(ref),
              "ours": torch.nn.parallel.DistributedDataParallel(ours)}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.1) for k, m in models.items()}
    result = {"loss": {k: [] for k in models}, "grad": {k: [] for k in models}, "local": []}
    for step in range(2):
        ids, offsets = bags(30, batch=5, per_bag=3, seed=100 * step + rank)
        local = torch.nn.EmbeddingBag(30, 8, mode="sum", sparse=True)
        local.load_state_dict(ref.state_dict())
        local(ids, offsets).square().sum().backward()
        result["local"].append(local.weight.grad.to_dense())
        for k, m in models.items():
            opts[k].zero_grad()
            loss = m(ids, offsets).square().sum()
            loss.backward()
            result["loss"][k].append(loss.item())
            grad = m.module.weight.grad
            assert grad.is_sparse, k
            result["grad"][k].append(grad.to_dense())
            opts[k].step()
    result["weight"] = {k: m.module.weight.detach().clone() for k, m in models.items()}
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def _run_ranks(world: int, tmp_path, limit_s: float = 90.0) -> list[dict]:
    ctx = mp.start_processes(_ddp_worker, args=(world, str(tmp_path / "rendezvous"), str(tmp_path)),
                             nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + limit_s
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                pytest.fail(f"DDP ranks still running after {limit_s:.0f} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]


def test_sparse_gradients_under_ddp_like_torch(tmp_path):
    """Two gloo ranks over loopback: DDP averages dlrmx's sparse gradients as torch's, and SGD
    on them trains both models alike."""
    ranks = _run_ranks(2, tmp_path)
    for r in ranks:
        for step in range(2):
            torch.testing.assert_close(r["grad"]["ours"][step], r["grad"]["ref"][step])
            assert r["loss"]["ours"][step] == pytest.approx(r["loss"]["ref"][step], rel=1e-6)
        torch.testing.assert_close(r["weight"]["ours"], r["weight"]["ref"])
    # the gradients were really averaged across the ranks (whose batches differ)
    mean_local = (ranks[0]["local"][0] + ranks[1]["local"][0]) / 2
    assert not torch.equal(ranks[0]["local"][0], ranks[1]["local"][0])
    for r in ranks:
        torch.testing.assert_close(r["grad"]["ours"][0], mean_local)
