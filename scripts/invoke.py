"""Classify one image with a deployed endpoint and print the top-k labels.

    python scripts/invoke.py dog.jpg --endpoint dogs --top-k 3
    python scripts/invoke.py dog.jpg --endpoint dogs --local         # an endpoint deployed with --local
    python scripts/invoke.py dog.jpg --endpoint dogs --dry-run       # print the InvokeEndpoint request only

Sends InvokeEndpoint through the SDK's Predictor (boto3's sagemaker-runtime client; local mode's own
client with --local). A failure (no such endpoint, nothing listening, a 4xx from the model) is one line.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import launch

TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
         ".bmp": "image/bmp", ".gif": "image/gif", ".tif": "image/tiff", ".tiff": "image/tiff"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=Path)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))
    parser.add_argument("--local", action="store_true", help="an endpoint deployed with --local")
    parser.add_argument("--dry-run", action="store_true", help="print the InvokeEndpoint request; send nothing")
    args = parser.parse_args(argv)
    if args.local and args.dry_run:
        raise launch.LaunchError("--dry-run shows SageMaker API requests; --local sends none (drop one of them)")
    if not args.region and not args.local:
        raise launch.LaunchError("missing --region (or env AWS_REGION)")
    try:
        body = args.image.read_bytes()
    except OSError as e:
        raise launch.LaunchError(f"cannot read {args.image}: {e.strerror}") from None
    content_type = TYPES.get(args.image.suffix.lower(), "application/x-image")
    dry_run = launch.DryRun() if args.dry_run else None
    session = launch.session(launch.Target(args.region or "us-east-1", local=args.local, dry_run=args.dry_run), dry_run)
    answer = launch.predict(session, args.endpoint, body, content_type, args.top_k)
    if dry_run is not None:
        dry_run.print()
        return 0
    for rank, guess in enumerate(answer["predictions"][0], 1):
        print(f"{rank}. {guess['label']}  {guess['probability']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
