"""One training job with SageMaker Debugger and profiler rules.

    python scripts/train_debug.py --data s3://BUCKET/dogs --output-path s3://BUCKET/imgclf \\
        --hyperparameters best_hyperparameters.json
    python scripts/train_debug.py ... --dry-run      # print the CreateTrainingJob request only

Hooks losses, weights, gradients and relu_input; rules LossNotDecreasing, VanishingGradient, Overfit,
Overtraining, PoorWeightInitialization, ProfilerReport, LowGPUUtilization (docs/observability.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from botocore.exceptions import ClientError

from imgclf.hyperparameters import parse_hyperparameters

from . import aws_errors, backends, debugger, flags
from .hyperparameters import checked, with_defaults
from .jobs import Target, TrainingJob
from .names import timestamped

# The reference project's batch size and learning rate, over the container's defaults.
DEFAULTS = {"batch-size": "256", "lr": "0.00105"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.add_settings(parser, "train_debug")
    flags.add_instance_args(parser)
    flags.add_training_args(parser)
    parser.add_argument("--hyperparameters", type=Path, help="JSON from tune.py --best")
    parser.add_argument("--custom-rule-image", help="the sagemaker-debugger-rule-evaluator image URI of your region")
    parser.add_argument("--no-debugger", action="store_true", help="no Debugger hook or rules (the in-container rules still run)")
    return parser.parse_args(argv)


def hyperparameters_from(path: Path | None) -> dict[str, str]:
    given = {}
    if path:
        try:
            given = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise flags.LaunchError(f"--hyperparameters {path}: {e}") from None
        if not isinstance(given, dict):
            raise flags.LaunchError(f"--hyperparameters {path}: expected a JSON object of name: value")
    return checked(with_defaults(DEFAULTS, given))


def training_job(target: Target, args: argparse.Namespace, rules_source: str | None) -> TrainingJob:
    with_debugger = not (target.local or args.no_debugger)  # local mode drops Debugger settings
    tensorboard = f"{target.output_path}/tensorboard" if (target.output_path or "").startswith("s3://") else None
    hyperparameters = hyperparameters_from(args.hyperparameters)
    arch = parse_hyperparameters([f"--{name}={value}" for name, value in hyperparameters.items()]).arch
    channels = flags.channels(target.data) | flags.pretrained_channel(args.pretrained, target.local)
    return TrainingJob(hyperparameters=hyperparameters, channels=channels,
                       name=timestamped("imgclf"), tensorboard_s3=tensorboard,
                       debugger=debugger.settings(target.output_path, args.custom_rule_image, rules_source, arch)
                       if with_debugger else None)


@aws_errors.one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    target = flags.target_from(args, "train_debug")
    if args.custom_rule_image and not target.output_path:
        raise flags.LaunchError("--custom-rule-image needs --output-path: the rules' source is uploaded there")
    rules_source = f"{target.output_path}/debug-rules/rules.py" if args.custom_rule_image else None
    job = training_job(target, args, rules_source)
    backend = backends.connect(target)
    if rules_source and job.debugger:
        if not target.dry_run:
            backend.upload_file(debugger.RULES_SOURCE, rules_source)
        else:
            print(f"--- would upload {debugger.RULES_SOURCE} to {rules_source}")
    if job.tensorboard_s3:
        print(f"TensorBoard: SageMaker uploads the job's event files under {job.tensorboard_s3} while it runs; open it "
              f"in SageMaker's TensorBoard app or: tensorboard --logdir {job.tensorboard_s3}")
    try:
        result = backend.train(job, wait=not target.dry_run)
    except ClientError as e:
        raise flags.LaunchError(aws_errors.explain(e, with_debugger=job.debugger is not None)) from None
    if target.dry_run:
        backend.dry_run.print()
        return 0
    for rule, status in result.rule_statuses:
        print(f"rule {rule}: {status}")
    print(f"model: {result.model_data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
