#!/usr/bin/env bash
# Set up (with the benchmark extras: FBGEMM's CPU build), then run the embedding benchmark.
# Extra arguments go to bench/embedding.py (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
DLRMX_EXTRAS=${DLRMX_EXTRAS:-test,tune,bench} bash ci/setup.sh
exec .venv/bin/python bench/embedding.py "$@"
