"""Run the container's ``train`` outside docker, in a folder laid out like SageMaker's /opt/ml.

    python scripts/local_train.py --data local_test/data --base build/demo \\
        --hyperparameters local_test/test_dir/input/config/hyperparameters.json epochs=2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from .paths import REPO

PROGRAM_DIR = REPO / "container" / "program"
PROGRAM = "train_program.py"  # the image sets SAGEMAKER_PROGRAM to the same name


def layout(base: Path, channels: Mapping[str, Path], hyperparameters: Mapping[str, object]) -> None:
    """Write base/{input/config,input/data,model,output} as SageMaker would; checkpoints/ is kept."""
    for stale in ("input", "code", "model", "output"):
        shutil.rmtree(base / stale, ignore_errors=True)
    config, data = base / "input" / "config", base / "input" / "data"
    for folder in (config, data, base / "model", base / "output"):
        folder.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({k: str(v) for k, v in hyperparameters.items()}))
    (config / "inputdataconfig.json").write_text(json.dumps({
        name: {"ContentType": "application/x-image", "TrainingInputMode": "File",
               "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for name in channels
    }))
    # localhost: outside docker the toolkit must resolve the host names it is given
    (config / "resourceconfig.json").write_text(json.dumps({
        "current_host": "localhost", "hosts": ["localhost"], "network_interface_name": "lo",
        "current_instance_type": "local",
    }))
    for name, path in channels.items():
        (data / name).symlink_to(Path(path).resolve(), target_is_directory=True)


def run_train(base: Path, extra_env: Mapping[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run the image's ``train`` (the toolkit's, with SIGTERM forwarding) against ``base``."""
    return subprocess.run(train_command(), env=train_env(base, extra_env), **kwargs)


def train_command() -> list[str]:
    return [str(Path(sys.executable).parent / "imgclf-train")]  # the image links it as `train`


def train_env(base: Path, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "SAGEMAKER_BASE_DIR": str(base.resolve()), "SAGEMAKER_PROGRAM": PROGRAM,
            "IMGCLF_PROGRAM_DIR": str(PROGRAM_DIR), **(extra_env or {})}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder holding one sub-folder per channel")
    parser.add_argument("--base", type=Path, default=REPO / "build" / "opt_ml",
                        help="the /opt/ml stand-in (recreated, but checkpoints/ is kept: delete it to start over)")
    parser.add_argument("--hyperparameters", type=Path, help="a hyperparameters.json to start from")
    parser.add_argument("--pretrained", type=Path, help="ImageNet weights (.pth), or a folder holding them: the "
                        "'pretrained' channel (a file's folder is mounted)")
    parser.add_argument("overrides", nargs="*", metavar="NAME=VALUE", help="hyperparameters on top of the file")
    args = parser.parse_args()
    hyperparameters = json.loads(args.hyperparameters.read_text()) if args.hyperparameters else {}
    hyperparameters.update(item.split("=", 1) for item in args.overrides)
    channels = {p.name: p for p in sorted(args.data.iterdir()) if p.is_dir()}
    if args.pretrained:
        channels["pretrained"] = args.pretrained if args.pretrained.is_dir() else args.pretrained.parent
    layout(args.base, channels, hyperparameters)
    result = run_train(args.base)
    failure = args.base / "output" / "failure"
    if result.returncode != 0 and failure.exists():
        print(f"training failed: {failure.read_text()}", file=sys.stderr)
    else:
        print(f"model: {args.base / 'model'}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
