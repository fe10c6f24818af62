"""A synthetic Criteo-like click dataset with a planted teacher model.

13 dense and 26 categorical features; categorical ids are Zipf-distributed over tables sized from
the Criteo Kaggle or Terabyte cardinalities (times a scale factor); labels are Bernoulli draws
from a known click probability p = sigmoid(teacher logit). Because p is known, the oracle AUC
(ranking by the true p) is the ceiling any model can reach, and it is reported next to the
achieved AUC.

Every per-id teacher parameter is a hash of (seed, table, id): no table-sized arrays are stored,
so even Terabyte-sized tables cost no memory. Batch (split, i) is drawn from its own RNG stream
keyed by (seed, split, i, batch size): deterministic, independent of thread scheduling and of
where a resumed run starts, and cheap (vectorized NumPy, no Python per-sample work).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Cardinalities of the 26 categorical columns of Criteo Kaggle (Display Advertising Challenge) and
# of Criteo Terabyte with ids hashed into 40M (the MLPerf setting), as the reference DLRM reports.
KAGGLE_SIZES = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
                27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]
TERABYTE_SIZES = [39884406, 39043, 17289, 7420, 20263, 3, 7120, 1543, 63, 38532951, 2953546,
                  403346, 10, 2208, 11938, 155, 4, 976, 14, 39979771, 25641295, 39664984, 585935,
                  12972, 108, 36]
# MLPerf DLRMv2's tables (Criteo 1TB capped at 40M rows; mlcommons/training,
# recommendation_v2/torchrec_dlrm, --num_embeddings_per_feature)
MLPERF_SIZES = [40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282,
                10, 2209, 11938, 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108,
                36]
PRESETS = {"kaggle": KAGGLE_SIZES, "terabyte": TERABYTE_SIZES, "mlperf": MLPERF_SIZES}
NUM_DENSE = 13
SPLITS = {"train": 0, "val": 1, "test": 2}

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def table_sizes(preset: str = "kaggle", scale: float = 1.0, min_rows: int = 4) -> list[int]:
    """Preset cardinalities times `scale` (rounded up); tables smaller than min_rows keep their size."""
    if preset not in PRESETS:
        raise ValueError(f"unknown table-size preset {preset!r}; choose one of {sorted(PRESETS)}")
    if not scale > 0:
        raise ValueError(f"table scale must be > 0, got {scale}")
    return [n if n <= min_rows else max(min_rows, math.ceil(n * scale)) for n in PRESETS[preset]]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijective, well-mixing hash of uint64 arrays (wraps mod 2^64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _unit(h: np.ndarray) -> np.ndarray:
    """uint64 hashes -> zero-mean, unit-variance uniform float32 values."""
    u = (h >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
    return (u - np.float32(0.5)) * np.float32(math.sqrt(12.0))


@dataclass
class SyntheticBatch:
    dense: np.ndarray   # [B, 13] float32, already log-transformed like preprocessed Criteo
    sparse: np.ndarray  # [B, 26] int32 ids
    label: np.ndarray   # [B] float32 in {0, 1}
    prob: np.ndarray    # [B] float32, the teacher's click probability


class SyntheticCriteo:
    """The planted-teacher generator. `batch(split, index, batch_size)` is a pure function."""

    def __init__(self, sizes: list[int], seed: int = 0, zipf: float = 1.05, latent_dim: int = 4,
                 id_effect: float = 0.45, pair_effect: float = 0.35, dense_effect: float = 0.5,
                 ctr: float = 0.25) -> None:
        if zipf <= 0 or zipf == 1.0:
            raise ValueError(f"zipf exponent must be > 0 and != 1, got {zipf}")
        self.sizes = [int(n) for n in sizes]
        self.seed, self.zipf, self.k = int(seed), float(zipf), int(latent_dim)
        self.id_effect, self.pair_effect, self.bias = id_effect, pair_effect, 0.0
        if not 0 < ctr < 1:
            raise ValueError(f"ctr must be in (0, 1), got {ctr}")
        rng = np.random.default_rng([self.seed, 99])
        self.dense_mu = rng.uniform(0.0, 3.0, NUM_DENSE).astype(np.float32)
        self.dense_w = (rng.standard_normal(NUM_DENSE) * dense_effect).astype(np.float32)
        # Per table: a multiplier that spreads ids over [0, n) (popular ids are not all row 0)
        self._mult = []
        for n in self.sizes:
            a = int(rng.integers(n // 3 + 1, n + 1)) | 1
            while math.gcd(a, n) != 1:
                a += 2
            self._mult.append(a)
        self.num_tables = len(self.sizes)
        # Calibrate on a fixed sample: center the dense features, then pick the bias (bisection)
        # that makes the mean click probability equal `ctr`, whatever the seed.
        self._dense_mean = np.zeros(NUM_DENSE, dtype=np.float32)
        cal = np.random.default_rng([self.seed, 98])
        dense = self._dense(cal, 32768)
        self._dense_mean = dense.mean(0)
        z = self.logits(dense, self._ids(cal, 32768)).astype(np.float64)
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if np.mean(1 / (1 + np.exp(-(z + mid)))) < ctr else (lo, mid)
        self.bias = 0.5 * (lo + hi)

    def _dense(self, rng: np.random.Generator, b: int) -> np.ndarray:
        counts = np.floor(rng.lognormal(self.dense_mu, 1.0, (b, NUM_DENSE)))
        return np.log1p(counts).astype(np.float32)

    def _ids(self, rng: np.random.Generator, b: int) -> np.ndarray:
        s = 1.0 - self.zipf
        u = rng.random((b, self.num_tables))
        n = np.asarray(self.sizes, dtype=np.float64)
        # inverse CDF of a continuous power law on [1, n+1): rank 0 is the most popular id
        x = ((np.power(n + 1.0, s) - 1.0) * u + 1.0) ** (1.0 / s)
        rank = np.minimum(x.astype(np.int64) - 1, n.astype(np.int64) - 1)
        mult = np.asarray(self._mult, dtype=np.int64)
        # bijective spread; (rank * mult) stays exact in int64 for n < 2^31
        return ((rank * mult) % n.astype(np.int64)).astype(np.int32)

    def logits(self, dense: np.ndarray, sparse: np.ndarray) -> np.ndarray:
        """The teacher's click logit for given features."""
        b, t = sparse.shape
        keys = (sparse.astype(np.uint64) << np.uint64(8)) | np.arange(t, dtype=np.uint64)
        keys = keys ^ np.uint64((self.seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
        h = _mix(keys)
        logit = np.full(b, self.bias, dtype=np.float32)
        logit += ((dense - self._dense_mean) * self.dense_w).sum(1)
        logit += _unit(h).sum(1) * np.float32(self.id_effect / math.sqrt(t) * 2.0)
        # latent factors: sum over table pairs of <v_s, v_t> = (|sum v|^2 - sum |v|^2) / 2
        tot = np.zeros((b, self.k), dtype=np.float32)
        sq = np.zeros(b, dtype=np.float32)
        for j in range(self.k):
            v = _unit(_mix(h + np.uint64(j + 1)))
            tot[:, j] = v.sum(1)
            sq += (v * v).sum(1)
        pairs = 0.5 * ((tot * tot).sum(1) - sq)
        logit += pairs * np.float32(self.pair_effect / math.sqrt(t * (t - 1) / 2 * self.k) * 2.0)
        return logit

    def batch(self, split: str, index: int, batch_size: int) -> SyntheticBatch:
        rng = np.random.default_rng([self.seed, SPLITS[split], int(index), int(batch_size)])
        dense = self._dense(rng, batch_size)
        sparse = self._ids(rng, batch_size)
        logit = self.logits(dense, sparse)
        prob = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
        label = (rng.random(batch_size, dtype=np.float32) < prob).astype(np.float32)
        return SyntheticBatch(dense, sparse, label, prob)
