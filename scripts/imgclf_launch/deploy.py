"""Deploy a trained model to a real-time endpoint with the image, or delete one.

    python scripts/deploy.py --model-data s3://BUCKET/imgclf/JOB/output/model.tar.gz --endpoint dogs
    python scripts/deploy.py --model-data JOB_NAME --endpoint dogs --autoscale-max 4
    python scripts/deploy.py --delete --endpoint dogs
    python scripts/deploy.py ... --dry-run      # print every request (CreateModel ... PutScalingPolicy), send none

On GPU instance types the endpoint config asks for an inference AMI whose NVIDIA driver runs the
image's CUDA 13.0 torch (InferenceAmiVersion, see flags.INFERENCE_AMI_VERSIONS); on CPU types none.
"""

from __future__ import annotations

import argparse
import sys

from . import aws_errors, backends, flags
from .dryrun import DryRun
from .jobs import Deployment


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.add_settings(parser, "deploy")
    flags.add_instance_args(parser)
    parser.add_argument("--endpoint", required=True, help="endpoint name")
    parser.add_argument("--model-data", help="s3://.../model.tar.gz, file://... with --local, or a training job name")
    parser.add_argument("--autoscale-max", type=flags.at_least(2), help="target-tracking autoscaling from --instance-count "
                        "up to N instances")
    parser.add_argument("--invocations-per-instance", type=flags.at_least(1), default=100,
                        help="per minute, the scaling target")
    parser.add_argument("--inference-ami-version", default="auto",
                        choices=("auto", "none", *flags.INFERENCE_AMI_VERSIONS),
                        help=f"auto: {flags.INFERENCE_AMI_VERSIONS[0]} on GPU instance types, none on CPU types")
    parser.add_argument("--delete", action="store_true", help="delete the endpoint, its config and its model")
    return parser.parse_args(argv)


def checked(args: argparse.Namespace) -> argparse.Namespace:
    """What deploy needs beyond the settings: a model, and an autoscaling range."""
    if args.delete:
        return args
    if not args.model_data:
        raise flags.LaunchError("--model-data is required to deploy")
    args.model_data = flags.model_data(args.model_data, args.local)
    if args.autoscale_max is not None and args.local:
        raise flags.LaunchError("--autoscale-max: local mode has no autoscaling")
    if args.autoscale_max is not None and args.autoscale_max <= args.instance_count:
        raise flags.LaunchError(f"--autoscale-max {args.autoscale_max} must be above --instance-count {args.instance_count}, "
                                "where scaling starts")
    return args


@aws_errors.one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = checked(parse(argv))
    target = flags.target_from(args, "deploy --delete" if args.delete else "deploy")
    dry_run = DryRun() if target.dry_run else None
    backend = backends.connect(target, dry_run)
    if args.delete:
        backend.delete_endpoint(args.endpoint)
    else:
        deployment = Deployment(model_data=backend.model_data_of(args.model_data), endpoint_name=args.endpoint,
                                ami=flags.inference_ami_version(target.instance_type, args.inference_ami_version))
        backend.deploy(deployment, wait=dry_run is None)
        if args.autoscale_max is not None:
            backend.autoscale(args.endpoint, target.instance_count, args.autoscale_max, args.invocations_per_instance)
    if dry_run is not None:
        dry_run.print()
    elif args.delete:
        print(f"deleted endpoint {args.endpoint}")
    else:
        print(f"endpoint {args.endpoint} is in service: python scripts/invoke.py IMAGE --endpoint {args.endpoint}"
              + (" --local" if target.local else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
