"""dlrmx.nn.EmbeddingBag against torch.nn.EmbeddingBag: values, gradients, SGD steps."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlrmx.nn as dn

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def cases(draw):
    rows = draw(st.sampled_from([1, 3, 17, 200]))  # few rows: many duplicate ids
    dim = draw(st.sampled_from([1, 3, 16, 17, 64, 128, 130]))
    mode = draw(st.sampled_from(["sum", "mean", "max"]))
    two_d = draw(st.booleans())
    batch = draw(st.integers(1 if two_d else 0, 6))
    if two_d:
        length = draw(st.integers(1, 5))  # torch itself fails on [B, 0] input
        lengths = [length] * batch
    else:
        lengths = draw(st.lists(st.integers(0, 7), min_size=batch, max_size=batch))
    return dict(
        rows=rows, dim=dim, mode=mode, two_d=two_d, lengths=lengths,
        index_dtype=draw(st.sampled_from([torch.int32, torch.int64])),
        padding_idx=draw(st.one_of(st.none(), st.integers(-rows, rows - 1))),
        include_last_offset=draw(st.booleans()) and not two_d,
        weighted=mode == "sum" and draw(st.booleans()),
        sparse=mode != "max" and draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


def make_inputs(c):
    g = torch.Generator().manual_seed(c["seed"])
    n = sum(c["lengths"])
    ids = torch.randint(0, c["rows"], (n,), generator=g, dtype=c["index_dtype"])
    if c["padding_idx"] is not None and n:  # make sure padding ids really occur
        ids[torch.rand(n, generator=g) < 0.3] = c["padding_idx"] % c["rows"]
    offsets = torch.tensor([0] + c["lengths"], dtype=c["index_dtype"]).cumsum(0).to(c["index_dtype"])
    if c["two_d"]:
        ids = ids.reshape(len(c["lengths"]), -1 if c["lengths"] and c["lengths"][0] else 0)
        offsets = None
    elif not c["include_last_offset"]:
        offsets = offsets[:-1]
    psw = torch.rand(ids.shape, generator=g) if c["weighted"] else None
    return ids, offsets, psw


def pair(c):
    kw = dict(mode=c["mode"], padding_idx=c["padding_idx"], sparse=c["sparse"],
              include_last_offset=c["include_last_offset"])
    ref = torch.nn.EmbeddingBag(c["rows"], c["dim"], **kw)
    ours = dn.EmbeddingBag(c["rows"], c["dim"], **kw)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@SETTINGS
@given(c=cases())
def test_forward_and_gradients_match_torch(isa, c):
    ref, ours = pair(c)
    ids, offsets, psw = make_inputs(c)
    psw_ref = psw_ours = None
    if psw is not None:
        psw_ref, psw_ours = psw.clone().requires_grad_(), psw.clone().requires_grad_()
    out_ref = ref(ids, offsets, psw_ref)
    out = ours(ids, offsets, psw_ours)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)

    grad = torch.randn_like(out_ref)
    out_ref.backward(grad)
    out.backward(grad)
    assert ours.weight.grad.is_sparse == ref.weight.grad.is_sparse
    to_dense = (lambda t: t.to_dense()) if c["sparse"] else (lambda t: t)
    torch.testing.assert_close(to_dense(ours.weight.grad), to_dense(ref.weight.grad), rtol=1e-5, atol=1e-5)
    if psw is not None:
        torch.testing.assert_close(psw_ours.grad, psw_ref.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_sgd_steps_match_torch_sparse_sgd(isa, mode):
    """torch sparse=True + optim.SGD == dlrmx (sparse grads + optim.SGD) == dlrmx fused SGD
    (max pooling: dense gradients, as torch has no sparse ones for it)."""
    rows, dim, lr = 50, 16, 0.5
    sparse = mode != "max"
    ref = torch.nn.EmbeddingBag(rows, dim, mode=mode, sparse=sparse)
    ours = dn.EmbeddingBag(rows, dim, mode=mode, sparse=sparse)
    fused = dn.EmbeddingBag(rows, dim, mode=mode, optimizer=dn.SGD(lr=lr))
    ours.load_state_dict(ref.state_dict())
    fused.load_state_dict(ref.state_dict())
    opt_ref = torch.optim.SGD(ref.parameters(), lr=lr)
    opt_ours = torch.optim.SGD(ours.parameters(), lr=lr)
    for step in range(5):
        ids = torch.randint(0, 10, (40,))  # heavy duplication within and across bags
        offsets = torch.tensor([0, 0, 7, 20, 21, 33])
        target = torch.randn(6, dim)
        for model, opt in ((ref, opt_ref), (ours, opt_ours), (fused, None)):
            if opt:
                opt.zero_grad()
            loss = ((model(ids, offsets) - target) ** 2).sum()
            loss.backward()
            if opt:
                opt.step()
        assert fused.weight.grad is None  # the fused path never stores a gradient
        torch.testing.assert_close(ours.weight, ref.weight, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fused.weight, ref.weight, rtol=1e-5, atol=1e-5)


def test_swapped_model_trains_identically():
    """A model built on torch.nn.EmbeddingBag trains the same after swapping in dlrmx's."""

    class Model(torch.nn.Module):
        def __init__(self, bag_cls):
            super().__init__()
            self.emb = bag_cls(100, 8, mode="sum", sparse=True)
            self.head = torch.nn.Linear(8, 1)

        def forward(self, ids, offsets):
            return self.head(self.emb(ids, offsets)).squeeze(1)

    ref, ours = Model(torch.nn.EmbeddingBag), Model(dn.EmbeddingBag)
    ours.load_state_dict(ref.state_dict())
    losses = {}
    for name, model in (("ref", ref), ("ours", ours)):
        torch.manual_seed(1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        losses[name] = []
        for _ in range(20):
            ids = torch.randint(0, 100, (64,))
            offsets = torch.arange(0, 64, 4)
            y = (ids.reshape(16, 4).sum(1) % 2).float()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(ids, offsets), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
    torch.testing.assert_close(torch.tensor(losses["ours"]), torch.tensor(losses["ref"]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.emb.weight, ref.emb.weight, rtol=1e-4, atol=1e-5)


def test_constructor_and_state_dict_match_torch():
    ref = torch.nn.EmbeddingBag(10, 4, padding_idx=-1)
    ours = dn.EmbeddingBag(10, 4, padding_idx=-1)
    assert ours.padding_idx == ref.padding_idx == 9
    assert ours.mode == ref.mode == "mean"
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["weight"]
    assert torch.all(ours.weight[9] == 0)
    pre = torch.randn(5, 3)
    frozen = dn.EmbeddingBag.from_pretrained(pre, mode="sum")
    assert not frozen.weight.requires_grad
    torch.testing.assert_close(frozen(torch.tensor([[0, 4]])), pre[[0, 4]].sum(0, keepdim=True))


@pytest.mark.parametrize("kwargs, name", [
    (dict(max_norm=1.0), "max_norm"),
    (dict(scale_grad_by_freq=True), "scale_grad_by_freq"),
    (dict(dtype=torch.float64), "dtype"),
])
def test_unsupported_arguments_are_named(kwargs, name):
    with pytest.raises(NotImplementedError, match=name):
        dn.EmbeddingBag(10, 4, **kwargs)


def test_max_mode_rejects_sparse_like_torch():
    with pytest.raises(ValueError, match="max mode does not support sparse"):
        dn.EmbeddingBag(10, 4, mode="max", sparse=True)


def test_2d_input_with_empty_bags_gives_zeros():
    # torch.nn.EmbeddingBag raises on a [B, 0] input; the natural answer is B empty bags.
    out = dn.EmbeddingBag(10, 4, mode="sum")(torch.zeros(3, 0, dtype=torch.long))
    assert torch.equal(out, torch.zeros(3, 4))


@pytest.mark.parametrize("opt", [dn.SplitSGD(lr=0.2), dn.RowWiseAdagrad(lr=0.2), dn.Adagrad(lr=0.2)],
                         ids=lambda o: o.name)
def test_drop_in_module_takes_every_fused_optimizer(opt):
    """dlrmx.nn.EmbeddingBag(optimizer=...) updates exactly as the collection with one table."""
    bag = dn.EmbeddingBag(30, 16, mode="sum", optimizer=opt)
    ebc = dn.EmbeddingBagCollection([(30, 16)], optimizer=type(opt)(lr=0.2))
    ebc.load_state_dict({"weights.0": bag.weight.detach().clone(),
                         **{f"state_0": b.clone() for b in bag.buffers()}})
    for step in range(3):
        ids = torch.randint(0, 30, (24,))
        offsets = torch.arange(0, 24, 4)
        grad = torch.randn(6, 16)
        bag(ids, offsets).backward(grad)
        ebc(ids, offsets=torch.cat([offsets, torch.tensor([24])])).backward(grad)
    assert torch.equal(bag.weight, ebc.weights[0])
    assert torch.equal(next(bag.buffers()), ebc.state_0)
