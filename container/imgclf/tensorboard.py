"""TensorBoard event files (the ``tensorboard`` hyperparameter, or SageMaker's TensorBoardOutputConfig)."""

from __future__ import annotations

import atexit
import bisect
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torchvision.utils import make_grid

from .config import ConfigError, TrainingEnv
from .hyperparameters import Hyperparameters
from .monitor import RuleMonitor
from .preprocess import ImageSpec

if TYPE_CHECKING:
    from .summary_writer import SyncSummaryWriter

log = logging.getLogger(__name__)

CONFIG_FILE = "tensorboardoutputconfig.json"
DEFAULT_DIR = "tensorboard"  # under the output dir: /opt/ml/output/tensorboard, SageMaker's default LocalPath
PROFILE_RUN = "profiler"  # torch-tb-profiler shows every folder holding *.pt.trace.json as a run
FLUSH_SECONDS = 30
HISTOGRAM_BINS = 30
GRID_IMAGES = 32
CONFUSION_LABELS_MAX = 40  # more classes than this: no tick labels, they would overlap
EPOCH_CHARTS = {"epoch": {"loss": ["Multiline", ["epoch/train_loss", "epoch/valid_loss"]],
                          "accuracy": ["Multiline", ["epoch/train_accuracy", "epoch/valid_accuracy"]]}}
HPARAM_METRICS = ("epoch/valid_accuracy", "epoch/valid_loss", "final/test_accuracy", "final/test_loss",
                  "final/best_epoch")


def log_dir(setting: str, config_dir: Path, output_dir: Path, output_data_dir: Path) -> Path | None:
    """Where the event files go: the config file's LocalPath, else output_data_dir/tensorboard; None: nowhere."""
    config = config_dir / CONFIG_FILE
    if setting == "false" or (setting == "auto" and not config.is_file()):
        return None
    if not config.is_file():
        return output_data_dir / DEFAULT_DIR
    try:
        local_path = json.loads(config.read_text()).get("LocalPath") or str(output_dir / DEFAULT_DIR)
    except (ValueError, AttributeError) as e:
        raise ConfigError(f"{config} is not a JSON object with a LocalPath: {e}") from None
    return Path(local_path)


def open_board(hp: Hyperparameters, env: TrainingEnv, is_main: bool, spec: ImageSpec, monitor: RuleMonitor,
               optimizer: torch.optim.Optimizer) -> Board:
    """The job's board: writing on rank 0 when the job asks for TensorBoard, else doing nothing."""
    directory = log_dir(hp.tensorboard, env.input_config_dir, env.output_dir, env.output_data_dir) if is_main else None
    hparams = {k: ",".join(v) if isinstance(v, tuple) else v for k, v in asdict(hp).items()}
    return Board(directory, spec, monitor, optimizer, hp.batch_size, hparams)


