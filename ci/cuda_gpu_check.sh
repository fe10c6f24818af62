#!/usr/bin/env bash
# The one GPU check of the CUDA kernels, for a machine with a GPU and a CUDA build of torch (it
# needs no network): build libdlrmx_cuda.so (ci/cuda_compile.sh, which also compile-checks every
# source), run tests/test_cuda.py against the CPU kernels, then bench/cuda.py. Logs and the
# benchmark's JSON go to ${OUT:-build/cuda-check}.
#   PYTHON=/path/to/python bash ci/cuda_gpu_check.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-build/cuda-check}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
"$py" -c 'import torch; assert torch.cuda.is_available(), "torch sees no GPU"; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name())' | tee "$out/torch.txt"
DLRMX_CUDA_KEEP="$out/lib" bash ci/cuda_compile.sh 2>&1 | tee "$out/compile.txt"
export DLRMX_CUDA_LIBRARY="$PWD/$out/lib/libdlrmx_cuda.so"
status=0
"$py" -m pytest tests/test_cuda.py -q -rs 2>&1 | tee "$out/test_cuda.txt" || status=1
bench_args=(--json "$out/bench_cuda.json")
[ "${1:-}" = "--quick" ] && bench_args+=(--quick)
"$py" bench/cuda.py "${bench_args[@]}" 2>&1 | tee "$out/bench_cuda.txt" || status=1
exit "$status"
