"""Classify one image with a deployed endpoint and print the top-k labels.

    python scripts/invoke.py dog.jpg --endpoint dogs --top-k 3
    python scripts/invoke.py dog.jpg --endpoint dogs --local         # an endpoint deployed with --local
    python scripts/invoke.py dog.jpg --endpoint dogs --dry-run       # print the InvokeEndpoint request only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import aws_errors, backends, flags

TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
         ".bmp": "image/bmp", ".gif": "image/gif", ".tif": "image/tiff", ".tiff": "image/tiff"}


@aws_errors.one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=Path)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--top-k", type=flags.at_least(1), default=3)
    flags.add_settings(parser, "invoke")  # --region, --local (an endpoint deployed with --local), --dry-run
    args = parser.parse_args(argv)
    target = flags.target_from(args, "invoke")
    try:
        body = args.image.read_bytes()
    except OSError as e:
        raise flags.LaunchError(f"cannot read {args.image}: {e.strerror}") from None
    content_type = TYPES.get(args.image.suffix.lower(), "application/x-image")
    backend = backends.connect(target)
    answer = predict(backend, args.endpoint, body, content_type, args.top_k)
    if target.dry_run:
        backend.dry_run.print()
        return 0
    for rank, guess in enumerate(answer["predictions"][0], 1):
        print(f"{rank}. {guess['label']}  {guess['probability']:.3f}")
    return 0


def predict(backend, endpoint: str, body: bytes, content_type: str, top_k: int) -> dict:
    """The endpoint's answer; a transport or service error, or an answer without predictions, is one line."""
    import urllib3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        answer = backend.predict(endpoint, body, content_type, top_k)
    except (BotoCoreError, ClientError, urllib3.exceptions.HTTPError) as e:
        raise flags.LaunchError(f"endpoint {endpoint}: {' '.join(str(e).split())}") from None
    if not isinstance(answer, dict) or "predictions" not in answer:
        raise flags.LaunchError(f"endpoint {endpoint} answered {json.dumps(answer)[:500]}")
    return answer


if __name__ == "__main__":
    sys.exit(main())
