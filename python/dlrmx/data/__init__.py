"""Training data on disk: the format written by `dlrmx.preprocess` and read by the trainer
(see `format`), its validation against spec.json (`validate`), and converters from the reference
DLRM's processed files (`dlrmx.data.reference`, also a CLI)."""

from dlrmx.data.format import (FORMAT_VERSION, SPLITS, DataFormatError, Split, SplitWriter,
                               open_split, read_spec, write_dataset, write_spec, write_split)
from dlrmx.data.validate import validate_dataset

__all__ = ["FORMAT_VERSION", "SPLITS", "DataFormatError", "Split", "SplitWriter", "open_split",
           "read_spec", "validate_dataset", "write_dataset", "write_spec", "write_split"]
