"""pytest-benchmark cases for the fused embedding bags (small config, a few seconds in all).

Run by hand, never in CI's test suite:

    .venv/bin/python -m pytest bench/test_bench_embedding.py --benchmark-only
    .venv/bin/python -m pytest bench/ --benchmark-only --benchmark-group-by=param:phase

bench/embedding.py is the full side-by-side comparison (1M-row tables, both thread counts,
gather limit, peak RSS); these cases are the quick regression check of the same three systems.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _bench_common import make_batch, make_id_sampler
from embedding import SYSTEM_CLASSES, check_correctness, fbgemm_import_error

TABLES, ROWS, DIM, BATCH = 8, 100_000, 64, 512
FBGEMM_MISSING = fbgemm_import_error()


@pytest.fixture(scope="module", params=[1, 2], ids=lambda n: f"threads{n}")
def threads(request):
    old = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    out = {}
    for dist in ("uniform", "zipf1.05"):
        samplers = [make_id_sampler(dist, ROWS, rng) for _ in range(TABLES)]
        out[dist] = [make_batch(samplers, BATCH, 20) for _ in range(2)]
    grad = torch.from_numpy(rng.standard_normal((BATCH, TABLES * DIM), dtype=np.float32))
    return out, grad


@pytest.fixture(scope="module")
def systems(data):
    """All available systems on the same weights, gated on agreeing with torch."""
    batches, grad = data
    bound = (1.0 / ROWS) ** 0.5
    weights = [torch.empty(ROWS, DIM).uniform_(-bound, bound) for _ in range(TABLES)]
    names = ["dlrmx", "torch"] + ([] if FBGEMM_MISSING else ["fbgemm"])
    built = {n: SYSTEM_CLASSES[n](TABLES, ROWS, DIM, weights) for n in names}
    check_correctness(built, batches["zipf1.05"], grad)  # raises SystemExit on a mismatch
    return built


@pytest.mark.parametrize("dist", ["uniform", "zipf1.05"])
@pytest.mark.parametrize("phase", ["forward", "train"])
@pytest.mark.parametrize("system", ["dlrmx", "torch", "fbgemm"])
def test_embedding_bags(benchmark, systems, data, threads, system, phase, dist):
    if system == "fbgemm" and FBGEMM_MISSING:
        pytest.skip(f"fbgemm_gpu not importable ({FBGEMM_MISSING}); "
                    "pip install fbgemm-gpu-cpu==1.8.0")
    batches, grad = data
    sys_ = systems[system]
    batch = batches[dist][0]
    benchmark.group = f"{phase} {dist} {threads}t"
    benchmark.extra_info["lookups"] = batch.num_lookups
    if phase == "forward":
        benchmark(sys_.forward, batch)
    else:
        benchmark(sys_.train_step, batch, grad)
