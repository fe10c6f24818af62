#!/usr/bin/env bash
# The one GPU check, for a machine with a GPU, nvcc and a CUDA build of torch (no network
# needed): compile-check every kernels/cuda source (ci/cuda_compile.sh), build dlrmx with both
# libraries (-DDLRMX_CUDA=ON) into a private target directory with that machine's own python,
# run the CUDA tests against the CPU kernels (tests/test_cuda.py, tests/test_device.py), then the
# benchmarks (bench/cuda.py: kernels against nn.EmbeddingBag; bench/hybrid.py: FAE's hybrid mode
# against host tables). Logs and JSON go to ${OUT:-build/cuda-check}; exits non-zero if any step
# failed, after running the others.
#   PYTHON=python3 bash ci/cuda_gpu_check.sh [--quick]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-build/cuda-check}
mkdir -p "$out"
py=${PYTHON:-python3}
site=${DLRMX_SITE:-/tmp/dlrmx-site}
quick=()
[ "${1:-}" = "--quick" ] && quick=(--quick)
status=0
step() {  # step NAME COMMAND...: run it, log to $out/NAME.txt, remember a failure
  local name=$1; shift
  echo "== $name: $*"
  "$@" 2>&1 | tee "$out/$name.txt"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || { echo "== $name FAILED (rc $rc)"; status=1; }
  return "$rc"
}
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
step torch "$py" -c 'import torch; assert torch.cuda.is_available(), "torch sees no GPU"; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name())' || exit 1
step compile bash ci/cuda_compile.sh
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
export CUDACXX=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}  # for CMake
rm -rf "$site"
step build "$py" -m pip install -q --no-deps --no-build-isolation --no-index --target "$site" \
  -C cmake.define.DLRMX_CUDA=ON -C build-dir=build/cuda-check-build . || exit 1
export PYTHONPATH="$site"
step info "$py" -m dlrmx.info
step tests timeout 600 "$py" -m pytest tests/test_cuda.py tests/test_device.py -q -rs -p no:cacheprovider
step bench_cuda "$py" bench/cuda.py --json "$out/bench_cuda.json" "${quick[@]}"
step bench_hybrid "$py" bench/hybrid.py --json "$out/bench_hybrid.json" "${quick[@]}"
exit "$status"
