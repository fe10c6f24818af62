import sys
from pathlib import Path

import pytest
import torch

from dlrmx import ops

# bench/ holds the plain-PyTorch reference DLRM that tests compare against.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

ISA_LEVELS = ["scalar", "avx2", "avx512"]


@pytest.fixture(params=ISA_LEVELS)
def isa(request):
    """Runs a test once per ISA level (skipped only where this CPU cannot run that level)."""
    if request.param not in ops.isa_info()["supported"]:
        pytest.skip(f"this CPU cannot run {request.param}")
    before = ops.isa_info()["active"]
    ops.set_isa(request.param)
    yield request.param
    ops.set_isa(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
