"""The trainer's peak memory: the tables and their optimizer state are built in place, so the
peak RSS of a run stays within 1.15x (tables + state) above a tiny run's (both in one fresh
process, fp32 and bf16)."""

import json
import subprocess
import sys

import pytest

from dlrmx.data.synthetic import table_sizes

CHILD = """
import json, resource, sys
from dlrmx.train import run
peaks = []
for cfg in json.loads(sys.argv[1]):  # a tiny run first: libraries, kernels, buffers all loaded
    run(cfg)
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print(json.dumps(peaks))
"""


def _peak_rss(tmp_path, scale: float, **kw) -> list[int]:
    """Peak RSS after a tiny run, then after the real run, in one fresh process."""
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
    tiny, big = _peak_rss(tmp_path, scale, precision=precision, optimizer=optimizer)
    ratio = (big - tiny) / need
    print(f"{precision}/{optimizer}: {need / 2**20:.0f} MiB of tables+state, peak RSS "
          f"{big / 2**20:.0f} MiB vs {tiny / 2**20:.0f} MiB after a tiny run: {ratio:.3f}x")
    assert ratio <= 1.15
    assert ratio >= 0.9  # the measurement sees the tables at all
