"""Per-epoch checkpoints in /opt/ml/checkpoints: SageMaker syncs that folder to S3 for managed
spot training and restores it into the next job, which resumes from it."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import ConfigError

CHECKPOINT_FILE = "last.pt"


def fingerprint(arch: str, image_size: int, class_folders: list[str]) -> dict:
    """What must match for a checkpoint to belong to this job."""
    return {"arch": arch, "image_size": image_size, "classes": class_folders}


def save_checkpoint(directory: Path, state: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (CHECKPOINT_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, directory / CHECKPOINT_FILE)  # a stop mid-write leaves the previous one intact


def load_checkpoint(directory: Path, expected: dict) -> dict | None:
    path = directory / CHECKPOINT_FILE
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    found = state.get("fingerprint")
    if found != expected:
        def describe(f: dict | None) -> str:
            return "an unknown job" if not f else f"{f['arch']} at {f['image_size']} px with {len(f['classes'])} classes"

        raise ConfigError(
            f"the checkpoint {path} was written by {describe(found)}, but this job trains {describe(expected)}; "
            "delete it or give this job another checkpoint location"
        )
    return state
