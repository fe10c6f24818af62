"""DLRM and its building blocks."""

from dlrmx.models.dcn import LowRankCrossNet
from dlrmx.models.dlrm import DLRM, gemm_widths, make_mlp
from dlrmx.models.interaction import (
    cat_interaction,
    dot_interaction,
    dot_interaction_reference,
    interaction_width,
)

__all__ = ["DLRM", "LowRankCrossNet", "gemm_widths", "make_mlp", "dot_interaction", "dot_interaction_reference", "cat_interaction",
           "interaction_width"]
