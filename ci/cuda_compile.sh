#!/usr/bin/env bash
# Compile check of the CUDA kernels, no GPU needed: every kernels/cuda/*.cu compiled for sm_80 and
# sm_90 with warnings as errors (nvcc's and the host compiler's -Wall -Wextra), then linked into a
# throwaway libdlrmx_cuda.so (no undefined symbols; only dlrmx_cuda_* exported), all in a
# temporary directory. Exits non-zero on any error and prints how long it took.
#
# nvcc: from PATH, else /usr/local/cuda/bin/nvcc, else (no CUDA toolkit on the machine) the
# CUDA 13 pip packages nvidia-cuda-nvcc, -cuda-runtime, -cuda-crt, -nvvm and -cuda-cccl,
# installed with --no-deps into a venv under build/cuda-pip (reused by later runs);
# DLRMX_CUDA_FROM_PIP=1 takes that way even where a toolkit is installed.
# DLRMX_CUDA_KEEP=DIR keeps the linked libdlrmx_cuda.so there (ci/cuda_gpu_check.sh loads it).
#   bash ci/cuda_compile.sh              NVCC=/path/to/nvcc bash ci/cuda_compile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s.%N)
elapsed() { awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }

NVCC=${NVCC:-}
INCLUDES=()
LINK_RUNTIME=(-cudart static)
if [ -z "$NVCC" ]; then
  if [ "${DLRMX_CUDA_FROM_PIP:-0}" != 1 ] && command -v nvcc >/dev/null 2>&1; then
    NVCC=$(command -v nvcc)
  elif [ "${DLRMX_CUDA_FROM_PIP:-0}" != 1 ] && [ -x /usr/local/cuda/bin/nvcc ]; then
    NVCC=/usr/local/cuda/bin/nvcc
  else
    venv=build/cuda-pip
    if [ ! -x "$venv/bin/python" ]; then
      echo "cuda_compile: installing the CUDA 13 compiler wheels into $venv (no nvcc, or DLRMX_CUDA_FROM_PIP=1)"
      python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
      'nvidia-cuda-nvcc==13.*' 'nvidia-cuda-runtime==13.*' 'nvidia-cuda-crt==13.*' \
      'nvidia-nvvm==13.*' 'nvidia-cuda-cccl==13.*'
    root=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')
    NVCC=$root/bin/nvcc
    # The wheels put the runtime's and CCCL's headers in one include tree, and the runtime wheel
    # ships libcudart_static.a (no unversioned libcudart.so for -cudart shared).
    INCLUDES=(-I"$root/include" -I"$root/include/cccl")
    LINK_RUNTIME=(-cudart static -L"$root/lib")
    export PATH="$root/bin:$PATH"
  fi
fi
echo "cuda_compile: $("$NVCC" --version | tail -n 2 | head -n 1) ($NVCC)"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
FLAGS=(-std=c++17 -O3
       -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
       -Werror all-warnings
       -Xcompiler=-Wall,-Wextra,-Wno-unused-parameter,-Werror,-fPIC,-fvisibility=hidden
       -Ikernels/cuda -Icsrc "${INCLUDES[@]}")
objects=()
status=0
for src in kernels/cuda/*.cu; do
  obj="$out/$(basename "${src%.cu}").o"
  t0=$(date +%s.%N)
  if "$NVCC" "${FLAGS[@]}" -c "$src" -o "$obj"; then
    printf 'cuda_compile: %-32s ok (%.1f s)\n' "$src" \
      "$(awk -v s="$t0" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')"
    objects+=("$obj")
  else
    echo "cuda_compile: $src FAILED"
    status=1
  fi
done
if [ "$status" = 0 ]; then
  lib="$out/libdlrmx_cuda.so"
  if "$NVCC" -shared "${LINK_RUNTIME[@]}" -gencode arch=compute_80,code=sm_80 \
       -gencode arch=compute_90,code=sm_90 -Xlinker --no-undefined \
       -Xlinker --version-script=kernels/cuda/exports.map "${objects[@]}" -o "$lib"; then
    exported=$(nm -D --defined-only "$lib" | awk '{ print $3 }' | grep -v '^dlrmx_cuda_' || true)
    if [ -n "$exported" ]; then
      echo "cuda_compile: libdlrmx_cuda.so exports more than dlrmx_cuda_*:"; echo "$exported"
      status=1
    else
      echo "cuda_compile: linked libdlrmx_cuda.so ($(nm -D --defined-only "$lib" | grep -c ' dlrmx_cuda_') functions exported)"
      if [ -n "${DLRMX_CUDA_KEEP:-}" ]; then
        mkdir -p "$DLRMX_CUDA_KEEP" && cp "$lib" "$DLRMX_CUDA_KEEP/"
        echo "cuda_compile: kept $DLRMX_CUDA_KEEP/libdlrmx_cuda.so"
      fi
    fi
  else
    echo "cuda_compile: link FAILED"
    status=1
  fi
fi
if [ "$status" = 0 ]; then
  echo "cuda_compile: OK, ${#objects[@]} sources for sm_80 and sm_90 in $(elapsed) s"
else
  echo "cuda_compile: FAILED after $(elapsed) s"
fi
exit "$status"
