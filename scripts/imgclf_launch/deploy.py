"""Deploy a trained model to a real-time endpoint with the image, or delete one.

    python scripts/deploy.py --model-data s3://BUCKET/imgclf/JOB/output/model.tar.gz --endpoint dogs
    python scripts/deploy.py --model-data JOB_NAME --endpoint dogs --autoscale-max 4
    python scripts/deploy.py --model-data JOB_NAME --endpoint dogs-async --async s3://BUCKET/async-answers
    python scripts/deploy.py --model-data JOB_NAME --endpoint dogs-sls --serverless --memory-mb 6144
    python scripts/deploy.py --delete --endpoint dogs
    python scripts/deploy.py ... --dry-run      # print every request (CreateModel ... PutScalingPolicy), send none

GPU instance types get an inference AMI whose driver runs the image's CUDA 13.0 torch. Asynchronous
and serverless endpoints, and what --async sets in the container: docs/launchers.md, "Hosting options".
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from . import aws_errors, backends, flags, local_containers
from .jobs import Deployment, Serverless, Target

# The container's body limit and deadline at an asynchronous endpoint's (1 GB payloads, one hour).
ASYNC_ENVIRONMENT = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "1024", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "3600"}


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
    flags.add_ami_arg(parser, "--inference-ami-version", flags.INFERENCE_AMI_VERSIONS)
    flags.add_environment_arg(parser)
    parser.add_argument("--async", dest="async_output", metavar="S3_OUTPUT_PATH",
                        help="an asynchronous endpoint writing its answers under this s3:// prefix")
    parser.add_argument("--serverless", action="store_true", help="a serverless endpoint (CPU only)")
    parser.add_argument("--memory-mb", type=flags.at_least(1024, 6144), default=6144,
                        help="serverless memory, 1024 to 6144 in steps of 1024 (more memory, more vCPUs)")
    parser.add_argument("--max-concurrency", type=flags.at_least(1, 200), default=5, help="serverless requests at once")
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
    check_hosting(args)
    args.environment = flags.environment(args.env, ASYNC_ENVIRONMENT if args.async_output else {})
    if args.autoscale_max is not None and args.autoscale_max <= args.instance_count:
        raise flags.LaunchError(f"--autoscale-max {args.autoscale_max} must be above --instance-count {args.instance_count}, "
                                "where scaling starts")
    return args


def check_hosting(args: argparse.Namespace) -> None:
    """Refuse what SageMaker or local mode cannot host (docs/launchers.md, "Hosting options")."""
    if args.async_output:
        if args.local:
            raise flags.LaunchError("--async: the SDK's local mode has no asynchronous endpoints (drop --local)")
        if args.serverless:
            raise flags.LaunchError("--async and --serverless: an asynchronous endpoint runs on instances (drop one)")
        flags.in_s3("--async", args.async_output, local=False)
    if not args.serverless:
        return
    if args.local:
        raise flags.LaunchError("--serverless: the SDK's local mode has no serverless endpoints (drop --local)")
    if args.instance_type and flags.GPU_INSTANCE.match(args.instance_type):
        raise flags.LaunchError(f"--serverless with --instance-type {args.instance_type}: serverless endpoints have no GPUs "
                                "(and no instance type: drop it)")
    if args.instance_type or args.instance_count != 1 or args.autoscale_max or args.inference_ami_version not in ("auto", "none"):
        raise flags.LaunchError("--serverless: SageMaker picks and scales the machines; drop --instance-type, "
                                "--instance-count, --autoscale-max and --inference-ami-version (size it with --memory-mb)")
    if args.memory_mb % 1024:
        raise flags.LaunchError(f"--memory-mb {args.memory_mb}: serverless memory comes in steps of 1024 MB")


def deployment(args: argparse.Namespace, model_data: str, instance_type: str) -> Deployment:
    serverless = Serverless(args.memory_mb, args.max_concurrency) if args.serverless else None
    ami = flags.ami_version(args.inference_ami_version, instance_type, flags.INFERENCE_AMI_VERSIONS)
    return Deployment(model_data=model_data, endpoint_name=args.endpoint, async_output=args.async_output,
                      environment=args.environment, serverless=serverless, ami=None if serverless else ami)


def serve_locally(args: argparse.Namespace, target: Target) -> None:
    """Deploy in local mode, which keeps the endpoint in this process, and hold it until it is stopped."""
    name = args.endpoint
    with local_containers.owned(name), local_containers.staged_model(args.model_data) as model_data:
        backend = backends.connect(target)
        spec = deployment(args, model_data, target.instance_type)
        backend.deploy(replace(spec, environment=spec.environment | {local_containers.LOCAL_NAME: name}), wait=True)
        print(f"endpoint {name} is in service on http://localhost:{local_containers.PORT}: python scripts/invoke.py IMAGE "
              f"--endpoint {name} --local\nthis command holds it: stop it with Ctrl-C, or from another shell with "
              f"python scripts/deploy.py --delete --local --endpoint {name}", flush=True)
        why = local_containers.hold(name)
        backend.delete_endpoint(name)  # local mode's own cleanup: its compose process and temporary folder
    print(f"endpoint {name} stopped ({why})")


def delete_locally(name: str) -> None:
    """Stop the container of local endpoint ``name``, whichever process holds it."""
    stopped = local_containers.stop(name)
    if not stopped:
        raise flags.LaunchError(f"no local endpoint {name} is running (no container with "
                                f"{local_containers.LOCAL_NAME}={name} in docker ps)")
    print(f"deleted local endpoint {name} (container {', '.join(stopped)})")


@aws_errors.one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = checked(parse(argv))
    target = flags.target_from(args, "deploy --delete" if args.delete else "deploy")
    if target.local and args.delete:
        delete_locally(args.endpoint)
        return 0
    if target.local:
        serve_locally(args, target)
        return 0
    backend = backends.connect(target)
    if args.delete:
        backend.delete_endpoint(args.endpoint)
    else:
        spec = deployment(args, backend.model_data_of(args.model_data), target.instance_type)
        backend.deploy(spec, wait=not target.dry_run)
        if args.autoscale_max is not None:
            backend.autoscale(args.endpoint, target.instance_count, args.autoscale_max, args.invocations_per_instance)
    if target.dry_run:
        backend.dry_run.print()
    elif args.delete:
        print(f"deleted endpoint {args.endpoint}")
    else:
        print(f"endpoint {args.endpoint} is in service: python scripts/invoke.py IMAGE --endpoint {args.endpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
