"""dlrmx.nn.EmbeddingBagCollection as a drop-in for TorchRec's EmbeddingBagCollection: built
from EmbeddingBagConfig, KeyedJaggedTensor in, KeyedTensor out, TorchRec's state_dict keys,
inside torchrec.models.dlrm.DLRM, and fused training equal to FusedEmbeddingBagCollection.

TorchRec 1.8 is installed by ci/setup.sh (--no-deps, with fbgemm-gpu-cpu); without it these
tests skip, except the one that checks dlrmx never imports it."""

from __future__ import annotations

import subprocess
import sys
import warnings
from types import SimpleNamespace

import pytest
import torch

import dlrmx.nn as dn


@pytest.fixture(scope="module")
def tr():
    """The TorchRec modules the tests use (skips without TorchRec)."""
    try:  # fbgemm-gpu-cpu built for another torch fails to load with OSError, not ImportError
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fbgemm's own, at import
            from torchrec.models.dlrm import DLRM
            from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
            from torchrec.modules.embedding_modules import EmbeddingBagCollection
            from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
            from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"torchrec 1.8 not importable (ci/setup.sh installs it with torch 2.13): "
                    f"{type(e).__name__}: {e}")
    return SimpleNamespace(DLRM=DLRM, Config=EmbeddingBagConfig, Pooling=PoolingType,
                           EBC=EmbeddingBagCollection, FusedEBC=FusedEmbeddingBagCollection,
                           KJT=KeyedJaggedTensor, KT=KeyedTensor)


def configs(tr, features=(("f0",), ("f1",), ("f2",)), dim=8, pooling="SUM"):
    return [tr.Config(name=f"t{t}", embedding_dim=dim, num_embeddings=20 + 7 * t,
                      feature_names=list(f), pooling=getattr(tr.Pooling, pooling))
            for t, f in enumerate(features)]


