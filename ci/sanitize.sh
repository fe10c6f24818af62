#!/usr/bin/env bash
# Build dlrmx with AddressSanitizer + UndefinedBehaviorSanitizer in its own venv (.venv-san) and
# run the kernel tests under it. Python itself is not instrumented, so the ASan runtime is
# preloaded and leak checking (which would report the interpreter's own allocations) is off.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-san DLRMX_SANITIZE=1 bash ci/setup.sh
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
exec .venv-san/bin/python -m pytest tests/test_embedding_bag.py tests/test_collection.py tests/test_bad_input.py \
  tests/test_optim.py tests/test_interaction.py tests/test_native_safety.py tests/test_fuzz_ops.py \
  tests/test_sketch.py tests/test_cache.py -q -p no:cacheprovider "$@"
