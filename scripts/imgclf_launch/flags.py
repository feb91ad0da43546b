"""The flags the launchers share, declared and checked once and turned into a ``jobs.Target``."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from imgclf.hyperparameters import TRAINING_JOB_NAME

from .jobs import Target

GPU_INSTANCE = re.compile(r"^ml\.[gp]\d")  # ml.g4dn, g5, g6, p3, p4d, p5, ...: NVIDIA GPUs
# The AMIs the flags offer, the default for GPU instance types first (docs/launchers.md, "GPU drivers").
INFERENCE_AMI_VERSIONS = ("al2023-ami-sagemaker-inference-gpu-4-1", "al2-ami-sagemaker-inference-gpu-3-1",
                          "al2-ami-sagemaker-inference-gpu-2-1", "al2-ami-sagemaker-inference-gpu-2")
TRANSFORM_AMI_VERSIONS = ("al2-ami-sagemaker-batch-gpu-535", "al2-ami-sagemaker-batch-gpu-470")
LOCAL_ROLE = "arn:aws:iam::000000000000:role/local-mode"


class LaunchError(SystemExit):
    """A missing or bad flag, or a failed call: printed as one line, exit status 1."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")


# The settings each launcher's action needs on SageMaker (--local fills in the role and the region).
TRAINING = ("--image-uri", "--role", "--region", "--data", "--output-path")
NEEDS = {
    "train_debug": TRAINING,
    "tune": TRAINING,
    "deploy": ("--image-uri", "--role", "--region"),
    "deploy --delete": ("--region",),
    "transform": ("--image-uri", "--role", "--region", "--output-path"),
    "invoke": ("--region",),
}
# Each setting's environment variables (the first one set wins) and help.
SETTINGS = {
    "--image-uri": (("IMGCLF_IMAGE_URI",), "the pushed image, ACCOUNT.dkr.ecr.REGION.amazonaws.com/imgclf:TAG"),
    "--role": (("SAGEMAKER_ROLE",), "SageMaker execution role ARN"),
    "--region": (("AWS_REGION", "AWS_DEFAULT_REGION"), "the AWS region"),
    "--data": (("IMGCLF_DATA",), "s3://BUCKET/PREFIX holding train/, valid/, test/ (or a local folder with --local)"),
    "--output-path": (("IMGCLF_OUTPUT_PATH",), "s3://BUCKET/PREFIX for what the jobs write (a local folder with --local)"),
}
MAX_PAYLOAD_MB = 100  # CreateTransformJob: "The value of MaxPayloadInMB cannot be greater than 100 MB"


def launcher_of(action: str) -> str:
    return action.split()[0]


def offered(launcher: str) -> list[str]:
    """The setting flags a launcher's actions need, each once, in declaration order."""
    return [flag for flag in SETTINGS if any(flag in needs for action, needs in NEEDS.items()
                                             if launcher_of(action) == launcher)]


def dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def at_least(minimum: int, maximum: int | None = None):
    """An argparse type: a whole number in [minimum, maximum], else argparse's one-line error."""
    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: it must be {bounds}")
        return value
    return whole_number


def add_settings(parser: argparse.ArgumentParser, launcher: str) -> None:
    """The setting flags the launcher's actions need (with their environment defaults), --local, --dry-run."""
    for flag in offered(launcher):
        names, text = SETTINGS[flag]
        default = next((os.environ[name] for name in names if os.environ.get(name)), None)
        parser.add_argument(flag, default=default, help=f"{text} (env {' or '.join(names)})")
    parser.add_argument("--local", action="store_true", help="SDK local mode: run the image on this machine")
    parser.add_argument("--dry-run", action="store_true", help="print every API request instead of sending it")


DEFAULT_INSTANCE_TYPE = "ml.g4dn.xlarge"


def add_instance_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--instance-type", help=f"default {DEFAULT_INSTANCE_TYPE}")
    parser.add_argument("--instance-count", type=at_least(1), default=1)


