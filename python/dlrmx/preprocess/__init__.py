"""Declarative preprocessing of click logs into the dlrmx training format.

``python -m dlrmx.preprocess --help`` for the CLI; from Python::

    from dlrmx.preprocess import preset, run
    report = run(preset("criteo-kaggle"), ["train.txt"], "out", engine="polars")

User errors raise `PreprocessError` (never SystemExit); `preprocess_reference` maps the
reference DLRM's ``--data-set``/``--raw-data-file`` to inputs and a preset.

Two engines with identical output: ``polars`` (one machine, streaming) and ``spark``.
Imports neither torch nor Spark until an engine is chosen.
"""

from dlrmx.preprocess.config import (CategoricalOps, DenseOps, PipelineConfig, RowOrder, Schema,
                                     SplitOps, from_dict, load_yaml, preset,
                                     use_reference_semantics)
from dlrmx.preprocess.pipeline import EngineOptions, preprocess_reference, run
from dlrmx.preprocess.report import BadInputError, InputError, OutputError, PreprocessError

__all__ = ["BadInputError", "CategoricalOps", "DenseOps", "EngineOptions", "InputError",
           "OutputError", "PipelineConfig", "PreprocessError", "RowOrder", "Schema", "SplitOps",
           "from_dict", "load_yaml", "preprocess_reference", "preset", "run",
           "use_reference_semantics"]
