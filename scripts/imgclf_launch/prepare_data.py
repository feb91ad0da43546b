"""Get the dog-breed dataset (or any ImageFolder tree) into S3 as train/, valid/ and test/ channels.

    python scripts/prepare_data.py --bucket BUCKET --prefix dogs                 # download, unzip, upload
    python scripts/prepare_data.py --bucket BUCKET --prefix mine --source path/to/tree_or.zip
    python scripts/prepare_data.py --bucket BUCKET --prefix weights --weights resnet50   # ImageNet weights, once

A rerun skips what S3 already has; prints the --data (or --pretrained) value for the launchers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

from .aws_errors import one_line_errors

DOGS_URL = "https://s3-us-west-1.amazonaws.com/udacity-aind/dog-project/dogImages.zip"
CHANNELS = ("train", "valid", "test")


def progress(label: str, done: int, total: int, started: float) -> None:
    rate = done / max(time.monotonic() - started, 1e-6) / 1e6
    end = "\n" if done >= total else ""
    print(f"\r{label}: {done / 1e6:,.1f} / {total / 1e6:,.1f} MB ({rate:.1f} MB/s)", end=end, flush=True)


def download(url: str, target: Path) -> Path:
    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length", 0))
        if target.exists() and target.stat().st_size == total:
            print(f"{target} already downloaded")
            return target
        started, done, partial = time.monotonic(), 0, target.with_suffix(".part")
        with open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                progress("download", done, total or done, started)
    partial.replace(target)
    return target


def unpack(archive: Path, work: Path) -> Path:
    with zipfile.ZipFile(archive) as zf:
        bad = zf.testzip()
        if bad is not None:
            raise SystemExit(f"error: {archive} is corrupt (first bad member: {bad}); delete it and run again")
        destination = work / archive.stem
        if not destination.exists():
            zf.extractall(destination)
    return destination


def find_root(tree: Path) -> Path:
    """The folder holding train/ (valid/ and test/ optional), at the top or one level down."""
    for candidate in [tree, *sorted(p for p in tree.iterdir() if p.is_dir())]:
        if (candidate / "train").is_dir():
            return candidate
    raise SystemExit(f"error: no train/ folder in {tree} or the folders under it: expected train/, valid/, test/")


def upload(root: Path, bucket: str, prefix: str, s3) -> tuple[int, int]:
    """Upload the channels under s3://bucket/prefix/; returns (uploaded, skipped)."""
    from boto3.s3.transfer import TransferConfig

    existing = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
        existing.update({obj["Key"]: obj["Size"] for obj in page.get("Contents", [])})
    files = [p for channel in CHANNELS if (root / channel).is_dir() for p in sorted((root / channel).rglob("*"))
             if p.is_file() and not p.name.startswith(".")]
    todo = [(p, f"{prefix.rstrip('/')}/{p.relative_to(root).as_posix()}") for p in files]
    todo = [(p, key) for p, key in todo if existing.get(key) != p.stat().st_size]
    total, done, started = sum(p.stat().st_size for p, _ in todo), 0, time.monotonic()
    config = TransferConfig(multipart_threshold=16 << 20, max_concurrency=8)
    for path, key in todo:
        s3.upload_file(str(path), bucket, key, Config=config)
        done += path.stat().st_size
        progress("upload", done, total, started)
    return len(todo), len(files) - len(todo)


def channel_counts(names: list[str]) -> dict[str, int]:
    """Files per channel among relative paths (a channel is any train/valid/test folder on the path)."""
    counts = {c: 0 for c in CHANNELS}
    for name in names:
        channel = next((part for part in name.split("/")[:-1] if part in CHANNELS), None)
        if channel and not name.endswith("/"):
            counts[channel] += 1
    return {c: n for c, n in counts.items() if n}


