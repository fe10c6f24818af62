#!/usr/bin/env bash
# The main job (README): set up .venv and the native build if needed, then train a DLRM on the
# built-in synthetic Criteo-like dataset (a few minutes on 2 cores). Arguments go to
# `python -m dlrmx.train` (see --help), e.g. --run-dir, --precision bf16, --optimizer hybrid.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
exec .venv/bin/python -m dlrmx.train "$@"
