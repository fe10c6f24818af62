"""dlrmx's modules and ops under torch.compile (fullgraph, forward, backward and the fused update
in backward), torch.export, torch.fx.symbolic_trace and torch.jit.script.

Most compiles use the "aot_eager" backend: it runs Dynamo, AOTAutograd and functionalization
(where the op schemas, fake implementations and declared mutations matter) without Inductor's
code generation, so the file stays fast on two cores; the DLRM training test uses Inductor, the
default backend."""

import copy

import pytest
import torch
import torch._dynamo.testing

import dlrmx.nn as dn
from dlrmx import ops
from dlrmx.models import DLRM, dot_interaction, interaction
from dlrmx.nn.sparse_optim import FusedUpdate

TABLES = [(20, 4), (7, 3), (12, 8)]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def jagged(tables, batch, seed):
    """values/offsets (table-major) with empty bags and repeated ids; the bag lengths depend on
    the batch size only, so batches of one size have one shape (no recompile)."""
    lengths = torch.randint(0, 4, (len(tables) * batch,), generator=torch.Generator().manual_seed(batch))
    g = torch.Generator().manual_seed(seed)
    values = torch.cat([torch.randint(0, rows, (int(n),), generator=g)
                        for (rows, _), n in zip([t for t in tables for _ in range(batch)], lengths)])
    return values, torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])


def state_of(module):
    """Everything training may change: parameters, their grads (dense), buffers, optimizer state."""
    out = {}
    for name, p in module.named_parameters():
        out[name] = p.detach().clone()
        if p.grad is not None:
            out[name + ".grad"] = p.grad.to_dense().clone()
    for name, b in module.named_buffers():
        out[name] = b.clone()
    opt = getattr(module, "optimizer", None)
    if isinstance(opt, dn.SparseOptimizer):
        out["skipped"] = opt.skip_counter.clone()
    return out


def assert_same_state(eager, compiled):
    a, b = state_of(eager), state_of(compiled)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-6, atol=1e-7, msg=k)


def train_both(make, batches, psw_grad=False):
    """Runs each batch through an eager module and a compiled copy (fullgraph): outputs, then
    backward with the same output gradient; compares outputs, input and weight gradients, and
    the updated weights and state. Changes the fused optimizer's lr between steps (a schedule),
    which must not recompile. Returns the compile counter."""
    eager = make()
    compiled_module = copy.deepcopy(eager)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(compiled_module, fullgraph=True, backend=counter)
    for step, args in enumerate(batches):
        for m in (eager, compiled_module):
            if isinstance(m.optimizer, dn.SparseOptimizer):
                m.optimizer.lr = 0.1 * (step + 1)
            m.zero_grad(set_to_none=True)
        outs, input_grads = [], []
        for fn in (eager, compiled):
            call_args = [a.clone().requires_grad_() if psw_grad and a.is_floating_point() else a
                         for a in args]
            out = fn(*call_args)
            out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
            outs.append(out.detach())
            input_grads.append([a.grad for a in call_args if a.is_floating_point()])
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-6, atol=1e-7)
        for ga, gb in zip(*input_grads):
            torch.testing.assert_close(gb, ga, rtol=1e-6, atol=1e-7)
        assert_same_state(eager, compiled_module)
    return counter


BAG_CASES = {
    "sum": dict(mode="sum"),
    "mean_padding": dict(mode="mean", padding_idx=3),
    "max": dict(mode="max"),
    "sparse_grad": dict(mode="sum", sparse=True),
    "fused_sgd": dict(mode="sum", optimizer=lambda: dn.SGD(lr=0.1)),
    "fused_rowwise_adagrad": dict(mode="mean", optimizer=lambda: dn.RowWiseAdagrad(lr=0.1)),
    "fused_adagrad_max": dict(mode="max", optimizer=lambda: dn.Adagrad(lr=0.1)),
    "fused_split_sgd": dict(mode="sum", optimizer=lambda: dn.SplitSGD(lr=0.1)),
}


def _bag_batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 10, (9,), generator=g), torch.tensor([0, 2, 2, 5, 6, 9])[:5])
            for _ in range(2)]


