"""Resource names with a timestamp, in the two formats the SDKs' name_from_base makes."""

from __future__ import annotations

from datetime import datetime, timezone


def timestamped(base: str) -> str:
    """BASE-YYYY-MM-DD-HH-MM-SS-mmm (training jobs, models, transform jobs)."""
    now = datetime.now(timezone.utc)
    return f"{base}-{now:%Y-%m-%d-%H-%M-%S}-{now.microsecond // 1000:03d}"


def short_timestamped(base: str) -> str:
    """BASE-YYMMDD-HHMM: tuning job names may be at most 32 characters."""
    return f"{base[:20]}-{datetime.now(timezone.utc):%y%m%d-%H%M}"


def image_base(image_uri: str) -> str:
    """The repository name of an image URI: ACCOUNT.dkr.ecr.REGION.amazonaws.com/imgclf:TAG -> imgclf."""
    return image_uri.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
