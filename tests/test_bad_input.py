"""Bad input raises a clear Python exception, names the table and position, and touches no weight."""

import os
import subprocess
import sys

import pytest
import torch

import dlrmx.nn as dn

TABLES = [(10, 4), (5, 8)]


def fused_ebc():
    return dn.EmbeddingBagCollection(TABLES, optimizer=dn.RowWiseAdagrad(lr=1.0))


def assert_untouched(ebc, before):
    for w, b in zip(ebc.weights, before):
        assert torch.equal(w, b)


@pytest.mark.parametrize("bad_id, table, position", [(10, 0, 1), (-1, 0, 2), (5, 1, 4), (2**40, 1, 3)])
def test_id_out_of_range_names_table_and_position(bad_id, table, position):
    ebc = fused_ebc()
    before = [w.clone() for w in ebc.weights]
    values = torch.tensor([1, 2, 3, 0, 4])
    values[position] = bad_id
    offsets = torch.tensor([0, 2, 3, 4, 5])  # T=2, B=2
    with pytest.raises(IndexError, match=rf"id {bad_id} out of range for table {table} .*position {position}"):
        ebc(values, offsets=offsets).sum().backward()
    assert_untouched(ebc, before)


@pytest.mark.parametrize("offsets, message", [
    ([1, 2, 3, 4, 5], "offsets must start at 0"),
    ([0, 3, 2, 4, 5], r"offsets must not decrease: offsets\[2\] = 2 < offsets\[1\]"),
    ([0, 1, 2, 3, 4], "offsets must end at the number of ids"),
    ([0, 1, 2, 3, 9], "offsets must end at the number of ids"),
    ([0, 1, 2, 5], "offsets must have T\\*B\\+1 entries"),
])
def test_bad_offsets(offsets, message):
    ebc = fused_ebc()
    before = [w.clone() for w in ebc.weights]
    with pytest.raises(ValueError, match=message):
        ebc(torch.tensor([1, 2, 3, 0, 4]), offsets=torch.tensor(offsets))
    assert_untouched(ebc, before)


def test_wrong_dtypes_and_devices():
    ebc = dn.EmbeddingBagCollection(TABLES)
    offsets = torch.tensor([0, 1, 2, 3, 4])
    with pytest.raises(TypeError, match="ids must be int32 or int64"):
        ebc(torch.tensor([1.0, 2.0, 3.0, 0.0]), offsets=offsets)
    with pytest.raises(TypeError, match="offsets must be int32 or int64"):
        ebc(torch.tensor([1, 2, 3, 0]), offsets=offsets.float())
    with pytest.raises(TypeError, match="ids must be on the CPU"):
        ebc(torch.tensor([1, 2, 3, 0], device="meta"), offsets=offsets)
    with pytest.raises(TypeError, match="per_sample_weights must be a float32"):
        ebc(torch.tensor([1, 2, 3, 0]), offsets=offsets, per_sample_weights=torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="one weight per id"):
        ebc(torch.tensor([1, 2, 3, 0]), offsets=offsets, per_sample_weights=torch.ones(3))


def test_drop_in_module_bad_input():
    bag = dn.EmbeddingBag(10, 4, mode="sum")
    with pytest.raises(IndexError, match="id 10 out of range for table 0 with 10 rows, at position 2"):
        bag(torch.tensor([1, 2, 10]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="offsets has to be None"):
        bag(torch.tensor([[1, 2]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="per_sample_weights are only supported with mode='sum'"):
        dn.EmbeddingBag(10, 4, mode="mean")(torch.tensor([1, 2]), torch.tensor([0]), torch.ones(2))


def test_optimizer_configs_are_checked():
    with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
        dn.SGD(lr=-1.0)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        dn.RowWiseAdagrad(lr=0.1, eps=-1e-8)
    with pytest.raises(ValueError, match="unknown sparse optimizer 'adam'"):
        dn.make_sparse_optimizer("adam", lr=0.1)


def run_with_isa(value: str) -> subprocess.CompletedProcess:
    code = ("import torch, dlrmx.nn as dn; from dlrmx import ops;"
            "dn.EmbeddingBag(4, 2, mode='sum')(torch.tensor([[1, 2]])); print(ops.isa_info()['active'])")
    env = dict(os.environ, DLRMX_CPU_ISA=value)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_forced_isa_level_from_environment():
    res = run_with_isa("avx2")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "avx2"
    res = run_with_isa("sse9")
    assert res.returncode != 0 and "unknown level 'sse9'" in res.stderr


def test_max_pooling_backward_op_needs_the_forward_argmax():
    w = [torch.randn(5, 4)]
    with pytest.raises(ValueError, match="max pooling needs the forward's argmax"):
        torch.ops.dlrmx.embedding_bag_update(torch.ones(2, 4), w, torch.tensor([1, 2]), torch.tensor([0, 1, 2]),
                                             None, [-1], 2, 2, torch.empty(0, dtype=torch.long), "sgd", 0.1, 0.0, [])
