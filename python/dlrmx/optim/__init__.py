"""Dense optimizers backed by fused multi-tensor kernels, and the DLRM learning-rate schedule.

Sparse (embedding) optimizers are fused into the embedding backward: see `dlrmx.nn`.
"""

from dlrmx.optim.lamb import Lamb
from dlrmx.optim.schedule import WarmupPolyDecay
from dlrmx.optim.split_sgd import SplitSGD

__all__ = ["Lamb", "SplitSGD", "WarmupPolyDecay"]