def add_training_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel over every GPU of every instance (torchrun; hyperparameter "
                             "sagemaker_torch_distributed_enabled); on by itself for one multi-GPU instance")
    parser.add_argument("--spot", action="store_true", help="managed spot training (checkpoints resume the job)")
    parser.add_argument("--max-run", type=at_least(1), default=4 * 3600, help="seconds")
    parser.add_argument("--pretrained", metavar="URI",
                        help="ImageNet weights as the job's 'pretrained' channel: an s3:// prefix or .pth object "
                             "(prepare_data.py --weights stages them), or a local file or folder with --local; "
                             "jobs under network isolation cannot download them")


def pretrained_channel(source: str | None, local: bool) -> dict[str, str]:
    """The 'pretrained' channel: an S3 prefix or object (S3Prefix matches the key), or locally a file or folder."""
    if not source:
        return {}
    if source.startswith("s3://"):
        return {"pretrained": source if source.endswith((".pth", ".pt")) else prefix_uri(source)}
    if not local:
        raise LaunchError(f"--pretrained {source}: SageMaker reads s3:// only (prepare_data.py --weights stages the "
                          "file there; a local file needs --local)")
    path = Path(source.removeprefix("file://")).resolve()
    if not path.exists():
        raise LaunchError(f"--pretrained {source}: no such file or folder")
    return {"pretrained": prefix_uri(str(path))}


# CreateModel's PrimaryContainer.Environment: botocore's EnvironmentMap, EnvironmentKey, EnvironmentValue.
ENVIRONMENT_KEY = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
MAX_ENVIRONMENT, MAX_ENVIRONMENT_VALUE = 100, 1024


def add_environment_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="a variable for the serving container (repeatable), e.g. SAGEMAKER_MODEL_SERVER_TIMEOUT=120")


def environment(pairs: list[str], defaults: dict[str, str] | None = None) -> dict[str, str]:
    """--env KEY=VALUE pairs over ``defaults``, each checked as CreateModel checks it."""
    variables = dict(defaults or {})
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not ENVIRONMENT_KEY.fullmatch(key):
            raise LaunchError(f"--env {pair}: expected KEY=VALUE with KEY of letters, digits and _ (not starting with a digit)")
        if len(value) > MAX_ENVIRONMENT_VALUE:
            raise LaunchError(f"--env {key}: the value is {len(value)} characters; SageMaker takes at most {MAX_ENVIRONMENT_VALUE}")
        variables[key] = value
    if len(variables) > MAX_ENVIRONMENT:
        raise LaunchError(f"--env: {len(variables)} variables; SageMaker takes at most {MAX_ENVIRONMENT}")
    return variables


def in_s3(flag: str, value: str, local: bool) -> None:
    """Data and outputs of work on SageMaker (a dry run shows that work) are in S3."""
    if not local and not value.startswith("s3://"):
        raise LaunchError(f"{flag} {value}: SageMaker reads and writes s3://BUCKET/PREFIX only (a local folder needs --local)")


def check_sdk_config_files(dry_run: bool) -> None:
    """The SDK's config-file overrides name a file or folder that exists (the SDK has a traceback for a
    missing one), or an s3:// object, which a dry run may not read."""
    for name in ("SAGEMAKER_ADMIN_CONFIG_OVERRIDE", "SAGEMAKER_USER_CONFIG_OVERRIDE"):
        path = os.environ.get(name, "")
        if dry_run and path.startswith("s3://"):
            raise LaunchError("dry run: your SageMaker SDK config is in S3 and reading it would send a request")
        if path and not path.startswith("s3://") and not Path(path).exists():
            raise LaunchError(f"{name}={path}: no such file or folder (the SageMaker SDK config to load)")


