"""`python -m dlrmx.info`: what this dlrmx build holds and what it will use."""

from __future__ import annotations

import os


def info() -> dict:
    import torch

    from dlrmx import __version__, native, ops
    from dlrmx.native import _C

    isa = ops.isa_info()
    return {
        "dlrmx": __version__,
        "torch": torch.__version__,
        "torch_built_for": native.built_for() or "unknown (a build without _build_info)",
        "isa_compiled": isa["compiled"],
        "isa_supported": isa["supported"],
        "isa_active": isa["active"],
        "isa_forced": os.environ.get("DLRMX_CPU_ISA") or None,
        "threads": torch.get_num_threads(),
        "cuda_kernels_built": bool(_C.cuda_built),
    }


def main() -> None:
    for key, value in info().items():
        if isinstance(value, list):
            value = ", ".join(value)
        print(f"{key:20s} {value}")


if __name__ == "__main__":
    main()
