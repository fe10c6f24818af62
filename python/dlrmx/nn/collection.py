"""`dlrmx.nn.EmbeddingBagCollection`: many tables, one fused lookup per step.

It is also a drop-in for TorchRec's `EmbeddingBagCollection`: built from a list of TorchRec
`EmbeddingBagConfig`s it takes a `KeyedJaggedTensor`, returns a `KeyedTensor`, keeps TorchRec's
state_dict keys and answers `embedding_bag_configs()`, so `torchrec.models.dlrm.DLRM` accepts
it. TorchRec is no dependency: its types are recognized through `sys.modules` (a TorchRec object
can only exist once TorchRec is imported), and nothing here imports it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from dlrmx import ops
from dlrmx.nn.embedding_bag import EmbeddingBag, load_state_tensors
from dlrmx.nn.sparse_optim import FusedUpdate, SparseOptimizer, combine_fp32
from dlrmx.nn.tables import allocate, fill_rows, new_table, table_device


@dataclass
class TableConfig:
    num_embeddings: int
    embedding_dim: int
    name: str = ""
    padding_idx: int | None = None


def _as_config(i: int, t) -> TableConfig:
    cfg = t if isinstance(t, TableConfig) else TableConfig(*t)
    if cfg.num_embeddings <= 0 or cfg.embedding_dim <= 0:
        raise ValueError(f"table {i}: num_embeddings and embedding_dim must be > 0, got "
                         f"({cfg.num_embeddings}, {cfg.embedding_dim})")
    if cfg.padding_idx is not None and not 0 <= cfg.padding_idx < cfg.num_embeddings:
        raise ValueError(f"table {i}: padding_idx {cfg.padding_idx} outside [0, {cfg.num_embeddings})")
    return TableConfig(cfg.num_embeddings, cfg.embedding_dim, cfg.name or f"t{i}", cfg.padding_idx)


# ---- TorchRec types, recognized without importing TorchRec --------------------------------------

def _torchrec_type(module: str, name: str) -> type | None:
    mod = sys.modules.get(module)
    return getattr(mod, name, None) if mod is not None else None


def is_torchrec_config(t: Any) -> bool:
    cls = _torchrec_type("torchrec.modules.embedding_configs", "BaseEmbeddingConfig")
    return cls is not None and isinstance(t, cls)


def is_keyed_jagged_tensor(x: Any) -> bool:
    cls = _torchrec_type("torchrec.sparse.jagged_tensor", "KeyedJaggedTensor")
    return cls is not None and isinstance(x, cls)


def _torchrec_pooling(configs: Sequence[Any]) -> str:
    """The one pooling mode of TorchRec configs (the fused op pools all tables alike)."""
    modes = []
    for i, cfg in enumerate(configs):
        pooling = getattr(cfg, "pooling", None)
        if pooling is None:
            raise TypeError(f"tables[{i}] is a {type(cfg).__name__}; an EmbeddingBagCollection "
                            "takes torchrec EmbeddingBagConfig (pooled tables)")
        mode = str(getattr(pooling, "value", pooling)).lower()
        if mode not in ("sum", "mean"):
            raise ValueError(f"tables[{i}] ({cfg.name}): pooling {pooling} is not supported by an "
                             "EmbeddingBagCollection; use PoolingType.SUM or MEAN")
        modes.append(mode)
    if len(set(modes)) > 1:
        raise NotImplementedError(f"tables with different pooling ({sorted(set(modes))}) are not "
                                  "supported: one collection per pooling mode")
    return modes[0]


def _check_torchrec_config(i: int, cfg: Any, names: set[str]) -> None:
    if cfg.name in names:
        raise ValueError(f"Duplicate table name {cfg.name}")
    names.add(cfg.name)
    if cfg.num_embeddings <= 0 or cfg.embedding_dim <= 0:
        raise ValueError(f"tables[{i}] ({cfg.name}): num_embeddings and embedding_dim must be > 0")
    dtype = getattr(cfg.data_type, "name", str(cfg.data_type))
    if dtype != "FP32":
        raise NotImplementedError(f"tables[{i}] ({cfg.name}): data_type {dtype} is not supported; "
                                  "use DataType.FP32 (or dlrmx.nn.SplitSGD for bf16 storage)")
    if getattr(cfg, "use_virtual_table", False):
        raise NotImplementedError(f"tables[{i}] ({cfg.name}): use_virtual_table is not supported")
    if not cfg.feature_names:  # as TorchRec: a table without features serves its own name
        cfg.feature_names = [cfg.name]


def _embedding_names(configs: Sequence[Any]) -> list[str]:
    """TorchRec's output keys: the feature name, or `feature@table` for a feature that feeds
    more than one table."""
    count: dict[str, int] = {}
    for cfg in configs:
        for f in cfg.feature_names:
            count[f] = count.get(f, 0) + 1
    return [f if count[f] == 1 else f"{f}@{cfg.name}" for cfg in configs for f in cfg.feature_names]


class EmbeddingBagCollection(nn.Module):
    """T embedding tables (each with its own rows and dim) pooled in one fused call.

    Input is TorchRec's jagged layout: `values` holds all ids, table-major, and `offsets`
    (T*B+1 entries) or `lengths` (T*B entries) delimit the bags. Output is [B, sum of dims];
    `split()` gives per-table views. A TorchRec `KeyedJaggedTensor` works too (its keys: the
    tables' names, or their feature names) and gives a `KeyedTensor`.

    Without `optimizer`, the weights are ordinary parameters that get gradients (dense, or sparse
    COO with `sparse=True`) for any torch optimizer. With `optimizer` (a `dlrmx.nn` sparse
    optimizer), backward applies it to the touched rows in place and no gradient is stored.

    `tables`: dlrmx `TableConfig`s (or (rows, dim) tuples): weights `weights.<t>`, and the
    optimizer state in buffers `state_<t>` of the state_dict (the trainer's checkpoints).
    Or TorchRec `EmbeddingBagConfig`s (a TorchRec drop-in: pooling, init_fn and feature_names
    from the configs; `is_weighted` and `device` as TorchRec's): each table is a
    `dlrmx.nn.EmbeddingBag` under `embedding_bags.<name>` (TorchRec's state_dict keys, fp32
    weights), and the fused optimizer's state stays out of the state_dict as in TorchRec's
    fused collection (`optimizer_state_dict()` / `load_optimizer_state_dict()`).
    `device`: 'cpu' or 'meta' (shapes only; `.to_empty(device='cpu')` then `reset_parameters()`).
    `generator`: the random stream of the reference init of dlrmx tables (default: torch's).
    """

    def __init__(self, tables: Sequence[Any], mode: str | bool | None = None, *,
                 is_weighted: bool = False, device: torch.device | str | None = None,
                 optimizer: SparseOptimizer | None = None, sparse: bool = False,
                 init_weights: Sequence[torch.Tensor] | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not tables:
            raise ValueError("need at least one table")
        device = table_device(device, "dlrmx.nn.EmbeddingBagCollection")
        self._torchrec = any(is_torchrec_config(t) for t in tables)
        if self._torchrec and not all(is_torchrec_config(t) for t in tables):
            raise TypeError("tables mixes torchrec EmbeddingBagConfig with dlrmx TableConfig: "
                            "use one kind")
        if self._torchrec and isinstance(mode, bool):  # TorchRec's 2nd positional: is_weighted
            mode, is_weighted = None, mode
        self.sparse, self.optimizer, self._is_weighted = sparse, optimizer, is_weighted
        if self._torchrec:
            if mode is not None:
                raise ValueError("with torchrec EmbeddingBagConfig the pooling comes from the "
                                 f"configs; do not pass mode={mode!r}")
            self._build_torchrec(list(tables), device, init_weights)
        else:
            mode = "sum" if mode is None else mode
            if mode not in ops.POOLING:
                raise ValueError(f"mode must be one of {sorted(ops.POOLING)}, got {mode!r}")
            self.mode = mode
            self._build_native(tables, device, init_weights, generator)
        # Fused mode: an empty tensor that requires grad keeps the backward (the update) in the graph.
        self._anchor = torch.zeros(0, requires_grad=optimizer is not None)

    # ---- construction -------------------------------------------------------------------------

    def _initial_weight(self, t: int, shape: tuple[int, int], device: torch.device,
                        init_weights: Sequence[torch.Tensor] | None, init) -> torch.Tensor:
        """Table t's fp32 weight: a copy of init_weights[t], else `init` applied (not on meta)."""
        w = new_table(shape, device=device)
        self._check_init_shape(t, shape, init_weights)
        if init_weights is not None:
            if not w.is_meta:
                w.copy_(init_weights[t].detach())
        elif not w.is_meta:
            init(w)
        return w

    def _check_init_shape(self, t: int, shape: tuple[int, int],
                          init_weights: Sequence[torch.Tensor] | None) -> None:
        if init_weights is not None and tuple(init_weights[t].shape) != shape:
            raise ValueError(f"init_weights[{t}] has shape {tuple(init_weights[t].shape)}, "
                             f"table {self.tables[t].name} needs {shape}")

    def _build_native(self, tables: Sequence[Any], device: torch.device,
                      init_weights: Sequence[torch.Tensor] | None,
                      generator: torch.Generator | None) -> None:
        """Each table is allocated as its optimizer stores it and filled in place, a chunk of
        rows at a time (split-SGD: bf16 halves and trail straight from each fp32 chunk): the
        trainer's peak memory stays at the tables' own bytes."""
        self.tables = [_as_config(i, t) for i, t in enumerate(tables)]
        self._features = [t.name for t in self.tables]
        self._embedding_names = list(self._features)
        self._lookup = list(range(len(self.tables)))  # the table of each bag group
        self.weights = nn.ParameterList()
        self._state_names: list[str] = []
        for t, cfg in enumerate(self.tables):
            shape = (cfg.num_embeddings, cfg.embedding_dim)
            self._check_init_shape(t, shape, init_weights)
            w, state = allocate(self.optimizer, shape, device)
            if not w.is_meta:
                if init_weights is not None:
                    src = init_weights[t].detach()
                    fill_rows(self.optimizer, w, state, lambda r0, r1: src[r0:r1].float())
                else:
                    fill_rows(self.optimizer, w, state, _reference_init_rows(shape, generator))
            self.weights.append(nn.Parameter(w, requires_grad=self.optimizer is None))
            if state is not None:
                self.register_buffer(f"state_{t}", state)
                self._state_names.append(f"state_{t}")

    def _build_torchrec(self, configs: list[Any], device: torch.device,
                        init_weights: Sequence[torch.Tensor] | None) -> None:
        self.mode = _torchrec_pooling(configs)
        names: set[str] = set()
        for i, cfg in enumerate(configs):
            _check_torchrec_config(i, cfg, names)
            if self.optimizer is not None and len(cfg.feature_names) > 1:
                raise NotImplementedError(
                    f"table {cfg.name!r} has {len(cfg.feature_names)} features "
                    f"{cfg.feature_names}; with a fused optimizer each table takes one feature "
                    "(give each feature its own table, or use optimizer=None and a torch optimizer)")
        self._configs = configs
        self.tables = [TableConfig(c.num_embeddings, c.embedding_dim, c.name) for c in configs]
        self._features = [f for c in configs for f in c.feature_names]
        self._embedding_names = _embedding_names(configs)
        self._lookup = [t for t, c in enumerate(configs) for _ in c.feature_names]
        self.embedding_bags = nn.ModuleDict()
        for t, cfg in enumerate(configs):
            w = self._initial_weight(t, (cfg.num_embeddings, cfg.embedding_dim), device,
                                     init_weights, _init_fn(cfg))
            self.embedding_bags[cfg.name] = EmbeddingBag(
                cfg.num_embeddings, cfg.embedding_dim, mode=self.mode, sparse=self.sparse,
                _weight=w, include_last_offset=True, optimizer=self.optimizer)

    def reset_parameters(self) -> None:
        """Initialize every table again (TorchRec configs: their init_fn; else the reference
        DLRM's uniform), and the fused optimizer's state. Nothing happens on meta."""
        if self._torchrec:
            for cfg, bag in zip(self._configs, self.embedding_bags.values()):
                bag._reset(_init_fn(cfg))
            return
        if self.weights[0].is_meta:
            return
        state = self.optimizer_state()
        for t, w in enumerate(self.weights):
            fill_rows(self.optimizer, w, state[t] if state else None,
                      _reference_init_rows(tuple(w.shape), None))

    # ---- tables and state ---------------------------------------------------------------------

    @property
    def num_tables(self) -> int:
        return len(self.tables)

    @property
    def dims(self) -> list[int]:
        """The width of each output block (one per table, or per feature with TorchRec configs)."""
        return [self.tables[t].embedding_dim for t in self._lookup]

    @property
    def device(self) -> torch.device:
        return self._table_weights()[0].device

    def _stored_weights(self) -> list[torch.Tensor]:
        """The parameters themselves, for Python-level checks (under torch.fx tracing attribute
        access gives Proxies)."""
        holders = self.embedding_bags.values() if self._torchrec else [self.weights]
        return [p for h in holders for p in h._parameters.values()]

    def _table_weights(self) -> list[torch.Tensor]:
        if self._torchrec:
            return [bag.weight for bag in self.embedding_bags.values()]
        return list(self.weights)

    def optimizer_state(self) -> list[torch.Tensor]:
        """The fused optimizer's state tensors, one per table (none for SGD)."""
        if self._torchrec:
            return [s for bag in self.embedding_bags.values() for s in bag._fused_state()]
        return [getattr(self, n) for n in self._state_names]

    def optimizer_state_dict(self) -> dict[str, torch.Tensor]:
        """The fused optimizer state that `state_dict()` does not hold (TorchRec configs:
        `embedding_bags.<name>.optimizer_state`; dlrmx tables keep theirs in the state_dict, so
        {}). Save it beside the state_dict; `load_optimizer_state_dict()` restores it."""
        if not self._torchrec:
            return {}
        return {f"embedding_bags.{name}.{key}": t for name, bag in self.embedding_bags.items()
                for key, t in bag.optimizer_state_dict().items()}

    def load_optimizer_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        load_state_tensors(self.optimizer_state_dict(), state, "dlrmx.nn.EmbeddingBagCollection")

    def fp32_weights(self) -> list[torch.Tensor]:
        """The exact fp32 weights (split-SGD: upper halves combined with their trails)."""
        if self._torchrec:
            return [bag.fp32_weight() for bag in self.embedding_bags.values()]
        if self.optimizer is not None and self.optimizer.name == "split_sgd":
            return [combine_fp32(w, s) for w, s in zip(self.weights, self.optimizer_state())]
        return [w.detach() for w in self.weights]

    # ---- TorchRec's EmbeddingBagCollection interface ------------------------------------------

    def embedding_bag_configs(self) -> list[Any]:
        """The TorchRec configs this collection was built from (torchrec.models.dlrm.DLRM asks)."""
        if not self._torchrec:
            raise TypeError("this EmbeddingBagCollection was built from dlrmx TableConfigs; build "
                            "it from torchrec EmbeddingBagConfigs to use it in TorchRec models")
        return self._configs

    def is_weighted(self) -> bool:
        """Whether a KeyedJaggedTensor's weights are used as per-sample weights."""
        return self._is_weighted

    # ---- forward ------------------------------------------------------------------------------

    def forward(self, values: Any, offsets: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None,
                per_sample_weights: torch.Tensor | None = None) -> Any:
        if is_keyed_jagged_tensor(values):
            if offsets is not None or lengths is not None or per_sample_weights is not None:
                raise ValueError("a KeyedJaggedTensor carries its own offsets and weights: pass "
                                 "it alone")
            return self._forward_kjt(values)
        offsets, batch = jagged_offsets(values, offsets, lengths, len(self._lookup), self._torchrec)
        return self._pool(values, offsets, batch, per_sample_weights)

    def _pool(self, values: torch.Tensor, offsets: torch.Tensor, batch,
              per_sample_weights: torch.Tensor | None) -> torch.Tensor:
        tables = self._table_weights()
        weights = [tables[t] for t in self._lookup]
        if self._stored_weights()[0].is_meta:  # shapes only, as torch's meta tensors
            return torch.empty((batch, sum(self.dims)), device="meta")
        fused = None
        if self.optimizer is not None:
            fused = FusedUpdate(self.optimizer, self.optimizer_state())
        return ops.embedding_bags(
            weights, values, offsets, batch, pooling=self.mode,
            per_sample_weights=per_sample_weights,
            padding_idx=[self.tables[t].padding_idx for t in self._lookup],
            sparse=self.sparse, optimizer=fused, anchor=self._anchor,
        )

    def _forward_kjt(self, features: Any) -> Any:
        """KeyedJaggedTensor in, KeyedTensor out (keys: the features in table order)."""
        if features.variable_stride_per_key():
            raise NotImplementedError("a KeyedJaggedTensor with a different batch size per feature "
                                      "(variable stride) is not supported")
        features = self._in_feature_order(features)
        psw = None
        if self._is_weighted:
            psw = features.weights_or_none()
            if psw is None:
                raise ValueError("is_weighted=True, but the KeyedJaggedTensor has no weights")
        offsets = features.offsets()
        pooled = self._pool(features.values(), offsets, (offsets.numel() - 1) // len(self._lookup),
                            psw)
        keyed_tensor = _torchrec_type("torchrec.sparse.jagged_tensor", "KeyedTensor")
        return keyed_tensor(keys=self._embedding_names, length_per_key=self.dims, values=pooled)

    def _in_feature_order(self, features: Any) -> Any:
        """The KJT with exactly this collection's features, in table order: permuted (and
        features the tables do not use dropped) when its keys come in another order."""
        keys = list(features.keys())
        if keys == self._features:
            return features
        where = {k: i for i, k in enumerate(keys)}
        missing = [f for f in self._features if f not in where]
        if missing:
            raise ValueError(f"the KeyedJaggedTensor has no feature {missing[0]!r} (its keys: "
                             f"{keys}); the tables read {self._features}")
        return features.permute([where[f] for f in self._features])

    def __prepare_scriptable__(self):
        raise ops.script_unsupported(self)

    def split(self, pooled: torch.Tensor) -> list[torch.Tensor]:
        """Per-table (per-feature) views [B, D] of a pooled output."""
        return list(torch.split(pooled, self.dims, dim=1))

    def extra_repr(self) -> str:
        opt = "" if self.optimizer is None else f", optimizer={self.optimizer}"
        return f"tables={[(t.num_embeddings, t.embedding_dim) for t in self.tables]}, mode={self.mode!r}{opt}"


def jagged_offsets(values: Any, offsets: Any, lengths: Any, groups: int, features: bool):
    """The checked jagged input: (offsets with groups*B+1 entries, B). One leaf call under
    torch.fx.symbolic_trace (its checks need values)."""
    if not isinstance(values, torch.Tensor):
        raise TypeError("values must be a 1-D tensor of ids (with offsets= or lengths=) or a "
                        f"torchrec KeyedJaggedTensor, got {type(values).__name__}")
    if (offsets is None) == (lengths is None):
        raise ValueError("pass exactly one of offsets (T*B+1 entries) or lengths (T*B entries)")
    if offsets is None:
        if not isinstance(lengths, torch.Tensor) or lengths.dim() != 1:
            raise TypeError("lengths must be a 1-D integer tensor")
        offsets = torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, 0)])
    if not isinstance(offsets, torch.Tensor) or offsets.dim() != 1:
        raise TypeError("offsets must be a 1-D integer tensor")
    nbags = offsets.numel() - 1
    if nbags < 0 or nbags % groups:
        what = "F*B+1 entries for F={} features" if features else "T*B+1 entries for T={} tables"
        raise ValueError(f"offsets must have {what.format(groups)}, got {offsets.numel()}")
    return offsets, nbags // groups


torch.fx.wrap("jagged_offsets")


def _reference_init_rows(shape: tuple[int, int], generator: torch.Generator | None):
    """The reference DLRM's initialization, U(-sqrt(1/rows), sqrt(1/rows)), as a function of
    a row range (drawn in order from `generator`, or torch's global one)."""
    bound = math.sqrt(1.0 / shape[0])
    return lambda r0, r1: torch.empty(r1 - r0, shape[1]).uniform_(-bound, bound, generator=generator)


def _init_fn(cfg: Any):
    """A TorchRec config's init_fn (TorchRec fills a uniform one in when none is given)."""
    if cfg.init_fn is not None:
        return cfg.init_fn
    lo, hi = cfg.get_weight_init_min(), cfg.get_weight_init_max()
    return lambda w: nn.init.uniform_(w, lo, hi)
