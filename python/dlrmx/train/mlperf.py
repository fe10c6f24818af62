"""`--mlperf-logging`: MLPerf-format `:::MLLOG` lines (the mlperf-logging package's mllog) in
RUN_DIR/mlperf_log.txt, with the events and keys the MLPerf DLRM rules ask for. A no-op when
the flag is off."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any


class MLPerfLog:
    def __init__(self, enabled: bool, path: Path) -> None:
        self.log = None
        if not enabled:
            return
        try:
            from mlperf_logging.mllog import mllog
        except ImportError as e:
            raise ValueError(f"--mlperf-logging needs the mlperf-logging package ({e}): "
                             "pip install mlperf-logging") from None
        logger = logging.getLogger(f"dlrmx.mlperf.{path}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        for h in list(logger.handlers):
            logger.removeHandler(h)
            h.close()
        logger.addHandler(logging.FileHandler(path, mode="a"))
        self.path, self.log = path, mllog.MLLogger(logger=logger, default_stack_offset=2)

    def event(self, key: str, value: Any = None, **metadata: Any) -> None:
        if self.log is not None:
            self.log.event(key=key, value=value, metadata=metadata or None)

    def start(self, key: str, value: Any = None, **metadata: Any) -> None:
        if self.log is not None:
            self.log.start(key=key, value=value, metadata=metadata or None)

    def end(self, key: str, value: Any = None, **metadata: Any) -> None:
        if self.log is not None:
            self.log.end(key=key, value=value, metadata=metadata or None)

    def run_header(self, cfg, train_samples: int, eval_samples: int) -> None:
        """The events before training: benchmark, hyper-parameters, sample counts."""
        self.event("cache_clear", True)
        self.event("submission_benchmark", "dlrm")
        self.event("submission_division", "open")
        self.event("global_batch_size", cfg.mini_batch_size)
        self.event("opt_base_learning_rate", cfg.learning_rate)
        self.event("opt_learning_rate_warmup_steps", cfg.lr_num_warmup_steps)
        self.event("opt_learning_rate_decay_start_step", cfg.lr_decay_start_step)
        self.event("opt_learning_rate_decay_steps", cfg.lr_num_decay_steps)
        self.event("seed", cfg.numpy_rand_seed)
        self.event("train_samples", train_samples)
        self.event("eval_samples", eval_samples)

    def close(self) -> None:
        if self.log is not None:
            for h in list(self.log.logger.handlers):
                self.log.logger.removeHandler(h)
                h.close()
            self.log = None
