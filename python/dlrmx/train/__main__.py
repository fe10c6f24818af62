"""python -m dlrmx.train [reference DLRM flags] [dlrmx flags]; --help lists them."""

from __future__ import annotations

import os
import sys

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a shared or
# oversubscribed machine (2 busy cores here) spinning made 2-thread steps 10-20x slower;
# measured 1.2k -> 10-27k samples/s for the default run. Set OMP_WAIT_POLICY to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from dlrmx.data.format import DataFormatError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from dlrmx.train import NonFiniteLossError, parse_args, run

    try:
        cfg = parse_args(argv)
        result = run(cfg)
    except (ValueError, FileNotFoundError, DataFormatError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    f = result.final.get("test") or result.final.get("val") or {}
    print(f"\n{result.stopped}: {result.steps} steps, {result.samples:,} samples in "
          f"{result.train_seconds:.1f} s ({result.samples_per_s:,.0f} samples/s)")
    if f:
        oracle = f" (oracle {result.oracle_auc:.4f})" if result.oracle_auc is not None else ""
        print(f"final AUC {f['auc']:.4f}{oracle}, logloss {f['logloss']:.4f}, "
              f"accuracy {f['accuracy']:.4f}; best val AUC {result.best_auc:.4f} at step "
              f"{result.best_step}")
    print(f"run directory: {result.run_dir}")
    return 130 if result.stopped == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
