"""The hot/cold embedding cache (FAE): hot rows replicated in a fast tier, batches remapped and
classified by native kernels, hot and cold mini-batches scheduled apart, and bulk swaps that
keep the replica and the master tables exactly in sync."""

from dlrmx.cache.collection import HOT_DEVICES, CachedEmbeddingBagCollection
from dlrmx.cache.kernels import HotMap, gather_rows, scatter_rows
from dlrmx.cache.schedule import POLICIES, HotColdSource

__all__ = ["HOT_DEVICES", "POLICIES", "CachedEmbeddingBagCollection", "HotColdSource", "HotMap",
           "gather_rows", "scatter_rows"]