@pytest.mark.parametrize("case", list(BAG_CASES))
def test_embedding_bag_compiles_fullgraph_and_matches_eager(case):
    kw = dict(BAG_CASES[case])
    if "optimizer" in kw:
        kw["optimizer"] = kw["optimizer"]()
    counter = train_both(lambda: dn.EmbeddingBag(10, 5, **copy.deepcopy(kw)), _bag_batches())
    assert counter.frame_count == 1  # one graph, no recompile for the lr change


def test_embedding_bag_per_sample_weights_gradient_compiles():
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randint(0, 10, (8,), generator=g), torch.tensor([0, 3, 3, 6]),
                torch.rand(8, generator=g)) for _ in range(2)]
    train_both(lambda: dn.EmbeddingBag(10, 5, mode="sum", padding_idx=4), batches, psw_grad=True)


COLLECTION_CASES = {
    "sum": dict(mode="sum"),
    "max": dict(mode="max"),
    "sparse_grad": dict(mode="sum", sparse=True),
    "fused_sgd": dict(mode="sum", optimizer=lambda: dn.SGD(lr=0.1)),
    "fused_rowwise_adagrad": dict(mode="sum", optimizer=lambda: dn.RowWiseAdagrad(lr=0.1)),
    "fused_split_sgd": dict(mode="mean", optimizer=lambda: dn.SplitSGD(lr=0.1)),
}


@pytest.mark.parametrize("case", list(COLLECTION_CASES))
def test_collection_compiles_fullgraph_and_matches_eager(case):
    kw = dict(COLLECTION_CASES[case])
    if "optimizer" in kw:
        kw["optimizer"] = kw["optimizer"]()
    batches = [jagged(TABLES, 4, seed) for seed in (0, 1)]
    counter = train_both(lambda: dn.EmbeddingBagCollection(TABLES, **copy.deepcopy(kw)), batches)
    assert counter.frame_count == 1


def test_collection_per_sample_weights_and_padding_compile():
    batches = []
    for seed in (3, 4):
        values, offsets = jagged([(20, 4), (7, 3)], 3, seed)
        values[::4] = 0  # some padding ids
        batches.append((values, offsets, torch.rand(values.numel())))
    tables = [dn.TableConfig(20, 4, padding_idx=0), dn.TableConfig(7, 3)]
    train_both(lambda: _WithWeights(dn.EmbeddingBagCollection(tables)), batches, psw_grad=True)


