"""`python -m dlrmx.info`: what this dlrmx build holds and what it will use."""

from __future__ import annotations

import os


def info() -> dict:
    import torch

    from dlrmx import __version__, cuda, native, ops

    isa = ops.isa_info()
    return {
        "dlrmx": __version__,
        "torch": torch.__version__,
        # The native library is built without torch (a C ABI, dlrmx.native): it serves any torch
        # the package supports.
        "torch_built_for": f"any torch >= {native.MIN_TORCH} (no torch at build time; C ABI "
                           f"v{native.ABI_VERSION}, {native.library_path().name})",
        "isa_compiled": isa["compiled"],
        "isa_supported": isa["supported"],
        "isa_active": isa["active"],
        "isa_forced": os.environ.get("DLRMX_CPU_ISA") or None,
        "threads": torch.get_num_threads(),
        "cuda_kernels": "loaded" if cuda.lib is not None else cuda.load_error,
        "cuda_available": cuda.available(),  # loaded, a GPU seen, a driver that runs it
    }


def main() -> None:
    for key, value in info().items():
        if isinstance(value, list):
            value = ", ".join(value)
        print(f"{key:20s} {value}")


if __name__ == "__main__":
    main()
