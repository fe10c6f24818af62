"""Training on a Spark cluster: `train_on_spark(config, num_processes)` runs `dlrmx.train.run`
in `num_processes` processes through Spark's TorchDistributor (Spark 3.4+), which starts them
with torchrun, so the ranks join as under any launcher (dlrmx.distributed.launch). The cluster
that ran `python -m dlrmx.preprocess --engine spark` trains too; with local_mode the processes
run on the driver (one machine), otherwise one per task on the executors (the data directory
and --run-dir must then be on storage every executor sees)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _train(config: dict[str, Any]) -> None:
    from dlrmx.train import run

    run(config)


def train_on_spark(config: dict[str, Any], num_processes: int = 2, local_mode: bool = True
                   ) -> dict[str, Any]:
    """Train as `config` says (the options of `python -m dlrmx.train`, as a dict) on
    num_processes Spark-launched ranks; returns the run's summary (rank 0's TrainResult, as
    RUN_DIR/summary.json holds it). Uses the active SparkSession, or starts a local one."""
    from pyspark.ml.torch.distributor import TorchDistributor
    from pyspark.sql import SparkSession

    SparkSession.builder.getOrCreate()
    distributor = TorchDistributor(num_processes=num_processes, local_mode=local_mode,
                                   use_gpu=False)
    distributor.run(_train, dict(config))
    return json.loads((Path(config.get("run_dir", "runs/default")) / "summary.json").read_text())
