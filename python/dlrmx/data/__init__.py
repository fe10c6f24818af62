"""Training data on disk: the format written by `dlrmx.preprocess` and read by the trainer
(see `format`)."""

from dlrmx.data.format import (FORMAT_VERSION, SPLITS, DataFormatError, Split, SplitWriter,
                               open_split, read_spec, write_dataset, write_spec, write_split)

__all__ = ["FORMAT_VERSION", "SPLITS", "DataFormatError", "Split", "SplitWriter", "open_split",
           "read_spec", "write_dataset", "write_spec", "write_split"]