class _WithWeights(torch.nn.Module):
    """Passes per_sample_weights by keyword: (values, offsets, per_sample_weights)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.optimizer = inner, None

    def forward(self, values, offsets, psw):
        return self.inner(values, offsets=offsets, per_sample_weights=psw)


def test_nonfinite_gradient_skip_counts_under_compile():
    opt = dn.RowWiseAdagrad(lr=0.1, skip_nonfinite=True)
    ebc = dn.EmbeddingBagCollection(TABLES, optimizer=opt)
    before = state_of(ebc)
    compiled = torch.compile(ebc, fullgraph=True, backend="aot_eager")
    values, offsets = jagged(TABLES, 4, 0)
    with pytest.warns(RuntimeWarning, match="non-finite gradient, embedding update skipped"):
        (compiled(values, offsets) * float("inf")).sum().backward()
    assert opt.skipped_steps == 1
    after = state_of(ebc)
    for k in before:
        if k != "skipped":
            assert torch.equal(before[k], after[k]), k
    compiled(values, offsets).sum().backward()  # a finite step updates again
    assert opt.skipped_steps == 1
    assert not torch.equal(state_of(ebc)["weights.0"], before["weights.0"])


def test_no_graph_breaks_and_dynamic_batch_sizes():
    ebc = dn.EmbeddingBagCollection(TABLES, optimizer=dn.SGD(lr=0.1))
    values, offsets = jagged(TABLES, 4, 0)
    explained = torch._dynamo.explain(ebc)(values, offsets)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    ref = copy.deepcopy(ebc)
    compiled = torch.compile(ebc, fullgraph=True, backend="aot_eager")
    for batch in (4, 6, 9):  # the second size recompiles once with a dynamic batch size
        values, offsets = jagged(TABLES, batch, batch)
        torch.testing.assert_close(compiled(values, offsets), ref(values, offsets))
        compiled(values, offsets).sum().backward()
        ref(values, offsets).sum().backward()
    assert_same_state(ref, ebc)


def test_dot_interaction_compiles_fullgraph():
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        dense = torch.randn(5, 4, generator=g).to(dtype).requires_grad_()
        emb = torch.randn(5, 12, generator=g).requires_grad_()
        compiled = torch.compile(dot_interaction, fullgraph=True, backend="aot_eager")
        outs, grads = [], []
        for fn in (dot_interaction, compiled):
            out = fn(dense, emb)
            (out.float() ** 2).sum().backward()
            outs.append(out.detach())
            grads.append((dense.grad.clone(), emb.grad.clone()))
            dense.grad = emb.grad = None
        assert torch.equal(outs[0], outs[1])
        for a, b in zip(*grads):
            assert torch.equal(a, b)


def _dlrm(sparse_optimizer):
    return DLRM([30, 7, 50], 4, [5, 8, 4], [6, 1], sparse_optimizer=sparse_optimizer, seed=3)


def _dlrm_batches(n, batch=16):
    g = torch.Generator().manual_seed(5)
    out = []
    for _ in range(n):
        dense = torch.rand(batch, 5, generator=g)
        ids = [torch.randint(0, rows, (batch,), generator=g) for rows in (30, 7, 50)]
        label = torch.randint(0, 2, (batch,), generator=g).float()
        out.append((dense, torch.cat(ids), torch.arange(3 * batch + 1), label))
    return out


def _train_dlrm(model, forward, batches, autocast):
    dense_opt = torch.optim.SGD(model.dense_parameters(), lr=0.1)
    for step, (dense, values, offsets, label) in enumerate(batches):
        model.embeddings.optimizer.lr = 0.05 * (step + 1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logit = forward(dense, values, offsets)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit.float(), label)
        dense_opt.zero_grad()
        loss.backward()
        dense_opt.step()


@pytest.mark.parametrize("sparse_optimizer,backend,autocast", [
    (lambda: dn.RowWiseAdagrad(lr=0.05), "inductor", False),
    (lambda: dn.SplitSGD(lr=0.05), "aot_eager", True),  # bf16 tables and bf16 MLP math
], ids=["fp32_rowwise_adagrad_inductor", "bf16_split_sgd"])
def test_dlrm_training_steps_compiled_equal_eager(sparse_optimizer, backend, autocast):
    eager = _dlrm(sparse_optimizer())
    compiled_model = copy.deepcopy(eager)
    forward = torch.compile(compiled_model, fullgraph=True, backend=backend)
    batches = _dlrm_batches(3)
    _train_dlrm(eager, eager, batches, autocast)
    _train_dlrm(compiled_model, forward, batches, autocast)
    a, b = state_of(eager), state_of(compiled_model)
    assert not torch.equal(a["embeddings.weights.1"], state_of(_dlrm(None))["embeddings.weights.1"])
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-6, atol=1e-6, msg=k)


# ---- torch.export -------------------------------------------------------------------------------

def _count_dlrmx_calls(graph):
    return [n.target for n in graph.nodes if n.op == "call_function" and "dlrmx" in str(n.target)]


@pytest.mark.parametrize("make,args", [
    (lambda: dn.EmbeddingBag(10, 5, mode="max"), lambda: _bag_batches()[0]),
    (lambda: dn.EmbeddingBagCollection(TABLES, optimizer=dn.RowWiseAdagrad(lr=0.1)),
     lambda: jagged(TABLES, 4, 0)),
    (lambda: _dlrm(dn.SGD(lr=0.1)), lambda: _dlrm_batches(1)[0][:3]),
], ids=["embedding_bag", "collection", "dlrm"])
def test_export_gives_one_op_and_the_same_output(make, args):
    module, args = make(), args()
    program = torch.export.export(module, tuple(args))
    assert _count_dlrmx_calls(program.graph).count(torch.ops.dlrmx.embedding_bags.default) == 1
    assert torch.equal(program.module()(*args), module(*args))


# ---- torch.fx -----------------------------------------------------------------------------------

class _Lookup(torch.nn.Module):
    """A user module that calls the op directly, with or without a fused optimizer."""

    def __init__(self, optimizer=None):
        super().__init__()
        fused = optimizer is not None
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(r, d), requires_grad=not fused) for r, d in TABLES])
        self.optimizer = optimizer
        for t, (rows, _) in enumerate(TABLES):
            self.register_buffer(f"state_{t}", torch.zeros(rows))
        self.anchor = torch.zeros(0, requires_grad=fused)

    def forward(self, values, offsets):
        fused = None
        if self.optimizer is not None:
            fused = FusedUpdate(self.optimizer, [self.state_0, self.state_1, self.state_2])
        return ops.embedding_bags(list(self.weights), values, offsets,
                                  (offsets.numel() - 1) // len(TABLES), optimizer=fused,
                                  anchor=self.anchor)


@pytest.mark.parametrize("optimizer", [None, dn.RowWiseAdagrad(lr=0.1)], ids=["grad", "fused"])
def test_fx_symbolic_trace_keeps_the_op_as_one_call(optimizer):
    module = _Lookup(optimizer)
    ref = copy.deepcopy(module)
    traced = torch.fx.symbolic_trace(module)
    calls = [n for n in traced.graph.nodes if n.op == "call_function" and n.target is ops.embedding_bags]
    assert len(calls) == 1
    values, offsets = jagged(TABLES, 4, 0)
    out = traced(values, offsets)
    assert torch.equal(out, ref(values, offsets))
    out.sum().backward()
    ref(values, offsets).sum().backward()
    assert_same_state(ref, module)  # gradients, or the fused update of the weights and state


class _Interact(torch.nn.Module):
    def forward(self, dense, emb):
        return interaction.dot_interaction(dense, emb) + 1


def test_fx_symbolic_trace_keeps_dot_interaction_as_one_call():
    traced = torch.fx.symbolic_trace(_Interact())
    calls = [n.target for n in traced.graph.nodes if n.op == "call_function"]
    assert calls.count(interaction.dot_interaction) == 1
    dense, emb = torch.randn(3, 4), torch.randn(3, 8)
    assert torch.equal(traced(dense, emb), _Interact()(dense, emb))


@pytest.mark.parametrize("make,args", [
    pytest.param(lambda: dn.EmbeddingBag(10, 5, mode="sum"), lambda: _bag_batches()[0],
                 id="embedding_bag"),
    pytest.param(lambda: dn.EmbeddingBagCollection(TABLES, optimizer=dn.SGD(lr=0.1)),
                 lambda: jagged(TABLES, 4, 0), id="collection"),
    pytest.param(lambda: _dlrm(dn.SGD(lr=0.1)), lambda: _dlrm_batches(1)[0][:3], id="dlrm"),
])
def test_fx_symbolic_trace_of_the_modules(make, args):
    module, args = make(), args()
    ref = copy.deepcopy(module)
    traced = torch.fx.symbolic_trace(module)
    calls = [n for n in traced.graph.nodes if n.op == "call_function" and n.target is ops.embedding_bags]
    assert len(calls) == 1
    out = traced(*args)
    assert torch.equal(out, ref(*args))
    out.sum().backward()  # the traced module shares the parameters and buffers of `module`
    ref(*args).sum().backward()
    assert_same_state(ref, module)


# ---- torch.jit.script ---------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    pytest.param(lambda: dn.EmbeddingBag(10, 5), id="embedding_bag"),
    pytest.param(lambda: dn.EmbeddingBagCollection(TABLES), id="collection"),
    pytest.param(lambda: _dlrm(dn.SGD(lr=0.1)), id="dlrm"),
])
def test_jit_script_says_to_use_compile_or_export(make):
    with pytest.raises(NotImplementedError, match=r"torch\.compile.*torch\.export"):
        torch.jit.script(make())
