"""Loading dlrmx._C, the native kernels, with a clear error when they cannot serve this torch.

The extension is compiled against one torch's C++ ABI, which changes between torch's minor
versions: loaded under another one it fails with an undefined symbol, or worse. The build records
its torch in `dlrmx/_build_info.py`; a different major.minor here is an ImportError saying what
to rebuild."""

from __future__ import annotations

import importlib


def built_for() -> str | None:
    """The torch version dlrmx._C was compiled against (None for a build that did not say)."""
    try:
        return importlib.import_module("dlrmx._build_info").TORCH_VERSION
    except ImportError:
        return None


def _minor(version: str) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:2])


REBUILD = ("rebuild dlrmx against this torch: `pip install --no-build-isolation --force-reinstall "
           "<dlrmx source>` (or `bash ci/setup.sh` in a checkout)")


def load():
    import torch

    built = built_for()
    if built is not None and _minor(built) != _minor(torch.__version__):
        raise ImportError(f"dlrmx's native kernels were built for torch {built}, but this is torch "
                          f"{torch.__version__} (torch's C++ ABI changes between minor versions): "
                          + REBUILD)
    try:
        return importlib.import_module("dlrmx._C")
    except ImportError as e:
        raise ImportError(f"dlrmx's native kernels (dlrmx._C) did not load under torch "
                          f"{torch.__version__} (built for {built or 'an unknown torch'}): {e}; "
                          + REBUILD) from e


_C = load()
