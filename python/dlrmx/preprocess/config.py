"""The declarative pipeline: an input schema plus the operations applied to it.

A pipeline is a `PipelineConfig`; it comes from a preset (`criteo-kaggle`, `criteo-terabyte`) or a
user YAML file (see `load_yaml` and the README), and CLI flags override single fields.
Both engines read the same config, so everything that decides an output value lives here.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

PARSE_KINDS = ("hex", "int", "string")
ORDERS = ("frequency", "first_seen")
MISSING = ("reserved", "zero")
RESERVED_POS = ("first", "last")
FIT_ON = ("all", "train")
SPLIT_BY = ("days", "files", "none")
ROW_ORDERS = ("input", "shuffle_day", "shuffle_all")
ON_BAD_ROW = ("quarantine", "drop", "fail")


@dataclass
class Schema:
    """What the input files look like."""

    columns: list[str]  # every field of a line, in file order
    label: str
    dense: list[str]  # integer features (may be empty or negative)
    categorical: list[str]
    delimiter: str = "\t"
    header: bool = False  # skip the first line of every file
    categorical_parse: str = "hex"  # how raw categorical values become keys
    parse_overrides: dict[str, str] = field(default_factory=dict)  # column -> hex|int|string

    def parse_kind(self, column: str) -> str:
        return self.parse_overrides.get(column, self.categorical_parse)


@dataclass
class DenseOps:
    """Dense integers: missing -> ``fill``; then ``max(x + shift, clip_min)``; then log(x+1)."""

    fill: int = 0
    shift: int = 0
    clip_min: int = 0
    log1p: bool = True


@dataclass
class CategoricalOps:
    """Categorify: raw value -> key (hex/int parse, optional modulo) -> dense id per column.

    Ids: kept keys get contiguous ids; one reserved id (``0`` when ``reserved_id='first'``, the
    last id otherwise) takes missing values (``missing='reserved'``), keys seen fewer than
    ``min_freq`` times, and keys unseen when dictionaries are reused. ``missing='zero'`` is the
    reference's rule: an empty field is the value 0 and gets an id like any other key.
    """

    # > 0: key = value % max_ind_range (hex and int keys only), before the dictionaries, as the
    # reference DLRM's --max-ind-range; 0 or negative (the reference's default -1): off.
    max_ind_range: int = 0
    min_freq: int = 1
    order: str = "frequency"  # frequency: most frequent first (ties: smaller key); first_seen
    missing: str = "reserved"
    reserved_id: str = "first"
    fit_on: str = "all"  # which rows the dictionaries are counted on: all splits, or train only


@dataclass
class SplitOps:
    """``days``: rows cut into ``days`` equal chunks by line position (np.array_split sizes), the
    last chunk halved; ``files``: every file is a day, the last file halved (Terabyte's day_23);
    ``none``: everything is train. The first half (the larger when odd) of the last day is
    ``test``, the second ``val`` (the reference DLRM's ``test, val = array_split(last, 2)``)."""

    by: str = "days"
    days: int = 7


@dataclass
class RowOrder:
    """Order of the train rows in the output (val/test always keep input order)."""

    order: str = "input"
    seed: int = 0


@dataclass
class PipelineConfig:
    name: str
    schema: Schema
    dense_ops: DenseOps = field(default_factory=DenseOps)
    categorical_ops: CategoricalOps = field(default_factory=CategoricalOps)
    split: SplitOps = field(default_factory=SplitOps)
    row_order: RowOrder = field(default_factory=RowOrder)
    drop_columns: list[str] = field(default_factory=list)
    drop_rows_if_missing: list[str] = field(default_factory=list)
    on_bad_row: str = "quarantine"

    @property
    def dense(self) -> list[str]:
        return [c for c in self.schema.dense if c not in self.drop_columns]

    @property
    def categorical(self) -> list[str]:
        return [c for c in self.schema.categorical if c not in self.drop_columns]

    def validate(self) -> "PipelineConfig":
        s, c = self.schema, self.categorical_ops
        names = set(s.columns)
        if len(names) != len(s.columns):
            raise ValueError(f"pipeline {self.name!r}: duplicate column names in schema.columns")
        for col in [s.label, *s.dense, *s.categorical, *self.drop_columns,
                    *self.drop_rows_if_missing, *s.parse_overrides]:
            if col not in names:
                raise ValueError(f"pipeline {self.name!r}: column {col!r} is not in schema.columns")
        if s.label in self.drop_columns:
            raise ValueError(f"pipeline {self.name!r}: the label column cannot be dropped")
        if set(s.dense) & set(s.categorical) or s.label in set(s.dense) | set(s.categorical):
            raise ValueError(f"pipeline {self.name!r}: a column is used twice (label/dense/categorical)")
        if len(s.delimiter) != 1:
            raise ValueError(f"pipeline {self.name!r}: delimiter must be one character")
        checks = [("categorical_parse", s.categorical_parse, PARSE_KINDS),
                  ("order", c.order, ORDERS), ("missing", c.missing, MISSING),
                  ("reserved_id", c.reserved_id, RESERVED_POS), ("fit_on", c.fit_on, FIT_ON),
                  ("split.by", self.split.by, SPLIT_BY),
                  ("row_order", self.row_order.order, ROW_ORDERS),
                  ("on_bad_row", self.on_bad_row, ON_BAD_ROW)]
        checks += [(f"parse_overrides[{k}]", v, PARSE_KINDS) for k, v in s.parse_overrides.items()]
        for what, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"pipeline {self.name!r}: {what} must be one of {allowed}, got {value!r}")
        d = self.dense_ops
        numbers = [("categorical_ops.max_ind_range", c.max_ind_range),
                   ("categorical_ops.min_freq", c.min_freq), ("split.days", self.split.days),
                   ("row_order.seed", self.row_order.seed), ("dense_ops.fill", d.fill),
                   ("dense_ops.shift", d.shift), ("dense_ops.clip_min", d.clip_min)]
        for what, value in numbers:  # YAML gives strings and lists as readily as numbers
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"pipeline {self.name!r}: {what} must be an integer, got "
                                 f"{type(value).__name__} {value!r}")
        if not isinstance(d.log1p, bool):
            raise ValueError(f"pipeline {self.name!r}: dense_ops.log1p must be true or false, got "
                             f"{d.log1p!r}")
        if c.max_ind_range < -1:
            raise ValueError(f"pipeline {self.name!r}: max_ind_range must be > 0, or 0 / -1 for "
                             f"off, got {c.max_ind_range}")
        if self.row_order.seed < 0:
            raise ValueError(f"pipeline {self.name!r}: row_order.seed must be >= 0, got "
                             f"{self.row_order.seed}")
        if c.min_freq < 1 or self.split.days < 1:
            raise ValueError(f"pipeline {self.name!r}: min_freq >= 1 and days >= 1, got "
                             f"min_freq={c.min_freq}, days={self.split.days}")
        if c.max_ind_range < 0:  # the reference's "off" (-1); one spelling of off on disk
            self.categorical_ops = replace(c, max_ind_range=0)
        if not self.categorical and not self.dense:
            raise ValueError(f"pipeline {self.name!r}: no dense and no categorical columns left")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def criteo_schema() -> Schema:
    return Schema(columns=["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)],
                  label="label", dense=[f"I{i}" for i in range(1, 14)],
                  categorical=[f"C{i}" for i in range(1, 27)])


PRESETS = {
    "criteo-kaggle": lambda: PipelineConfig("criteo-kaggle", criteo_schema(), split=SplitOps("days", 7)),
    "criteo-terabyte": lambda: PipelineConfig("criteo-terabyte", criteo_schema(), split=SplitOps("files")),
}


def preset(name: str) -> PipelineConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {sorted(PRESETS)}")
    return PRESETS[name]()


def use_reference_semantics(cfg: PipelineConfig) -> PipelineConfig:
    """The reference DLRM's dictionaries: first-seen ids, no threshold, empty = value 0, and ids
    0..K-1 exactly as the reference numbers them (the reserved id goes last)."""
    ops = replace(cfg.categorical_ops, order="first_seen", min_freq=1, missing="zero",
                  reserved_id="last", fit_on="all")
    return replace(cfg, categorical_ops=ops)


# YAML operations -> (config attribute, dataclass) they set.
_OPERATIONS = {
    "fill_missing": "dense_ops", "dense_transform": "dense_ops", "hex_to_int": "categorical_ops",
    "categorify": "categorical_ops", "split": "split", "row_order": "row_order",
}


def _set_fields(obj: Any, values: dict[str, Any], where: str) -> Any:
    known = {f.name for f in fields(obj)}
    for k in values:
        if k not in known:
            raise ValueError(f"{where}: unknown key {k!r}; known: {sorted(known)}")
    return replace(obj, **values)


def from_dict(d: dict[str, Any], where: str = "pipeline") -> PipelineConfig:
    """Build a config from the YAML layout: ``name``, ``schema`` (or ``preset``), ``operations``."""
    d = copy.deepcopy(d)
    unknown = set(d) - {"name", "schema", "preset", "operations", "on_bad_row"}
    if unknown:
        raise ValueError(f"{where}: unknown top-level keys {sorted(unknown)}")
    if "preset" in d:
        cfg = preset(d["preset"])
    elif "schema" in d:
        cfg = PipelineConfig(d.get("name", "custom"), _set_fields(Schema([], "", [], []), d["schema"],
                                                                   f"{where}: schema"))
    else:
        raise ValueError(f"{where}: needs a 'schema' or a 'preset'")
    cfg.name = d.get("name", cfg.name)
    cfg.on_bad_row = d.get("on_bad_row", cfg.on_bad_row)
    for i, op in enumerate(d.get("operations") or []):
        if not isinstance(op, dict) or len(op) != 1:
            raise ValueError(f"{where}: operations[{i}] must be a mapping with one key, got {op!r}")
        (kind, args), = op.items()
        here = f"{where}: operations[{i}] ({kind})"
        if kind in ("drop_columns", "drop_rows_if_missing"):
            if not isinstance(args, list):
                raise ValueError(f"{here}: expects a list of column names")
            getattr(cfg, kind).extend(args)
        elif kind in _OPERATIONS:
            attr = _OPERATIONS[kind]
            setattr(cfg, attr, _set_fields(getattr(cfg, attr), args or {}, here))
        else:
            raise ValueError(f"{here}: unknown operation; known: "
                             f"{sorted([*_OPERATIONS, 'drop_columns', 'drop_rows_if_missing'])}")
    return cfg.validate()


def load_yaml(path: str | Path) -> PipelineConfig:
    import yaml  # only needed for user pipelines

    with open(path, encoding="utf-8") as f:
        try:
            d = yaml.safe_load(f)
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ValueError(f"--config {path}: not a valid YAML file: "
                             f"{' '.join(str(e).split())}") from e
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return from_dict(d, where=str(path))
