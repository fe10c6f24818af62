"""The reference DLRM's flags (dlrm_s_pytorch.py) that have no TrainConfig field of their own.

Flags with a field keep the reference's meaning (config.py). The ones here are accepted too,
so the reference's command lines run as they are: each either changes nothing in dlrmx (a note
says what happens instead) or is a feature dlrmx does not have, which is refused only when set
to something other than the reference's default."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RefFlag:
    name: str            # field-style name: memory_map for --memory-map
    type: type           # int, float, str, or bool
    default: Any         # the reference's default
    note: str            # what dlrmx does instead
    supported: bool = True  # False: any value other than the default is refused


_B, _I, _F, _S = bool, int, float, str
FLAGS = [
    RefFlag("memory_map", _B, False, "always on: the training files are memory-mapped"),
    RefFlag("mlperf_bin_shuffle", _B, False, "training batches are always shuffled (blocks of "
            "batches, rows within them); --data-randomize none turns it off"),
    RefFlag("round_targets", _B, False, "labels are always 0/1 in dlrmx (checked when the data "
            "is opened)"),
    RefFlag("num_workers", _I, 0, "batches are prefetched by --data-workers threads"),
    RefFlag("test_num_workers", _I, -1, "evaluation batches are prefetched by --data-workers "
            "threads"),
    RefFlag("dataset_multiprocessing", _B, False, "dlrmx.preprocess is always parallel"),
    RefFlag("print_precision", _I, 5, "progress lines print 4-6 significant digits"),
    RefFlag("debug_mode", _B, False, "no effect; see RUN_DIR/config.json and metrics.jsonl"),
    RefFlag("plot_compute_graph", _B, False, "no effect (torchviz is not used)"),
    RefFlag("tensor_board_filename", _S, "run_kaggle_pt", "TensorBoard logs go to "
            "RUN_DIR/tensorboard with --tensorboard"),
    RefFlag("sync_dense_params", _B, True, "no effect (multi-GPU replication only)"),
    RefFlag("use_gpu", _B, False, "--device cuda where dlrmx's CUDA kernels and a GPU are "
            "present, else the CPU (as the reference falls back)"),
    RefFlag("local_rank", _I, -1, "ranks come from the launcher's environment (torchrun, "
            "mpirun, TorchDistributor)"),
    RefFlag("data_trace_file", _S, "./input/dist_emb_j.log", "trace-based data is not "
            "supported; --data-generation synthetic is dlrmx's planted-teacher data"),
    RefFlag("data_trace_enable_padding", _B, False, "trace-based data is not supported"),
    RefFlag("rand_data_min", _F, 0.0, "random ids are uniform over each table"),
    RefFlag("rand_data_max", _F, 1.0, "random ids are uniform over each table"),
    RefFlag("rand_data_mu", _F, -1.0, "random ids are uniform over each table"),
    RefFlag("rand_data_sigma", _F, 1.0, "random ids are uniform over each table"),
    RefFlag("rand_data_dist", _S, "uniform", "only uniform random data", supported=False),
    RefFlag("arch_interaction_itself", _B, False, "the dot interaction uses the strict lower "
            "triangle (the reference's default)", supported=False),
    RefFlag("weighted_pooling", _S, "", "embedding bags are sum-pooled (the reference's "
            "default)", supported=False),
    RefFlag("activation_function", _S, "relu", "the MLPs use ReLU (the reference's default)",
            supported=False),
    RefFlag("md_flag", _B, False, "mixed-dimension embeddings are not supported", supported=False),
    RefFlag("md_threshold", _I, 200, "mixed-dimension embeddings are not supported"),
    RefFlag("md_temperature", _F, 0.3, "mixed-dimension embeddings are not supported"),
    RefFlag("md_round_dims", _B, False, "mixed-dimension embeddings are not supported"),
    RefFlag("qr_flag", _B, False, "quotient-remainder embeddings are not supported",
            supported=False),
    RefFlag("qr_threshold", _I, 200, "quotient-remainder embeddings are not supported"),
    RefFlag("qr_operation", _S, "mult", "quotient-remainder embeddings are not supported"),
    RefFlag("qr_collisions", _I, 4, "quotient-remainder embeddings are not supported"),
    RefFlag("quantize_mlp_with_bit", _I, 32, "MLPs are fp32 or bf16 (--precision)",
            supported=False),
    RefFlag("quantize_emb_with_bit", _I, 32, "tables are fp32 or bf16 (--precision)",
            supported=False),
    RefFlag("mlperf_grad_accum_iter", _I, 1, "no gradient accumulation: raise "
            "--mini-batch-size instead", supported=False),
    RefFlag("save_onnx", _B, False, "ONNX export is not supported; use torch.export on "
            "dlrmx.models.DLRM", supported=False),
]
BY_NAME = {f.name: f for f in FLAGS}


def add_to(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "the reference DLRM's other flags", "accepted so its command lines run unchanged; each "
        "prints what dlrmx does instead, and features dlrmx lacks are refused unless left at the "
        "reference's default")
    for f in FLAGS:
        flag = "--" + f.name.replace("_", "-")
        if f.name == "local_rank":
            flag = "--local_rank"  # spelled with an underscore in the reference
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS,
                              "help": f"{f.note} (reference default: {f.default!r})"}
        if f.type is bool:
            from dlrmx.train.config import _bool_arg
            kw.update(nargs="?", const=True, type=_bool_arg, metavar="BOOL")
        else:
            kw.update(type=f.type, metavar={int: "N", float: "X", str: "TEXT"}[f.type])
        g.add_argument(flag, **kw)


def apply(values: dict[str, Any]) -> list[str]:
    """Remove the reference-only flags from `values` (flags or YAML); return one note per flag
    given, and raise ValueError for a feature dlrmx lacks set away from its default."""
    notes = []
    for name in [k for k in values if k in BY_NAME]:
        f, value = BY_NAME[name], values.pop(name)
        flag = "--" + name.replace("_", "-")
        value = _typed(f, value, flag)
        if not f.supported and value not in (f.default, None) and str(value) != str(f.default):
            raise ValueError(f"{flag}={value}: not supported by dlrmx ({f.note})")
        notes.append(f"{flag}: {f.note}")
        if name == "use_gpu" and value and "device" not in values:
            from dlrmx import cuda

            values["device"] = "cuda" if cuda.available() else "cpu"
    return notes


def _typed(f: RefFlag, value: Any, flag: str) -> Any:
    """The value as the flag's type (YAML gives 'no' or '5' as readily as False or 5)."""
    from dlrmx.train.config import _to_bool, _to_number

    if value is None:
        return None
    if f.type is bool:
        return _to_bool(value, flag)
    if f.type in (int, float):
        return _to_number(value, flag, f.type.__name__)
    if isinstance(value, (list, dict, bool)):
        raise ValueError(f"{flag} expects a string, got {type(value).__name__} {value!r}")
    return str(value)
