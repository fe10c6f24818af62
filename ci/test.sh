#!/usr/bin/env bash
# The test command (README): set up .venv and the native build from scratch if needed, then run
# the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
exec .venv/bin/python -m pytest tests -q "$@"
