#!/usr/bin/env bash
# Create .venv, install pinned dependencies and build dlrmx into it. Idempotent: a second run
# only rebuilds what changed. Everything a fresh machine needs is here.
#
#   TORCH_SPEC   which torch to install (default torch==2.13.0, the CPU build; a bare "torch"
#                from PyPI would pull several GB of CUDA packages onto a CPU machine)
#   TORCH_INDEX  an extra package index for TORCH_SPEC, e.g. a CUDA wheel index on a GPU machine
#   DLRMX_EXTRAS extras to install (default "test,tune"; add "bench" for FBGEMM comparisons)
#   DLRMX_SANITIZE=1  build with AddressSanitizer + UndefinedBehaviorSanitizer
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${DLRMX_EXTRAS:-test,tune}

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
PIP=("$PY" -m pip install -q --disable-pip-version-check)

# torch first, alone, so nothing below can drag in a different (CUDA) build.
if ! "$PY" -c "import torch" 2>/dev/null; then
  "${PIP[@]}" ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} "$TORCH_SPEC" numpy
fi
TORCH_VERSION=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
# Every later install is constrained to the torch we have.
echo "torch==$TORCH_VERSION" > "$VENV/torch-constraint.txt"
"${PIP[@]}" -c "$VENV/torch-constraint.txt" "scikit-build-core>=0.10" ninja

# No build isolation here only to reuse build/ between runs (an isolated build works too: the
# native library needs no torch, see ci/wheel.sh).
BUILD_ARGS=(--config-settings=build-dir="build/{wheel_tag}")
if [ "${DLRMX_SANITIZE:-0}" = 1 ]; then
  BUILD_ARGS=(--config-settings=build-dir="build/{wheel_tag}-sanitize"
              --config-settings=cmake.define.DLRMX_SANITIZE=ON)
fi
"${PIP[@]}" -c "$VENV/torch-constraint.txt" --no-build-isolation "${BUILD_ARGS[@]}" -e ".[$EXTRAS]"
# SigOpt's offline engine for `python -m dlrmx.tune` (pyproject.toml's tune extra says why these
# pins and --no-deps): about 15 MB of wheels, no build.
if [[ ",$EXTRAS," == *,tune,* ]] && ! "$PY" -c "import sigoptlite" 2>/dev/null; then
  "${PIP[@]}" --no-deps "sigoptlite==0.1.2" "libsigopt==1.0.0" "qmcpy==1.2"
fi
# --mlperf-logging writes through mlperf-logging's mllog, which needs only the standard library;
# --no-deps skips the pandas and scipy that its compliance checker (unused here) declares.
"$PY" -c "import mlperf_logging.mllog" 2>/dev/null ||
  "${PIP[@]}" --no-deps "mlperf-logging==4.1.68"
# TorchRec 1.8, for the drop-in tests (tests/test_torchrec_dropin.py) and bench/torchrec_dlrm.py:
# about 9 MB of wheels, 45 MB installed, seconds. --no-deps: torchrec declares an unpinned CUDA
# fbgemm-gpu (500 MB) and torchmetrics, which its EmbeddingBagCollection, KeyedJaggedTensor and
# DLRM never import; fbgemm-gpu-cpu 1.8.0 is the CPU build ABI-locked to torch 2.13 (skipped on
# any other torch: the tests then skip), and the rest is what `import torchrec` needs. dlrmx
# itself never imports torchrec.
if "$PY" -c "import sys, torch; sys.exit(not torch.__version__.startswith('2.13.'))" &&
   ! "$PY" -c "import torchrec.models.dlrm" 2>/dev/null; then
  "${PIP[@]}" --no-deps "torchrec==1.8.0" "fbgemm-gpu-cpu==1.8.0" "tensordict==0.15.3" \
    "pyvers==0.2.3" "pyre-extensions==0.0.32" "typing-inspect==0.9.0" "mypy-extensions==1.2.0"
fi
