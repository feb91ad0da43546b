"""The ``profile-steps`` hyperparameter: a torch.profiler trace of a window of training steps."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

log = logging.getLogger(__name__)

SKIP_STEPS = 2  # the first steps autotune kernels and fill caches: not representative
WARMUP_STEPS = 1


def start_profiler(steps: int, directory: Path, device: torch.device) -> profile | None:
    """A started profiler recording ``steps`` steps after the first few (``.step()`` after each); None for 0."""
    if steps == 0:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    profiler = profile(
        activities=activities,
        schedule=schedule(wait=SKIP_STEPS, warmup=WARMUP_STEPS, active=steps, repeat=1),
        on_trace_ready=tensorboard_trace_handler(str(directory)),
        record_shapes=True,
        profile_memory=True,
    )
    profiler.start()
    first = SKIP_STEPS + WARMUP_STEPS + 1
    log.info("torch.profiler records steps %d-%d into %s", first, first + steps - 1, directory)
    return profiler


def stop_profiler(profiler: profile | None, directory: Path) -> None:
    if profiler is None:
        return
    profiler.stop()
    traces = sorted(directory.glob("*.pt.trace.json*"))
    if traces:
        log.info("profiler trace: %s (tensorboard --logdir %s, with torch-tb-profiler; or ui.perfetto.dev)",
                 ", ".join(t.name for t in traces), directory)
    else:
        log.warning("no profiler trace: the job ran fewer than %d steps", SKIP_STEPS + WARMUP_STEPS + 1)
