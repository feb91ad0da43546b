"""Hyperparameter tuning with the image.

    python scripts/tune.py --data s3://BUCKET/dogs --output-path s3://BUCKET/imgclf --max-jobs 8
    python scripts/tune.py --data s3://BUCKET/dogs --output-path s3://BUCKET/imgclf --dry-run   # print the request only

Searches lr 0.001-0.1 (log), batch-size {32, 64, 128, 256}, epochs 2-4 for the best valid accuracy;
writes the best job's hyperparameters to --best (JSON), which train_debug.py takes with --hyperparameters.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import aws_errors, backends, flags
from .hyperparameters import SEARCH_SPACE, check_search_space, checked
from .jobs import TrainingJob, Tuning

# Each trial's event files go into its output.tar.gz: the tuning API takes no TensorBoardOutputConfig.
STATIC = {"tensorboard": "true"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.add_settings(parser, "tune")
    flags.add_instance_args(parser)
    flags.add_training_args(parser)
    parser.add_argument("--max-jobs", type=flags.at_least(1), default=8)
    parser.add_argument("--max-parallel-jobs", type=flags.at_least(1), default=2)
    parser.add_argument("--best", type=Path, default=Path("best_hyperparameters.json"))
    args = parser.parse_args(argv)
    if args.local:
        raise flags.LaunchError("the SDK's local mode has no tuner; try train_debug.py --local for one job")
    if args.spot:
        raise flags.LaunchError("--spot is for train_debug.py: a tuning job's trials would share one checkpoint prefix "
                                "and resume from each other's checkpoints")
    return args


@aws_errors.one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    target = flags.target_from(args, "tune")
    check_search_space(SEARCH_SPACE)  # every value the tuner may send is one the container accepts
    channels = flags.channels(target.data) | flags.pretrained_channel(args.pretrained, target.local)
    job = TrainingJob(hyperparameters=checked(STATIC), channels=channels)
    tuning = Tuning(search_space=SEARCH_SPACE, max_jobs=args.max_jobs, max_parallel_jobs=args.max_parallel_jobs)
    backend = backends.connect(target)
    result = backend.tune(job, tuning, wait=not target.dry_run)
    if target.dry_run:
        backend.dry_run.print()
        return 0
    chosen = {k: v for k, v in result.hyperparameters.items() if not k.startswith(("_", "sagemaker_"))}
    args.best.write_text(json.dumps(chosen, indent=1))
    print(f"best job {result.best_job}: {json.dumps(chosen)} (written to {args.best}); each trial's TensorBoard event "
          f"files are in tensorboard/ of its output.tar.gz under {target.output_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
