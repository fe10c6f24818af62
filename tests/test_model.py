"""dlrmx.models.DLRM vs the plain-PyTorch reference DLRM (bench/dlrm_reference.py), same weights."""

import pytest
import torch

import dlrmx.nn as dnn
from dlrm_reference import ReferenceDLRM, split_batch
from dlrmx.models import DLRM

TABLES = [7, 50, 3, 20]


def _batch(b=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    dense = torch.rand(b, 5, generator=g)
    sparse = torch.stack([torch.randint(0, n, (b,), generator=g) for n in TABLES], 1)
    label = torch.randint(0, 2, (b,), generator=g).float()
    return dense, sparse, label


def _jagged(sparse):
    values = sparse.t().contiguous().view(-1)
    offsets = torch.arange(values.numel() + 1)
    return values, offsets


@pytest.mark.parametrize("interaction", ["dot", "cat"])
def test_outputs_and_one_sgd_step_match_reference(interaction):
    lr = 0.5
    model = DLRM(TABLES, 4, [5, 8, 4], [6, 1], interaction=interaction,
                 sparse_optimizer=dnn.SGD(lr), seed=3)
    ref = ReferenceDLRM(TABLES, 4, [5, 8, 4], [6, 1], interaction=interaction)
    ref.load_from_dlrmx(model)
    dense, sparse, label = _batch()
    values, offsets = _jagged(sparse)
    ids, offs = split_batch(sparse)

    logit = model(dense, values, offsets)
    p_ref = ref(dense, ids, offs).squeeze(1)
    torch.testing.assert_close(torch.sigmoid(logit), p_ref, rtol=1e-5, atol=1e-6)

    loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, label)
    opt = torch.optim.SGD(model.dense_parameters(), lr=lr)
    opt.zero_grad()
    loss.backward()
    opt.step()
    ref_loss = torch.nn.BCELoss()(p_ref, label)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=lr)
    ref_opt.zero_grad()
    ref_loss.backward()
    ref_opt.step()

    for a, b in zip(model.dense_parameters(), [p for m in (ref.bot_l, ref.top_l) for p in m.parameters()]):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
    for w, eb in zip(model.embeddings.fp32_weights(), ref.emb_l):
        torch.testing.assert_close(w, eb.weight.detach(), rtol=1e-5, atol=1e-6)
    # the step changed something: the comparison is not vacuous
    assert not torch.equal(model.embeddings.fp32_weights()[1], ReferenceDLRM(TABLES, 4, [5, 8, 4], [6, 1]).emb_l[1].weight)


def _train(precision, steps=40, lr=0.3):
    opt_cls = dnn.SplitSGD if precision == "bf16" else dnn.SGD
    model = DLRM(TABLES, 4, [5, 8, 4], [6, 1], sparse_optimizer=opt_cls(lr), seed=1)
    dense, sparse, label = _batch(64)
    values, offsets = _jagged(sparse)
    opt = torch.optim.SGD(model.dense_parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logit = model(dense, values, offsets)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit.float(), label)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_bf16_autocast_with_split_sgd_tracks_fp32():
    fp32, bf16 = _train("fp32"), _train("bf16")
    assert fp32[-1] < 0.9 * fp32[0]
    assert bf16[-1] < 0.9 * bf16[0]
    assert abs(bf16[-1] - fp32[-1]) < 0.05


def test_arch_mismatch_names_flags():
    with pytest.raises(ValueError, match="--arch-mlp-bot.*--arch-sparse-feature-size"):
        DLRM(TABLES, 4, [5, 8, 3], [6, 1])


def test_dlrmv2_dcn_multi_hot_matches_plain_pytorch_forward_and_sgd_steps():
    """DLRMv2's shape (DCN cross layers, multi-hot bags of different sizes per table) against
    the plain-PyTorch reference with the same weights: outputs and three SGD steps."""
    from dlrmx.data.loader import make_batch

    sizes, bags, lr, b = [7, 50, 3, 20], [3, 1, 5, 2], 0.1, 13
    model = DLRM(sizes, 4, [5, 8, 4], [6, 1], interaction="dcn", dcn_num_layers=2,
                 dcn_low_rank_dim=3, sparse_optimizer=dnn.SGD(lr), seed=5)
    ref = ReferenceDLRM(sizes, 4, [5, 8, 4], [6, 1], interaction="dcn", dcn_num_layers=2,
                        dcn_low_rank_dim=3)
    ref.load_from_dlrmx(model)
    with torch.no_grad():  # non-zero biases: the test must see them
        for p in model.crossnet.bias:
            p.normal_()
        for a, p in zip(ref.cross_b, model.crossnet.bias):
            a.copy_(p)
    opt = torch.optim.SGD(model.dense_parameters(), lr=lr)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        dense = torch.rand(b, 5, generator=g)
        wide = torch.cat([torch.randint(0, n, (b, k), generator=g) for n, k in zip(sizes, bags)], 1)
        label = torch.randint(0, 2, (b,), generator=g).float()
        batch = make_batch(dense.numpy(), wide.int().numpy(), label.numpy(), bag_sizes=bags)
        cols = torch.cumsum(torch.tensor([0] + bags), 0)
        ids = [wide[:, cols[t]:cols[t + 1]].reshape(-1) for t in range(len(sizes))]
        offs = [torch.arange(0, b * k, k) for k in bags]
        logit = model(batch.dense, batch.values, batch.offsets)
        p_ref = ref(dense, ids, offs).squeeze(1)
        torch.testing.assert_close(torch.sigmoid(logit), p_ref, rtol=1e-5, atol=1e-6)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, label)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ref_loss = torch.nn.BCELoss()(p_ref, label)
        ref_opt.zero_grad()
        ref_loss.backward()
        ref_opt.step()
    for w, eb in zip(model.embeddings.fp32_weights(), ref.emb_l):
        torch.testing.assert_close(w, eb.weight.detach(), rtol=1e-5, atol=1e-6)
    for a, r in zip(model.crossnet.W_kernels, ref.cross_w):
        torch.testing.assert_close(a.detach(), r.detach(), rtol=1e-5, atol=1e-6)
    assert not torch.equal(model.crossnet.bias[0].detach(), ref.cross_b[0].detach() * 0)
