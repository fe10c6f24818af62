"""The trainer's peak memory: the tables and their optimizer state are built in place, so the
peak RSS of a run stays within 1.15x (tables + state) above the RSS it starts from (in a fresh
process, after a tiny run; fp32 and bf16)."""

import json
import subprocess
import sys

import pytest

from dlrmx.data.synthetic import table_sizes

CHILD = """
import json, resource, sys
from dlrmx.train import run
tiny, big = json.loads(sys.argv[1])
run(tiny)  # first: libraries, kernels and buffers loaded, and the peak of a run without tables
now = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
run(big)
print(json.dumps([now, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024]))
"""


def _peak_rss(tmp_path, scale: float, **kw) -> list[int]:
    """(RSS after a tiny run, peak RSS after the real run), in one fresh process. The baseline
    is the RSS then, not the tiny run's peak: how much of that peak is reused later varies
    with the machine's state (page cache, huge pages)."""
    base = dict(num_batches=4, mini_batch_size=256, eval_samples=2048, progress=False,
                plots=False, checkpoint_freq=0, **kw)
    cfgs = [dict(base, synthetic_scale=1e-5, run_dir=str(tmp_path / "tiny")),
            dict(base, synthetic_scale=scale, run_dir=str(tmp_path / "big"))]
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfgs)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("precision,optimizer,state_bytes", [
    ("fp32", "sgd", 0), ("bf16", "sgd", 0), ("fp32", "rowwise_adagrad", 4)])
def test_peak_rss_is_tables_and_state_plus_a_batch(tmp_path, precision, optimizer, state_bytes):
    scale = 0.2
    rows = sum(table_sizes("kaggle", scale))
    need = rows * 16 * 4 + rows * state_bytes  # d=16: fp32, or bf16 + int16 trail; row state
    before, peak = _peak_rss(tmp_path, scale, precision=precision, optimizer=optimizer)
    ratio = (peak - before) / need
    print(f"{precision}/{optimizer}: {need / 2**20:.0f} MiB of tables+state, peak RSS "
          f"{peak / 2**20:.0f} MiB, {before / 2**20:.0f} MiB before the run: {ratio:.3f}x")
    assert ratio <= 1.15
    assert peak >= need  # the measurement sees the tables at all
