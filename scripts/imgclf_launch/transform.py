"""Batch transform: classify every image under an S3 prefix (or a local folder with --local).

    python scripts/transform.py --model-data JOB_NAME_OR_S3_MODEL_TAR --input s3://BUCKET/photos/ \
        --output-path s3://BUCKET/predictions --instance-type ml.g4dn.xlarge --instance-count 2
    python scripts/transform.py ... --dry-run       # print CreateModel and CreateTransformJob, send nothing
    python scripts/transform.py --local --model-data file://.../model.tar.gz --input folder/ --output-path out/

Each object is one request; SageMaker writes one JSON document per image, <key>.out, under the output
path (docs/launchers.md, "Batch transform").
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from . import aws_errors, backends, flags, local_containers
from .jobs import Target, Transform
from .names import timestamped
from .paths import REPO


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.add_settings(parser, "transform")
    flags.add_instance_args(parser)
    parser.add_argument("--model-data", required=True, help="s3://.../model.tar.gz, file://... with --local, or a training job name")
    parser.add_argument("--input", required=True, help="s3://BUCKET/PREFIX/ of images, or a local folder with --local")
    parser.add_argument("--content-type", default="application/x-image", help="sent with every image")
    parser.add_argument("--max-concurrent-transforms", type=flags.at_least(1),
                        help="requests in flight per instance (default: the container's)")
    parser.add_argument("--max-payload-mb", type=flags.at_least(1, flags.MAX_PAYLOAD_MB),
                        help="largest image in MB (default: the container's, 6)")
    flags.add_ami_arg(parser, "--transform-ami-version", flags.TRANSFORM_AMI_VERSIONS)
    flags.add_environment_arg(parser)
    parser.add_argument("--no-wait", action="store_true", help="start the job and return")
    return parser.parse_args(argv)


def summarize(output: Path, source: Path) -> int:
    """Print each image's top label from its .out document; returns how many there are."""
    outs = sorted(output.glob("*.out"))
    for out in outs:
        best = json.loads(out.read_text())["predictions"][0][0]
        print(f"{out.with_suffix('').name}: {best['label']} ({best['probability']:.3f})")
    print(f"{len(outs)} of {sum(1 for p in source.iterdir() if p.is_file())} images classified; results in {output}")
    return len(outs)


def warn_about_subfolders(folder: Path) -> None:
    """The SDK's local mode (LocalFileDataSource) reads only a folder's own files; S3 prefixes are read whole."""
    nested = sum(1 for p in folder.rglob("*") if p.is_file() and p.parent != folder)
    if nested:
        print(f"warning: local mode reads only the files directly in {folder}; {nested} in its subfolders are skipped",
              file=sys.stderr)


def check_limits(args: argparse.Namespace) -> None:
    """CreateTransformJob: MaxConcurrentTransforms * MaxPayloadInMB may not exceed 100 MB either."""
    if args.max_concurrent_transforms and args.max_payload_mb and \
            args.max_concurrent_transforms * args.max_payload_mb > flags.MAX_PAYLOAD_MB:
        raise flags.LaunchError(f"--max-concurrent-transforms {args.max_concurrent_transforms} times --max-payload-mb "
                                f"{args.max_payload_mb} is over SageMaker's limit of {flags.MAX_PAYLOAD_MB} MB")


def run_locally(target: Target, spec: Transform) -> None:
    """Local mode, with the serving container stopped however the job ends (local mode leaves it up)."""
    name = timestamped("imgclf-transform")
    output, source = Path(spec.output_path.removeprefix("file://")), Path(spec.input.removeprefix("file://"))
    output.mkdir(parents=True, exist_ok=True)
    warn_about_subfolders(source)
    with local_containers.owned(name), local_containers.staged_model(spec.model_data) as model_data:
        backend = backends.connect(target)
        backend.transform(replace(spec, model_data=model_data,
                                  environment=spec.environment | {local_containers.LOCAL_NAME: name}), wait=True)
    summarize(output, source)


@aws_errors.one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    target = flags.target_from(args, "transform")
    flags.in_s3("--input", args.input, target.local)
    check_limits(args)
    environment = flags.environment(args.env)
    model_data = flags.model_data(args.model_data, target.local)
    output = target.output_path or str(REPO / "build" / "transform")  # on SageMaker target_from asks for one
    ami = flags.ami_version(args.transform_ami_version, target.instance_type, flags.TRANSFORM_AMI_VERSIONS)
    spec = Transform(model_data=model_data, input=flags.prefix_uri(args.input),
                     output_path=output if output.startswith("s3://") else flags.prefix_uri(output),
                     content_type=args.content_type, max_concurrent_transforms=args.max_concurrent_transforms,
                     max_payload_mb=args.max_payload_mb, environment=environment,
                     ami=None if target.local else ami)
    if target.local:
        run_locally(target, spec)
        return 0
    backend = backends.connect(target)
    result = backend.transform(replace(spec, model_data=backend.model_data_of(model_data)),
                               wait=not (target.dry_run or args.no_wait))
    if target.dry_run:
        backend.dry_run.print()
    else:
        print(f"one JSON document per image: {result.rstrip('/')}/<key under {spec.input}>.out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
