"""What a user's install meets: the native library needs no torch (a C ABI loaded with ctypes),
exports only that ABI, names itself in `dlrmx.info`, fails to load with a clear error, and the
sdist holds only what a build needs, with the LICENSE. The wheel itself is built in pip's build
isolation and installed into a fresh venv by ci/wheel.sh."""

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import torch

from dlrmx import native
from dlrmx.info import info

ROOT = Path(__file__).resolve().parents[1]


def _readelf(*args) -> str:
    return subprocess.run(["readelf", *args, str(native.library_path())], capture_output=True,
                          text=True, check=True).stdout


def test_the_library_links_no_torch_no_python_and_exports_only_its_c_abi():
    needed = [line.split("[")[1].rstrip("]") for line in _readelf("-d").splitlines()
              if "(NEEDED)" in line]
    assert not [n for n in needed if n.startswith(("libtorch", "libc10", "libpython"))], needed
    assert "libgomp.so.1" in needed  # torch's own, shared (one OpenMP pool)
    exported = {line.split()[-1] for line in _readelf("--dyn-syms", "-W").splitlines()
                if " GLOBAL " in line and " UND " not in line}
    assert exported and all(name.startswith("dlrmx_") for name in exported), sorted(exported)


def test_info_names_the_torch_it_runs_on_and_the_library():
    i = info()
    assert i["torch"] == torch.__version__
    assert f"any torch >= {native.MIN_TORCH}" in i["torch_built_for"]
    assert f"C ABI v{native.ABI_VERSION}" in i["torch_built_for"]
    out = subprocess.run([sys.executable, "-m", "dlrmx.info"], capture_output=True, text=True,
                         check=True).stdout
    assert f"torch                {torch.__version__}" in out


def _import_copy(tmp_path, with_library: bool, abi: int | None = None) -> str:
    """Import dlrmx from a copy of its Python files (with the built library beside them or not,
    and optionally expecting another ABI version); the last line of stderr."""
    pkg = tmp_path / "dlrmx"
    shutil.copytree(ROOT / "python" / "dlrmx", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    if with_library:
        shutil.copy(native.library_path(), pkg)
    if abi is not None:
        src = (pkg / "native.py").read_text()
        (pkg / "native.py").write_text(src.replace(f"ABI_VERSION = {native.ABI_VERSION}", f"ABI_VERSION = {abi}"))
    p = subprocess.run([sys.executable, "-S", "-c", "import sys; sys.path[:0] = sys.argv[1:3]; import dlrmx.nn",
                        str(tmp_path), *[q for q in sys.path if q.endswith("site-packages")][:1]],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode != 0
    return p.stderr.strip().splitlines()[-1]


def test_a_missing_library_is_a_clear_import_error(tmp_path):
    last = _import_copy(tmp_path, with_library=False)
    assert last.startswith("ImportError: dlrmx's native library libdlrmx.so is missing"), last
    assert "pip install --force-reinstall" in last


def test_a_library_of_another_abi_version_is_a_clear_import_error(tmp_path):
    last = _import_copy(tmp_path, with_library=True, abi=native.ABI_VERSION + 1)
    assert last.startswith("ImportError: dlrmx's native library"), last
    assert f"has C ABI version {native.ABI_VERSION}, but this Python package expects " \
           f"{native.ABI_VERSION + 1}" in last


def test_sdist_holds_only_what_a_build_needs(tmp_path, monkeypatch):
    from scikit_build_core.build import build_sdist

    monkeypatch.chdir(ROOT)
    name = build_sdist(str(tmp_path))
    with tarfile.open(tmp_path / name) as tar:
        top = {m.name.split("/")[1] for m in tar.getmembers() if "/" in m.name}
    assert {"CMakeLists.txt", "pyproject.toml", "LICENSE", "README.md", "csrc", "kernels",
            "python"} <= top
    assert not top & {".ci", "ci", "bench", "tests"}, top


def test_the_batch_description_matches_the_c_header():
    # dlrmx.native_ops.Batch writes the DLRMX_BAGS_* fields by position: the header's order.
    import re

    from dlrmx import native_ops

    header = (ROOT / "csrc" / "dlrmx.h").read_text()
    block = header[header.index("DLRMX_BAGS_NUM_TABLES = 0"):]
    block = block[:block.index("DLRMX_BAGS_HEADER") + len("DLRMX_BAGS_HEADER")]
    fields = re.findall(r"^\s*DLRMX_BAGS_([A-Z_]+)", block, flags=re.M)
    assert fields.index("NUM_THREADS") == native_ops._NUM_THREADS
    w = [torch.zeros(3, 2), torch.zeros(4, 2)]
    b = native_ops.Batch(w, torch.tensor([0, 1]), torch.tensor([0, 1, 1, 2, 2]), None, [-1, 1], 0, 2)
    assert len(b.desc) == fields.index("HEADER") + 4 * len(w)
    assert list(b.desc)[fields.index("HEADER"):] == [w[0].data_ptr(), w[1].data_ptr(), 3, 4, 2, 2, -1, 1]
    assert b.desc[fields.index("BATCH_SIZE")] == 2 and b.desc[fields.index("NUM_IDS")] == 2