def dry_run_plan(source: str, work: Path, destination: str) -> str:
    """What a run would do, from what is already on this machine: no download, no unpacking, no S3 call."""
    if source.startswith(("https://", "http://")):
        return (f"would download {source} to {work / Path(source).name}, check its CRCs, unzip it and upload "
                f"train/ valid/ test/ to {destination} (dry run: nothing downloaded)")
    path = Path(source)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            counts = channel_counts(zf.namelist())
    else:
        root = find_root(path)
        counts = channel_counts([p.relative_to(root.parent).as_posix() for p in root.rglob("*") if p.is_file()])
    return f"channels in {source}: {counts}\nwould upload {sum(counts.values())} files to {destination} (dry run)"


def weights_source(given: str) -> str:
    """A URL or file as given; an arch name (resnet50) as torchvision's URL for its ImageNet weights."""
    if given.startswith(("https://", "http://")) or Path(given).is_file():
        return given
    try:
        from torchvision import models
    except ImportError:
        raise SystemExit(f"error: --weights {given}: no such file; torchvision, which knows each arch's URL, is not "
                         "installed: give the URL (https://download.pytorch.org/models/...) instead") from None
    try:
        return models.get_model_weights(given).DEFAULT.url
    except (ValueError, KeyError):
        raise SystemExit(f"error: --weights {given}: not a file, a URL or a torchvision model name") from None


def stage_weights(given: str, work: Path, bucket: str, prefix: str, s3) -> str:
    """Download the weights once (or take the local file) and upload them unless S3 has them; returns their URI."""
    source = weights_source(given)
    path = download(source, work / Path(source).name) if source.startswith(("https://", "http://")) else Path(source)
    key = f"{prefix.strip('/')}/{path.name}"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
    if any(o["Key"] == key and o["Size"] == path.stat().st_size for o in listed):
        print(f"s3://{bucket}/{key} already in S3")
    else:
        s3.upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


def weights_main(args: argparse.Namespace) -> int:
    if args.dry_run:
        print(f"would stage the ImageNet weights {args.weights} under s3://{args.bucket}/{args.prefix.strip('/')}/ (dry run)")
        return 0
    import boto3

    args.work.mkdir(parents=True, exist_ok=True)
    uri = stage_weights(args.weights, args.work, args.bucket, args.prefix, boto3.client("s3", region_name=args.region))
    print(f"use --pretrained {uri}")
    return 0


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", default="dogs")
    parser.add_argument("--source", default=DOGS_URL, help="a URL or local .zip, or a local folder (default: the dog dataset)")
    parser.add_argument("--work", type=Path, default=Path("build/data"), help="where downloads are kept and unpacked")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))
    parser.add_argument("--weights", metavar="ARCH_URL_OR_FILE",
                        help="stage ImageNet weights instead of data: an arch (torchvision's URL), a URL or a .pth file")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded; no S3 call")
    args = parser.parse_args(argv)
    destination = f"s3://{args.bucket}/{args.prefix.strip('/')}/"
    if args.weights:
        return weights_main(args)
    if not args.source.startswith(("https://", "http://")) and not Path(args.source).exists():
        raise SystemExit(f"error: --source {args.source}: no such file or folder (a URL, a .zip, or a folder holding train/)")
    if args.dry_run:
        print(dry_run_plan(args.source, args.work, destination))
        return 0
    import boto3

    args.work.mkdir(parents=True, exist_ok=True)
    source = args.source
    if source.startswith(("https://", "http://")):
        source = str(download(source, args.work / Path(source).name))
    path = Path(source)
    tree = unpack(path, args.work) if path.suffix == ".zip" else path
    root = find_root(tree)
    counts = {c: sum(1 for p in (root / c).rglob("*") if p.is_file()) for c in CHANNELS if (root / c).is_dir()}
    print(f"channels in {root}: {counts}")
    uploaded, skipped = upload(root, args.bucket, args.prefix, boto3.client("s3", region_name=args.region))
    print(f"uploaded {uploaded} files, skipped {skipped} already in S3; "
          f"use --data {destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