def kjt(tr, keys, batch, rows, seed=0, weighted=False):
    """A random KJT (empty bags included) over `keys`, ids below `rows`."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 4, (len(keys) * batch,), generator=g)
    values = torch.randint(0, rows, (int(lengths.sum()),), generator=g)
    w = torch.rand(values.shape, generator=g) if weighted else None
    return tr.KJT(keys=list(keys), values=values, lengths=lengths, weights=w)


def pair(tr, features=(("f0",), ("f1",), ("f2",)), **kw):
    """TorchRec's EBC and dlrmx's built from the same configs, with TorchRec's weights."""
    ref = tr.EBC(tables=configs(tr, features), device=torch.device("cpu"))
    ours = dn.EmbeddingBagCollection(configs(tr, features), device=torch.device("cpu"), **kw)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def test_dlrmx_never_imports_torchrec():
    code = ("import sys, torch, dlrmx.nn as dn\n"
            "e = dn.EmbeddingBagCollection([(5, 2)])\n"
            "out = e(torch.tensor([1]), offsets=torch.tensor([0, 1]))\n"
            "assert out.shape == (1, 2)\n"
            "print(sorted(m for m in sys.modules if m.startswith(('torchrec', 'fbgemm'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("sparse", [False, True])
def test_kjt_in_keyed_tensor_out_equals_torchrec(tr, sparse):
    """Keys in another order plus an unused key, a table with two features, a feature that
    feeds two tables: same KeyedTensor and same gradients as TorchRec's EBC."""
    features = (("f0",), ("f1", "f2"), ("f0",))  # f0 feeds t0 and t2 -> keys f0@t0, f0@t2
    ref, ours = pair(tr, features, sparse=sparse)
    x = kjt(tr, ["f2", "zz", "f0", "f1"], batch=5, rows=20)
    want, got = ref(x), ours(x)
    assert isinstance(got, tr.KT)
    assert got.keys() == want.keys() == ["f0@t0", "f1", "f2", "f0@t2"]
    assert got.length_per_key() == want.length_per_key() == [8, 8, 8, 8]
    assert got.values().shape == (5, 32)
    torch.testing.assert_close(got.values(), want.values(), rtol=1e-6, atol=1e-6)
    grad = torch.randn(5, 32)
    want.values().backward(grad)
    got.values().backward(grad)
    for (name, p), (ours_name, q) in zip(ref.named_parameters(), ours.named_parameters(), strict=True):
        assert name == ours_name
        assert q.grad.is_sparse == sparse
        torch.testing.assert_close(q.grad.to_dense(), p.grad, rtol=1e-5, atol=1e-6)


def test_state_dict_keys_and_configs_match_torchrec(tr):
    ref, ours = pair(tr)
    keys = [f"embedding_bags.t{t}.weight" for t in range(3)]
    assert list(ours.state_dict()) == list(ref.state_dict()) == keys
    ours.embedding_bags["t1"].weight.data.add_(1.0)
    ref.load_state_dict(ours.state_dict(), strict=True)  # and back
    assert torch.equal(ref.embedding_bags["t1"].weight, ours.embedding_bags["t1"].weight)
    assert [c.name for c in ours.embedding_bag_configs()] == ["t0", "t1", "t2"]
    assert not ours.is_weighted() and ours.device == torch.device("cpu")


def test_weighted_kjt_and_mean_pooling(tr):
    cfg = configs(tr, pooling="MEAN")
    ref = tr.EBC(tables=cfg, device=torch.device("cpu"))
    ours = dn.EmbeddingBagCollection(configs(tr, pooling="MEAN"))
    ours.load_state_dict(ref.state_dict())
    x = kjt(tr, ["f0", "f1", "f2"], batch=4, rows=20)
    torch.testing.assert_close(ours(x).values(), ref(x).values(), rtol=1e-6, atol=1e-6)
    ref_w = tr.EBC(tables=configs(tr), is_weighted=True)
    ours_w = dn.EmbeddingBagCollection(configs(tr), True)  # TorchRec's positional is_weighted
    ours_w.load_state_dict(ref_w.state_dict())
    xw = kjt(tr, ["f0", "f1", "f2"], batch=4, rows=20, weighted=True)
    torch.testing.assert_close(ours_w(xw).values(), ref_w(xw).values(), rtol=1e-6, atol=1e-6)


def dlrm_pair(tr, ref_ebc, ours_ebc):
    """torchrec.models.dlrm.DLRM twice, the second with dlrmx's EBC swapped in, same weights."""
    torch.manual_seed(1)
    ref = tr.DLRM(embedding_bag_collection=ref_ebc, dense_in_features=6,
                  dense_arch_layer_sizes=[16, 8], over_arch_layer_sizes=[16, 1])
    ours = tr.DLRM(embedding_bag_collection=ours_ebc, dense_in_features=6,
                   dense_arch_layer_sizes=[16, 8], over_arch_layer_sizes=[16, 1])
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def test_inside_torchrec_dlrm_forward_and_backward(tr):
    ref, ours = dlrm_pair(tr, *pair(tr))
    dense = torch.randn(6, 6)
    x = kjt(tr, ["f0", "f1", "f2"], batch=6, rows=20, seed=3)
    want, got = ref(dense, x), ours(dense, x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    target = torch.rand(6, 1)
    for model, out in ((ref, want), (ours, got)):
        torch.nn.functional.binary_cross_entropy_with_logits(out, target).backward()
    grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("name", ["sgd", "rowwise_adagrad"])
def test_fused_training_equals_torchrec_fused_collection(tr, name):
    """A few DLRM training steps: dlrmx's fused optimizer in backward against TorchRec's
    FusedEmbeddingBagCollection (FBGEMM's EXACT_SGD / EXACT_ROWWISE_ADAGRAD), MLPs by SGD."""
    import torchrec.optim

    lr = 0.05
    ref_opt, ours_opt = {"sgd": (torch.optim.SGD, dn.SGD(lr=lr)),
                         "rowwise_adagrad": (torchrec.optim.RowWiseAdagrad,
                                             dn.RowWiseAdagrad(lr=lr, eps=1e-8))}[name]
    ref_ebc = tr.FusedEBC(tables=configs(tr), optimizer_type=ref_opt, optimizer_kwargs={"lr": lr},
                          device=torch.device("cpu"))
    ours_ebc = dn.EmbeddingBagCollection(configs(tr), optimizer=ours_opt)
    ours_ebc.load_state_dict(ref_ebc.state_dict(), strict=True)
    ref, ours = dlrm_pair(tr, ref_ebc, ours_ebc)
    before = [w.clone() for w in ours_ebc.fp32_weights()]
    dense_opts = [torch.optim.SGD([p for n, p in m.named_parameters() if "embedding_bags" not in n],
                                  lr=lr) for m in (ref, ours)]
    for step in range(3):
        dense = torch.randn(8, 6)
        x = kjt(tr, ["f0", "f1", "f2"], batch=8, rows=20, seed=10 + step)
        target = torch.rand(8, 1)
        losses = []
        for model, opt in zip((ref, ours), dense_opts):
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(dense, x), target)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[1] == pytest.approx(losses[0], rel=1e-5, abs=1e-6)
    ref_state = ref.state_dict()
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(value, ref_state[key], rtol=1e-5, atol=1e-6, msg=key)
    assert all(not torch.equal(a, b) for a, b in zip(ours_ebc.fp32_weights(), before))


@pytest.mark.parametrize("opt", [dn.SplitSGD(lr=0.1), dn.RowWiseAdagrad(lr=0.1)], ids=lambda o: o.name)
def test_fused_state_stays_out_of_the_state_dict(tr, opt):
    """As TorchRec's fused collection: only fp32 weights in the state_dict (split-SGD's trail
    included, exactly); the optimizer state round-trips through optimizer_state_dict()."""
    a = dn.EmbeddingBagCollection(configs(tr), optimizer=opt)
    x = kjt(tr, ["f0", "f1", "f2"], batch=4, rows=20)
    a(x).values().sum().backward()
    sd = a.state_dict()
    assert list(sd) == [f"embedding_bags.t{t}.weight" for t in range(3)]
    assert all(v.dtype == torch.float32 for v in sd.values())
    ref = tr.EBC(tables=configs(tr))
    ref.load_state_dict(sd, strict=True)
    b = dn.EmbeddingBagCollection(configs(tr), optimizer=type(opt)(lr=0.1))
    b.load_state_dict(ref.state_dict(), strict=True)
    b.load_optimizer_state_dict(a.optimizer_state_dict())
    for m in (a, b):
        m(kjt(tr, ["f0", "f1", "f2"], batch=4, rows=20, seed=5)).values().sum().backward()
    for wa, wb in zip(a.fp32_weights(), b.fp32_weights()):
        assert torch.equal(wa, wb)


def test_meta_device_then_materialize(tr):
    ebc = dn.EmbeddingBagCollection(configs(tr), device=torch.device("meta"),
                                    optimizer=dn.RowWiseAdagrad(lr=0.1))
    x = kjt(tr, ["f0", "f1", "f2"], batch=3, rows=20)
    out = ebc(x)
    assert out.values().device.type == "meta" and out.values().shape == (3, 24)
    ebc.to_empty(device="cpu")
    ebc.reset_parameters()
    for cfg, w in zip(ebc.embedding_bag_configs(), ebc.fp32_weights()):
        bound = (1 / cfg.num_embeddings) ** 0.5  # TorchRec's default init_fn: U(-bound, bound)
        assert w.abs().max() <= bound and w.std() > bound / 4
    assert all(torch.equal(s, torch.zeros_like(s)) for s in ebc.optimizer_state())
    ebc(x).values().sum().backward()  # trains once materialized


def test_refusals_are_clear(tr):
    with pytest.raises(NotImplementedError, match="table 't1' has 2 features"):
        dn.EmbeddingBagCollection(configs(tr, (("a",), ("b", "c"))), optimizer=dn.SGD(lr=0.1))
    mixed = configs(tr)
    mixed[1].pooling = tr.Pooling.MEAN
    with pytest.raises(NotImplementedError, match="different pooling"):
        dn.EmbeddingBagCollection(mixed)
    with pytest.raises(NotImplementedError, match="device='cuda'"):
        dn.EmbeddingBagCollection(configs(tr), device="cuda")
    ours = dn.EmbeddingBagCollection(configs(tr))
    with pytest.raises(ValueError, match="no feature 'f2'"):
        ours(kjt(tr, ["f0", "f1"], batch=2, rows=20))
    with pytest.raises(TypeError, match="built from dlrmx TableConfigs"):
        dn.EmbeddingBagCollection([(5, 2)]).embedding_bag_configs()


def test_native_collection_takes_a_kjt_keyed_by_table_name(tr):
    ebc = dn.EmbeddingBagCollection([(20, 4, "a"), (30, 4, "b")])
    x = kjt(tr, ["b", "a"], batch=3, rows=20)
    got = ebc(x)
    ordered = x.permute([1, 0])
    assert got.keys() == ["a", "b"]
    torch.testing.assert_close(got.values(), ebc(ordered.values(), offsets=ordered.offsets()))
