"""The flags every launcher shares, checked once and turned into a ``jobs.Target``."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from .jobs import Target

# Instance families with NVIDIA GPUs: ml.g4dn, g5, g6, g6e, p3, p4d, p5, ... (CPU, Inferentia and
# Trainium families start with other letters).
GPU_INSTANCE = re.compile(r"^ml\.[gp]\d")
# ProductionVariant.InferenceAmiVersion (botocore 1.43 service model, enum
# ProductionVariantInferenceAmiVersion): the -4-1 AMI has driver 580 / CUDA 13.0, which runs the
# image's CUDA 13.0 torch natively; -3-1 (550) and -2-1 (535) need the forward-compatibility
# libraries the image enables itself. Without any, g4dn/g5/p3/p4d endpoints get driver 470.
INFERENCE_AMI_VERSIONS = ("al2023-ami-sagemaker-inference-gpu-4-1", "al2-ami-sagemaker-inference-gpu-3-1",
                          "al2-ami-sagemaker-inference-gpu-2-1", "al2-ami-sagemaker-inference-gpu-2")
# TransformResources.TransformAmiVersion: al2-ami-sagemaker-batch-gpu-470 (the default) or -535; only
# R535 and later run CUDA 13 (through the forward-compatibility libraries).
TRANSFORM_AMI_VERSION = "al2-ami-sagemaker-batch-gpu-535"
LOCAL_ROLE = "arn:aws:iam::000000000000:role/local-mode"


class LaunchError(SystemExit):
    """A missing or bad flag, or a failed call: printed as one line, exit status 1."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-uri", default=os.environ.get("IMGCLF_IMAGE_URI"),
                        help="the pushed image, ACCOUNT.dkr.ecr.REGION.amazonaws.com/imgclf:TAG (env IMGCLF_IMAGE_URI)")
    parser.add_argument("--role", default=os.environ.get("SAGEMAKER_ROLE"),
                        help="SageMaker execution role ARN (env SAGEMAKER_ROLE)")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))
    parser.add_argument("--data", default=os.environ.get("IMGCLF_DATA"),
                        help="s3://BUCKET/PREFIX holding train/, valid/, test/ (or a local folder with --local)")
    parser.add_argument("--output-path", default=os.environ.get("IMGCLF_OUTPUT_PATH"),
                        help="s3://BUCKET/PREFIX for model artifacts (env IMGCLF_OUTPUT_PATH)")
    parser.add_argument("--instance-type", default="ml.g4dn.xlarge")
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel over every GPU of every instance (torchrun; hyperparameter "
                             "sagemaker_torch_distributed_enabled); on by itself for one multi-GPU instance")
    parser.add_argument("--spot", action="store_true", help="managed spot training (checkpoints resume the job)")
    parser.add_argument("--max-run", type=int, default=4 * 3600, help="seconds")
    parser.add_argument("--local", action="store_true", help="SDK local mode: run the image on this machine")
    parser.add_argument("--dry-run", action="store_true", help="print every API request instead of sending it")


def check_local_and_dry_run(local: bool, dry_run: bool) -> None:
    if local and dry_run:
        raise LaunchError("--dry-run shows SageMaker API requests; --local sends none (drop one of them)")


def target_from(args: argparse.Namespace) -> Target:
    """Check the flags every launcher needs; one clear line for each missing one."""
    check_local_and_dry_run(args.local, args.dry_run)
    if args.local:
        args.instance_type = args.instance_type if args.instance_type.startswith("local") else "local"
        args.role = args.role or LOCAL_ROLE
        args.region = args.region or "us-east-1"
    missing = [flag for flag, value in (("--image-uri", args.image_uri), ("--role", args.role),
                                        ("--region", args.region), ("--data", args.data)) if not value]
    if missing:
        raise LaunchError(f"missing {', '.join(missing)} (flags, or env IMGCLF_IMAGE_URI, SAGEMAKER_ROLE, AWS_REGION, IMGCLF_DATA)")
    if not args.local and not args.dry_run and not (args.output_path or "").startswith("s3://"):
        raise LaunchError("--output-path s3://BUCKET/PREFIX is required for jobs on SageMaker")
    return Target(region=args.region, image_uri=args.image_uri, role=args.role, data=args.data,
                  output_path=(args.output_path or "").rstrip("/") or None, instance_type=args.instance_type,
                  instance_count=args.instance_count, distributed=args.distributed, spot=args.spot,
                  max_run=args.max_run, local=args.local, dry_run=args.dry_run)


def prefix_uri(location: str) -> str:
    """An S3 prefix ending in "/" (s3://b/dogs/valid would also match dogs/validation/...), or a
    local folder as file://."""
    if location.startswith("s3://"):
        return location.rstrip("/") + "/"
    return "file://" + str(Path(location.removeprefix("file://")).resolve())


def channels(data: str) -> dict[str, str]:
    """train/valid/test under --data."""
    base = data.rstrip("/")
    return {name: prefix_uri(f"{base}/{name}") for name in ("train", "valid", "test")}


def inference_ami_version(instance_type: str, choice: str = "auto") -> str | None:
    """The AMI for a real-time endpoint: none on CPU types and local mode, else the newest one."""
    if choice != "auto":
        return None if choice == "none" else choice
    return INFERENCE_AMI_VERSIONS[0] if GPU_INSTANCE.match(instance_type) else None


def transform_ami_version(instance_type: str, choice: str = "auto") -> str | None:
    if choice != "auto":
        return None if choice == "none" else choice
    return TRANSFORM_AMI_VERSION if GPU_INSTANCE.match(instance_type) else None
