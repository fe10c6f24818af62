"""Declarative preprocessing of click logs into the dlrmx training format.

``python -m dlrmx.preprocess --help`` for the CLI; from Python::

    from dlrmx.preprocess import preset, run
    report = run(preset("criteo-kaggle"), ["train.txt"], "out", engine="polars")

Two engines with identical output: ``polars`` (one machine, streaming) and ``spark``.
Imports neither torch nor Spark until an engine is chosen.
"""

from dlrmx.preprocess.config import (CategoricalOps, DenseOps, PipelineConfig, RowOrder, Schema,
                                     SplitOps, from_dict, load_yaml, preset,
                                     use_reference_semantics)
from dlrmx.preprocess.pipeline import EngineOptions, run

__all__ = ["CategoricalOps", "DenseOps", "EngineOptions", "PipelineConfig", "RowOrder", "Schema",
           "SplitOps", "from_dict", "load_yaml", "preset", "run", "use_reference_semantics"]