class Board:
    """What a job writes to TensorBoard, each value when training has it (docs/observability.md: TensorBoard)."""

    def __init__(self, directory: Path | None, spec: ImageSpec, monitor: RuleMonitor, optimizer: torch.optim.Optimizer,
                 images_per_step: int, hparams: dict):
        self.directory = directory
        self.spec, self.monitor, self.optimizer, self.images_per_step = spec, monitor, optimizer, images_per_step
        self._losses: list[torch.Tensor] = []
        self._lrs: list[float] = []
        self._tick = self._last_flush = time.perf_counter()
        self._grid_written = False
        self._writer: SyncSummaryWriter | None = None
        if directory is None:
            return
        from tensorboardX.summary import hparams as hparams_summary

        from .summary_writer import SyncSummaryWriter

        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._writer = SyncSummaryWriter(str(directory))
        except OSError as e:
            raise ConfigError(f"cannot write TensorBoard event files to {directory}: {e}") from None
        experiment, start, self._session_end = hparams_summary(hparams, dict.fromkeys(HPARAM_METRICS, 0.0))
        self._writer.file_writer.add_summary(experiment)
        self._writer.file_writer.add_summary(start)
        self._writer.add_custom_scalars(EPOCH_CHARTS)
        self._flush()
        atexit.register(self.close)  # a failed or stopped job still leaves every step it logged
        log.info("TensorBoard event files in %s", directory)

    @property
    def active(self) -> bool:
        return self._writer is not None and self._writer.file_writer.error is None

    def _flush(self) -> None:
        self._writer.flush()
        self._last_flush = time.perf_counter()

    def _scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self._writer.add_scalar(tag, value, step)

    def see_inputs(self, inputs: torch.Tensor) -> None:
        """Draw the first augmented training batch as a grid, once."""
        if self.active and not self._grid_written:
            self._grid_written = True
            images = inputs[:GRID_IMAGES].detach().float()
            mean = torch.tensor(self.spec.mean, device=images.device).view(1, 3, 1, 1)
            std = torch.tensor(self.spec.std, device=images.device).view(1, 3, 1, 1)
            grid = make_grid((images * std + mean).clamp(0, 1), nrow=8, padding=2)
            self._writer.add_image("train/augmented_batch", grid, self.monitor.step + 1)

    def after_step(self, loss: torch.Tensor) -> None:
        """Call after each optimizer step, after the monitor's: buffers the loss without a device sync."""
        if not self.active:
            return
        self._losses.append(loss.detach().float())
        self._lrs.append(self.optimizer.param_groups[0]["lr"])
        if len(self._losses) >= self.monitor.interval:
            self._write_steps()

    def _write_steps(self) -> None:
        if not self._losses:
            return
        losses = torch.stack(self._losses).tolist()  # the one device sync for these steps
        now = time.perf_counter()
        last = self.monitor.step
        first = last - len(losses) + 1
        for step, loss, lr in zip(range(first, last + 1), losses, self._lrs):
            self._scalars({"step/loss": loss, "step/lr": lr}, step)
        self._scalars({"step/images_per_sec": len(losses) * self.images_per_step / (now - self._tick)}, last)
        series = self.monitor.series
        start = bisect.bisect_left(series["step"], first)  # the rules' gradient values for these steps
        for step, low, high in zip(*(series[key][start:] for key in ("step", "grad_min", "grad_max"))):
            self._scalars({"gradients/mean_abs_min": low, "gradients/mean_abs_max": high}, step)
        self._losses, self._lrs, self._tick = [], [], now
        if now - self._last_flush > FLUSH_SECONDS:
            self._flush()

    def after_epoch(self, record: dict, model: nn.Module) -> None:
        """Call at the end of each epoch with its metrics ``{"epoch", "train", "valid"?}``."""
        if not self.active:
            return
        self._write_steps()
        self._scalars({f"epoch/{split}_{name}": value for split in ("train", "valid")
                       for name, value in record.get(split, {}).items()}, record["epoch"])
        self._histograms(model, self.monitor.step)
        self._flush()
        self._tick = time.perf_counter()  # the next interval starts with the next epoch

    def _histograms(self, model: nn.Module, step: int) -> None:
        """Weights and gradients of conv and linear layers (the last step's gradients), and their L2 norms."""
        named = [(n, p) for n, p in model.named_parameters() if p.ndim > 1]
        weights = {n: p.detach() for n, p in named}
        gradients = {n: p.grad.detach() for n, p in named if p.grad is not None}
        for kind, tensors in (("weights", weights), ("gradients", gradients)):
            if not tensors:
                continue
            stats = histogram_stats(list(tensors.values()))
            for name, row in zip(tensors, stats):
                self._writer.add_histogram_raw(f"{kind}/{name}", global_step=step, **row)
            self._scalars({f"norms/{kind}": float(np.sqrt(sum(row["sum_squares"] for row in stats)))}, step)

    def finish(self, summary: dict, confusion: Sequence[Sequence[int]], labels: Sequence[str], split: str | None,
               profile_dir: Path) -> None:
        """The kept model's confusion matrix, the final metrics and the profiler trace; then closes the file."""
        if not self.active:
            return
        step = self.monitor.step
        if split:
            self._writer.add_figure(f"confusion_matrix/{split}", confusion_figure(confusion, labels, split), step)
        best = next((r for r in summary["history"] if r["epoch"] == summary["best_epoch"]), {})
        final = {"final/best_epoch": summary["best_epoch"]}
        final.update({f"final/best_valid_{k}": best["valid"][k] for k in ("loss", "accuracy") if "valid" in best})
        final.update({f"final/test_{k}": summary["test"][k] for k in ("loss", "accuracy") if "test" in summary})
        self._scalars(final, step)
        self._writer.file_writer.add_summary(self._session_end, step)
        self._copy_profile(profile_dir)
        self.close()

    def _copy_profile(self, profile_dir: Path) -> None:
        traces = sorted(profile_dir.glob("*.pt.trace.json*")) if profile_dir.is_dir() else []
        if not traces:
            return
        target = self.directory / PROFILE_RUN
        try:
            target.mkdir(exist_ok=True)
            for trace in traces:
                shutil.copy2(trace, target / trace.name)
        except OSError as e:
            log.warning("profiler trace not copied to %s: %s", target, e)

    def close(self) -> None:
        if self._writer is None:
            return
        try:
            self._write_steps()
        except Exception as e:  # closing after a failed job: the device may be what failed
            log.warning("TensorBoard: the last steps' values could not be read back (%s)", e)
        self._writer.close()
        self._writer = None
        atexit.unregister(self.close)


@torch.no_grad()
def histogram_stats(tensors: list[torch.Tensor]) -> list[dict]:
    """Each tensor's ``add_histogram_raw`` arguments, computed where the tensors live, read back in two syncs."""
    flat = [t.float() for t in tensors]  # no flatten: a channels_last weight would be copied
    extremes = torch.stack([torch.stack(torch.aminmax(t)) for t in flat]).tolist()
    ranges = [(low, high) if high > low else (low - 0.5, high + 0.5) for low, high in extremes]  # histc needs a range
    rows = torch.stack([torch.cat([torch.stack([t.sum(), torch.linalg.vector_norm(t).square()]),
                                   torch.histc(t, HISTOGRAM_BINS, low, high)])
                        for t, (low, high) in zip(flat, ranges)]).tolist()
    return [{"min": low, "max": high, "num": t.numel(), "sum": row[0], "sum_squares": row[1],
             "bucket_limits": np.linspace(*edges, HISTOGRAM_BINS + 1)[1:].tolist(), "bucket_counts": row[2:]}
            for t, (low, high), edges, row in zip(flat, extremes, ranges, rows)]


def confusion_figure(confusion: Sequence[Sequence[int]], labels: Sequence[str], split: str):
    """The confusion matrix, each row as fractions of that class's images, as a matplotlib figure."""
    from .report import load_pyplot

    counts = np.asarray(confusion, dtype=np.float64)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = min(14.0, 4 + 0.12 * len(labels))
    figure, ax = load_pyplot().subplots(figsize=(size, size * 0.85))
    shown = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(shown, ax=ax, fraction=0.046, label="fraction of the true class")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{split}: {int(counts.sum())} images, accuracy {accuracy:.4f}")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(labels) <= CONFUSION_LABELS_MAX:
        ticks = range(len(labels))
        ax.set_xticks(ticks, labels, rotation=90, fontsize=8)
        ax.set_yticks(ticks, labels, fontsize=8)
    figure.tight_layout()
    return figure
