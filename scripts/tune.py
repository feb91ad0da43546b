"""Hyperparameter tuning with the image: a generic Estimator and a HyperparameterTuner.

    python scripts/tune.py --data s3://BUCKET/dogs --output-path s3://BUCKET/imgclf --max-jobs 8
    python scripts/tune.py --data s3://BUCKET/dogs --dry-run       # print the request, send nothing

Searches lr 0.001-0.1 (log), batch-size {32, 64, 128, 256}, epochs 2-4 for the best valid
accuracy, then prints the best job and writes its hyperparameters to --best (JSON), which
train_debug.py takes with --hyperparameters.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import launch

# tensorboard=true: the tuning API takes no TensorBoardOutputConfig, so each trial writes its event
# files into its own output.tar.gz (tensorboard/) instead.
FIXED = {"arch": "resnet50", "pretrained": "true", "tensorboard": "true"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    launch.add_common_args(parser)
    parser.add_argument("--max-jobs", type=int, default=8)
    parser.add_argument("--max-parallel-jobs", type=int, default=2)
    parser.add_argument("--best", type=Path, default=Path("best_hyperparameters.json"))
    args = parser.parse_args(argv)
    if args.local:
        raise launch.LaunchError("the SDK's local mode has no tuner; try train_debug.py --local for one job")
    if args.spot:
        raise launch.LaunchError("--spot is for train_debug.py: a tuning job's trials would share one checkpoint prefix "
                                 "and resume from each other's checkpoints")
    target = launch.target_from(args)
    dry_run = launch.DryRun() if target.dry_run else None
    session = launch.session(target, dry_run)
    tuner = launch.tuner(launch.estimator(target, session, FIXED), args.max_jobs, args.max_parallel_jobs)
    tuner.fit(launch.channels(target), wait=dry_run is None)
    if dry_run is not None:
        dry_run.print()
        return 0
    best = tuner.best_training_job()
    hyperparameters = tuner.best_estimator().hyperparameters()
    chosen = {k: v for k, v in hyperparameters.items() if not k.startswith(("_", "sagemaker_"))}
    args.best.write_text(json.dumps(chosen, indent=1))
    print(f"best job {best}: {json.dumps(chosen)} (written to {args.best}); each trial's TensorBoard event "
          f"files are in tensorboard/ of its output.tar.gz under {target.output_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
