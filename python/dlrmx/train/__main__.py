"""python -m dlrmx.train [reference DLRM flags] [dlrmx flags]; --help lists them."""

from __future__ import annotations

import os
import sys

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a shared or
# oversubscribed machine (2 busy cores here) spinning made 2-thread steps 10-20x slower;
# measured 1.2k -> 10-27k samples/s for the default run. Set OMP_WAIT_POLICY to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from dlrmx.cli import die  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from dlrmx.distributed import DistributedError
    from dlrmx.preprocess.report import PreprocessError
    from dlrmx.train import NonFiniteLossError, run
    from dlrmx.train.config import parse_cli

    try:
        cfg, notes = parse_cli(argv)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        result = run(cfg)
    except (ValueError, FileNotFoundError, PreprocessError, NonFiniteLossError,
            DistributedError) as e:
        return die(e)
    except OSError as e:  # a run directory that cannot be written, a full disk, ...
        where = f" {e.filename}" if e.filename else ""
        return die(f"{e.strerror or e}{where}: check the path, its permissions and free space")
    except KeyboardInterrupt:
        print("interrupted before training started", file=sys.stderr)
        return 130
    if result.rank == 0:  # under a launcher, rank 0 speaks for the run
        print(summary_text(result))
    return 130 if result.stopped == "interrupted" else 0


def summary_text(result) -> str:
    lines = [f"\n{result.stopped}: {result.steps} steps, {result.samples:,} samples in "
             f"{result.train_seconds:.1f} s ({result.samples_per_s:,.0f} samples/s)"]
    f = result.final.get("test") or result.final.get("val")
    if f:
        oracle = f" (oracle {result.oracle_auc:.4f})" if result.oracle_auc is not None else ""
        lines.append(f"final AUC {f['auc']:.4f}{oracle}, logloss {f['logloss']:.4f}, "
                     f"accuracy {f['accuracy']:.4f}; best val AUC {result.best_auc:.4f} at step "
                     f"{result.best_step}")
    elif result.stopped == "interrupted":
        last = result.last_eval.get("val")
        seen = (f"; the last validation AUC was {last['auc']:.4f} (best {result.best_auc:.4f} at "
                f"step {result.best_step})" if last else "")
        lines.append(f"no final evaluation: continue with --resume{seen}")
    lines.append(f"run directory: {result.run_dir}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
