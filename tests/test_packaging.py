"""What a user's install meets: the torch the native kernels were built for is recorded and
shown, an import under another torch minor version is a clear error, and the sdist holds only
what a build needs, with the LICENSE."""

import subprocess
import sys
import tarfile
from pathlib import Path

import torch

from dlrmx import native
from dlrmx.info import info


def test_info_names_the_torch_it_runs_on_and_was_built_for():
    i = info()
    assert i["torch"] == torch.__version__
    assert i["torch_built_for"] == native.built_for() == torch.__version__
    out = subprocess.run([sys.executable, "-m", "dlrmx.info"], capture_output=True, text=True,
                         check=True).stdout
    assert f"torch_built_for      {torch.__version__}" in out


def test_a_build_for_another_torch_is_a_clear_import_error():
    fake = ("import sys, types; m = types.ModuleType('dlrmx._build_info'); "
            "m.TORCH_VERSION = '2.1.0+cpu'; sys.modules['dlrmx._build_info'] = m; import dlrmx.nn")
    p = subprocess.run([sys.executable, "-c", fake], capture_output=True, text=True)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: dlrmx's native kernels were built for torch 2.1.0+cpu")
    assert torch.__version__ in last and "--no-build-isolation" in last


def test_sdist_holds_only_what_a_build_needs(tmp_path, monkeypatch):
    from scikit_build_core.build import build_sdist

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the project's root
    name = build_sdist(str(tmp_path))
    with tarfile.open(tmp_path / name) as tar:
        top = {m.name.split("/")[1] for m in tar.getmembers() if "/" in m.name}
    assert {"CMakeLists.txt", "pyproject.toml", "LICENSE", "README.md", "csrc", "kernels",
            "python"} <= top
    assert not top & {".ci", "ci", "bench", "tests"}, top
