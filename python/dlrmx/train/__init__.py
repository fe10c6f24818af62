"""`python -m dlrmx.train` and its Python API: `dlrmx.train.run(config) -> TrainResult`."""

from dlrmx.train.config import TrainConfig, parse_args
from dlrmx.train.loop import NonFiniteLossError, TrainResult, run

__all__ = ["TrainConfig", "TrainResult", "NonFiniteLossError", "parse_args", "run"]
