"""Per-epoch checkpoints, one folder per job name and run settings (docs/reliability.md#checkpoints)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from dataclasses import asdict
from pathlib import Path

import torch

from . import atomic
from .hyperparameters import RUN_SETTINGS, ConfigError, Hyperparameters

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "last.pt"
PREVIOUS_FILE = "previous.pt"
SETTINGS_FILE = "settings.json"
_REQUIRED_KEYS = {"settings", "epoch", "stopped_early", "history", "best", "model", "optimizer", "scheduler"}


def run_settings(hp: Hyperparameters, class_folders: list[str]) -> dict:
    values = asdict(hp)
    return {**{name: values[name] for name in RUN_SETTINGS}, "classes": class_folders}


def run_folder_name(job_name: str, settings: dict) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return f"{re.sub(r'[^A-Za-z0-9-]', '-', job_name)}-{digest}"


class Checkpoints:
    """The checkpoint folder of one run."""

    def __init__(self, folder: Path, settings: dict):
        self.folder = folder
        self.settings = settings
        self.saved_epoch = 0  # the last epoch this job wrote (or resumed from)

    @property
    def path(self) -> Path:
        return self.folder / CHECKPOINT_FILE

    def save(self, state: dict) -> None:
        """Write ``last.pt``; the one it replaces becomes ``previous.pt``."""
        if not (self.folder / SETTINGS_FILE).exists():
            atomic.write_json(self.folder / SETTINGS_FILE, self.settings)
        if self.path.exists():
            os.replace(self.path, self.folder / PREVIOUS_FILE)
        atomic.save_torch(self.path, {**state, "settings": self.settings})
        self.saved_epoch = state["epoch"]

    def load(self) -> dict | None:
        """The newest readable checkpoint of this run, or None."""
        for name in (CHECKPOINT_FILE, PREVIOUS_FILE):
            path = self.folder / name
            if path.is_file():
                state = self._read(path)
                if state is not None:
                    self.saved_epoch = state["epoch"]
                    return state
        return None

    def _read(self, path: Path) -> dict | None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing = _REQUIRED_KEYS - set(state) if isinstance(state, dict) else _REQUIRED_KEYS
            if missing:
                raise ValueError(f"not a checkpoint of this program (lacks {', '.join(sorted(missing))})")
        except Exception as e:  # any unreadable file: torch raises many types for corrupt data
            aside = path.with_name(path.name + ".corrupt")
            with contextlib.suppress(FileNotFoundError):  # another local process set it aside first
                os.replace(path, aside)
            log.warning("checkpoint %s is unreadable (%s: %s); moved it to %s and %s", path, type(e).__name__,
                        str(e)[:200], aside.name, "trying the previous one" if path.name == CHECKPOINT_FILE
                        else "starting from scratch")
            return None
        if state["settings"] != self.settings:
            raise ConfigError(f"the checkpoint {path} was made with other settings: {differences(state['settings'], self.settings)}")
        return state


def differences(found: dict, wanted: dict) -> str:
    changed = [k for k in wanted if found.get(k) != wanted[k]]
    parts = [f"{k}={found.get(k)!r} there, {wanted[k]!r} here" for k in changed if k != "classes"]
    if "classes" in changed:
        parts.append(f"{len(found.get('classes') or [])} class folders there, {len(wanted['classes'])} here")
    return "; ".join(parts)


def other_runs(checkpoint_dir: Path, job_name: str) -> list[Path]:
    """The run folders ``job_name`` left under ``checkpoint_dir`` (one per settings it ran with)."""
    prefix = run_folder_name(job_name, {})[:-12]
    return sorted(p for p in checkpoint_dir.glob(prefix + "*") if re.fullmatch(r"[0-9a-f]{12}", p.name[len(prefix):]))


def open_run(checkpoint_dir: Path, job_name: str, settings: dict, resume_from: str) -> tuple[Checkpoints, dict | None]:
    """This run's checkpoints and the state to resume from: its own newest, else ``resume_from``'s run."""
    own = Checkpoints(checkpoint_dir / run_folder_name(job_name, settings), settings)
    if (checkpoint_dir / CHECKPOINT_FILE).is_file():
        log.info("ignoring %s: checkpoints now live in one folder per job and settings", checkpoint_dir / CHECKPOINT_FILE)
    state = own.load()
    if state is not None or not resume_from:
        return own, state
    source = Checkpoints(checkpoint_dir / run_folder_name(resume_from, settings), settings)
    state = source.load()
    if state is None:
        found = [_describe(p, settings) for p in other_runs(checkpoint_dir, resume_from)]
        raise ConfigError(
            f"resume-from={resume_from}: no checkpoint of job {resume_from!r} with this job's settings in "
            f"{checkpoint_dir}" + (f"; its runs differ: {' | '.join(found)}" if found else "")
        )
    log.info("continuing job %s's run from %s (resume-from)", resume_from, source.path)
    return own, state


def _describe(folder: Path, settings: dict) -> str:
    try:
        return differences(json.loads((folder / SETTINGS_FILE).read_text()), settings)
    except (OSError, ValueError):
        return f"{folder.name} (no readable {SETTINGS_FILE})"