def check_region(region: str) -> None:
    """A region botocore's endpoint data knows SageMaker in (no request; the SDKs fail with a traceback)."""
    from botocore.loaders import create_loader
    from botocore.regions import EndpointResolver

    # Not from a boto3 Session, which would read the user's profile (a missing one fails it).
    resolver = EndpointResolver(create_loader().load_data("endpoints"))
    known = {name for partition in resolver.get_available_partitions()
             for name in resolver.get_available_endpoints("api.sagemaker", partition)}  # SageMaker's endpoint prefix
    if region not in known:
        raise LaunchError(f"--region {region}: SageMaker is not in that region as far as this botocore knows "
                          "(a new region needs a newer boto3)")


def target_from(args: argparse.Namespace, action: str) -> Target:
    """Check the settings ``action`` needs (a key of NEEDS); one clear line for what is missing or wrong."""
    if args.local and args.dry_run:
        raise LaunchError("--dry-run shows SageMaker API requests; --local sends none (drop one of them)")
    check_sdk_config_files(args.dry_run)
    values = {flag: getattr(args, dest(flag), None) for flag in offered(launcher_of(action))}
    if args.local:
        values["--role"] = values.get("--role") or LOCAL_ROLE
        values["--region"] = values.get("--region") or "us-east-1"
    needed = [flag for flag in NEEDS[action] if not (args.local and flag == "--output-path")]
    missing = [flag for flag in needed if not values.get(flag)]
    if missing:
        names = ", ".join(" or ".join(SETTINGS[flag][0]) for flag in missing)
        raise LaunchError(f"missing {', '.join(missing)} (flags, or env {names})")
    for flag in ("--data", "--output-path"):
        if flag in needed:
            in_s3(flag, values[flag], args.local)
    if not args.local:
        check_region(values["--region"])
    instance_type = getattr(args, "instance_type", "local") or DEFAULT_INSTANCE_TYPE
    if args.local and not instance_type.startswith("local"):
        instance_type = "local"
    return Target(region=values["--region"], image_uri=values.get("--image-uri") or "", role=values.get("--role") or "",
                  data=values.get("--data") or "", output_path=(values.get("--output-path") or "").rstrip("/") or None,
                  instance_type=instance_type, instance_count=getattr(args, "instance_count", 1),
                  distributed=getattr(args, "distributed", False), spot=getattr(args, "spot", False),
                  max_run=getattr(args, "max_run", 0), local=args.local, dry_run=args.dry_run)


def model_data(source: str, local: bool) -> str:
    """--model-data: s3://.../model.tar.gz, file://... with --local, or a training job name."""
    if source.startswith("s3://") or (local and source.startswith("file://")):
        return source
    if source.startswith("file://"):
        raise LaunchError(f"--model-data {source}: file:// needs --local; SageMaker reads s3://.../model.tar.gz")
    if not TRAINING_JOB_NAME.fullmatch(source):
        raise LaunchError(f"--model-data {source}: expected s3://.../model.tar.gz, a training job name (letters, digits "
                          "and dashes, at most 63), or file://... with --local")
    return source


def prefix_uri(location: str) -> str:
    """An S3 prefix ending in "/" (s3://b/dogs/valid would also match dogs/validation/), or a file:// folder."""
    if location.startswith("s3://"):
        return location.rstrip("/") + "/"
    return "file://" + str(Path(location.removeprefix("file://")).resolve())


def channels(data: str) -> dict[str, str]:
    """train/valid/test under --data."""
    base = data.rstrip("/")
    return {name: prefix_uri(f"{base}/{name}") for name in ("train", "valid", "test")}


def add_ami_arg(parser: argparse.ArgumentParser, flag: str, versions: tuple[str, ...]) -> None:
    parser.add_argument(flag, default="auto", choices=("auto", "none", *versions),
                        help=f"auto: {versions[0]} on GPU instance types, none on CPU types")


def ami_version(choice: str, instance_type: str, versions: tuple[str, ...]) -> str | None:
    """An AMI flag's value: auto is the first of ``versions`` on GPU instance types, else none."""
    if choice != "auto":
        return None if choice == "none" else choice
    return versions[0] if GPU_INSTANCE.match(instance_type) else None
