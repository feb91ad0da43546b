"""Classify one image with a deployed endpoint and print the top-k labels.

    python scripts/invoke.py dog.jpg --endpoint dogs --top-k 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import launch

TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=Path)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))
    parser.add_argument("--local", action="store_true", help="an endpoint deployed with --local")
    parser.add_argument("--dry-run", action="store_true", help="print the InvokeEndpoint request; send nothing")
    args = parser.parse_args(argv)
    content_type = TYPES.get(args.image.suffix.lower(), "application/x-image")
    body = args.image.read_bytes()
    if args.dry_run:
        print(json.dumps({"EndpointName": args.endpoint, "ContentType": content_type, "Accept": "application/json",
                          "CustomAttributes": f"top_k={args.top_k}", "Body": f"<{len(body)} bytes of {args.image}>"}))
        return 0
    if not args.region and not args.local:
        raise launch.LaunchError("missing --region (or env AWS_REGION)")
    target = launch.Target("", "", args.region or "us-east-1", "", None, "", 1, False, 0, args.local, False)
    session = launch.session(target)
    answer = launch.predict(session, args.endpoint, body, content_type, args.top_k)
    for rank, guess in enumerate(answer["predictions"][0], 1):
        print(f"{rank}. {guess['label']}  {guess['probability']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
