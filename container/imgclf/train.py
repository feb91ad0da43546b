"""The training program sagemaker-training's ``train`` runs (SAGEMAKER_PROGRAM).

Fine-tunes a torchvision ResNet on the ``train`` channel, picks the best epoch on
``valid``, reports ``test``, and leaves the model in SM_MODEL_DIR.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from . import data, debugger, distributed, gpu, metrics, precision, report
from .augment import augment_batch, pad_collate
from .checkpoint import CHECKPOINT_FILE, fingerprint, load_checkpoint, save_checkpoint
from .config import ConfigError, Hyperparameters, TrainingEnv, parse_hyperparameters
from .distributed import Group
from .logs import setup_logging
from .model import ModelSpec, create_model, save_artifacts
from .monitor import RuleMonitor
from .preprocess import ImageSpec, normalize
from .profiling import start_profiler, stop_profiler

log = logging.getLogger("imgclf.train")

FAILURE_REASON_LIMIT = 1024  # DescribeTrainingJob shows this many characters


def write_failure(output_dir: Path, message: str) -> None:
    """Leave the reason where SageMaker reads it (the toolkit keeps an existing file)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / f".failure.{os.getpid()}"
    tmp.write_text(message[:FAILURE_REASON_LIMIT])
    os.replace(tmp, output_dir / "failure")  # never seen half-written, by the toolkit or SageMaker


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def build_optimizer(hp: Hyperparameters, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if hp.optimizer == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay, nesterov=hp.momentum > 0)
    if hp.optimizer == "adam":
        return torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
    return torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)


def build_scheduler(hp: Hyperparameters, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate factor: linear warm-up, then cosine, step or constant."""
    warmup = hp.lr_warmup_epochs * steps_per_epoch
    total = hp.epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if hp.lr_scheduler == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if hp.lr_scheduler == "step":
            return hp.lr_gamma ** (step // steps_per_epoch // hp.lr_step_size)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def default_workers(requested: int, device: torch.device, num_cpus: int) -> int:
    if requested >= 0:
        return requested
    # On a CPU the compute threads need every core; augmenting cached uint8 images inline is cheap.
    return min(8, num_cpus) if device.type == "cuda" else 0


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    scaler: torch.amp.GradScaler,
    to_inputs: Callable[[tuple], tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    amp_dtype: torch.dtype | None,
    epoch_label: str,
    after_step: Callable[[torch.Tensor], bool] = lambda loss: False,
    group: Group = Group(),
) -> dict[str, float]:
    """One pass over ``loader``; ``to_inputs`` makes a loader batch the model's (inputs, targets);
    ``after_step(loss)`` returning True ends the pass early."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, start = 0, time.perf_counter()
    log_every = max(1, len(loader) // 10)
    for step, batch in enumerate(loader, 1):
        inputs, targets = to_inputs(batch)
        targets = targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            outputs = model(inputs)
            loss = criterion(outputs, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()

        loss_sum += loss.detach().float() * targets.size(0)
        correct += (outputs.argmax(1) == targets).sum()
        seen += targets.size(0)
        stop = after_step(loss)
        if step % log_every == 0 or step == len(loader) or stop:
            log.info(
                "%s step %d/%d loss %.4f lr %.3g %.1f images/s",
                epoch_label, step, len(loader), loss.item(), optimizer.param_groups[0]["lr"],
                seen / (time.perf_counter() - start),
            )
        if stop:
            break
    return totals(loss_sum, correct, seen, time.perf_counter() - start, group)


def totals(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, seconds: float, group: Group) -> dict[str, float]:
    """Loss, accuracy and throughput over every process (one all-reduce)."""
    summed = group.sum(torch.stack([loss_sum.double(), correct.double(), torch.tensor(float(seen), device=loss_sum.device)]))
    loss, hits, count = summed.tolist()
    return {"loss": loss / count, "accuracy": hits / count, "seconds": seconds, "images_per_sec": count / seconds}


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    criterion: nn.Module,
    spec: ImageSpec,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    confusion: torch.Tensor | None = None,
    group: Group = Group(),
) -> dict[str, float]:
    """Loss and accuracy over ``loader``; also counts [true, predicted] pairs into ``confusion``."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, start = 0, time.perf_counter()
    for images, targets in loader:
        inputs = normalize(images, spec, device)
        targets = targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            outputs = model(inputs)
        loss_sum += criterion(outputs.float(), targets) * targets.size(0)
        predicted = outputs.argmax(1)
        correct += (predicted == targets).sum()
        seen += targets.size(0)
        if confusion is not None:
            n = confusion.size(0)
            confusion += torch.bincount(targets * n + predicted, minlength=n * n).view(n, n).to(confusion.device)
    return totals(loss_sum, correct, seen, time.perf_counter() - start, group)


def load_splits(hp: Hyperparameters, env: TrainingEnv, spec: ImageSpec) -> tuple[list[data.ClassInfo], dict[str, data.Split]]:
    roots = {name: env.channel(name) for name in ("train", "valid", "test")}
    if roots["train"] is None:
        raise ConfigError(
            f"missing required channel 'train' (channels given: {sorted(env.channels) or 'none'}); "
            "pass one folder per class under it"
        )
    scans = {name: data.scan_channel(name, root) for name, root in roots.items() if root is not None}
    data.check_same_classes(scans)
    classes = data.class_list(scans["train"])
    cache = data.should_cache(hp.cache_images, scans, spec, env.local_world_size)
    threads = max(2, env.num_cpus)
    splits = {name: data.load_split(name, scan, classes, spec, cache, threads) for name, scan in scans.items()}
    return classes, splits


def augments_on_device(requested: str, device: torch.device) -> bool:
    return requested == "device" or (requested == "auto" and device.type == "cuda")


def build_loaders(
    hp: Hyperparameters, splits: dict[str, data.Split], spec: ImageSpec, device: torch.device, workers: int,
    group: Group, generator: torch.Generator, on_device: bool,
) -> tuple[DataLoader, dict[str, DataLoader]]:
    """``batch-size`` is the global batch: each of the processes takes its share. With augmentation
    on the device, train batches are (padded uint8 images, their sizes, targets)."""
    if hp.batch_size % group.world_size:
        raise ConfigError(f"batch-size {hp.batch_size} does not split evenly over {group.world_size} processes")
    batch = hp.batch_size // group.world_size
    common = dict(batch_size=batch, num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    transform = None if on_device else data.train_augmentation(spec, hp.random_crop_min_scale, hp.horizontal_flip)
    train_set = data.ImageDataset(splits["train"], spec, transform)
    train_args = dict(common, collate_fn=pad_collate if on_device else None)
    if group.active:
        sampler = DistributedSampler(train_set, group.world_size, group.rank, shuffle=True, seed=hp.seed)
        train_loader = DataLoader(train_set, sampler=sampler, drop_last=len(sampler) > batch, **train_args)
    else:
        train_loader = DataLoader(train_set, shuffle=True, drop_last=len(train_set) > batch, generator=generator, **train_args)
    eval_loaders = {}
    for name, split in splits.items():
        if name != "train":
            dataset = data.ImageDataset(split, spec)
            eval_loaders[name] = DataLoader(dataset, sampler=distributed.ShardSampler(len(dataset), group), **common)
    return train_loader, eval_loaders


def run(hp: Hyperparameters, env: TrainingEnv) -> dict:
    group = Group(env.rank, env.world_size, env.local_rank, env.local_world_size)
    device = gpu.select_device(env.local_rank, env.allow_cpu)
    distributed.start(group, device)
    amp_dtype = precision.autocast_dtype(hp.precision, device)
    if hp.compile and shutil.which("cc") is None and shutil.which("gcc") is None:
        raise ConfigError("compile=true needs a C compiler for torch.compile; build the image with WITH_COMPILER=true")
    generator = seed_everything(hp.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    on_device = augments_on_device(hp.augment_on, device)
    log.info("device %s, precision %s, augmentation on the %s, hyperparameters %s", device, amp_dtype or "fp32",
             "device" if on_device else "CPU", json.dumps(asdict(hp)))

    spec = ImageSpec(hp.image_size)
    classes, splits = load_splits(hp, env, spec)
    if hp.early_stopping_patience and "valid" not in splits:
        raise ConfigError("early-stopping-patience needs a 'valid' channel to watch")

    workers = default_workers(hp.num_workers, device, env.num_cpus // group.local_world_size)
    train_loader, eval_loaders = build_loaders(hp, splits, spec, device, workers, group, generator, on_device)

    model = create_model(hp.arch, len(classes), hp.pretrained, env.channel("pretrained"), hp.freeze_backbone)
    model = model.to(device, memory_format=torch.channels_last)
    compiled = torch.compile(model) if hp.compile else model  # `model` keeps the plain state_dict keys
    network = DistributedDataParallel(compiled) if group.active else compiled  # evaluation runs `compiled`
    criterion = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
    hook = debugger.create_hook(env.input_config_dir, model, criterion)
    if hook is not None and amp_dtype == torch.bfloat16:
        log.info("Debugger hook: smdebug cannot save bf16 tensors, so this job trains in fp32")
        amp_dtype = None
    optimizer = build_optimizer(hp, model)
    scheduler = build_scheduler(hp, optimizer, len(train_loader))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    model_spec = ModelSpec(hp.arch, len(classes), hp.image_size, spec.mean, spec.std)
    monitor = RuleMonitor(hp.rules, hp.rules_action == "stop", len(train_loader), group.mean)

    def save_best(best: dict) -> None:
        if group.is_main:
            save_artifacts(env.model_dir, best["state"], model_spec, classes, {"best_epoch": best["epoch"], "valid": best["valid"]})

    history: list[dict] = []
    best: dict = {"epoch": 0, "score": -1.0, "state": None, "valid": None}
    first_epoch = 1
    job = fingerprint(hp.arch, hp.image_size, [c.folder for c in classes])
    resumed = load_checkpoint(env.checkpoint_dir, job)
    if not group.same_on_all(None if resumed is None else resumed["epoch"]):
        raise ConfigError(f"the hosts' checkpoints in {env.checkpoint_dir} differ; give every host the same one")
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        scaler.load_state_dict(resumed["scaler"])
        generator.set_state(resumed["generator"])
        torch.set_rng_state(resumed["torch_rng"])
        history, best = resumed["history"], resumed["best"]
        monitor.load_state_dict(resumed["monitor"])
        first_epoch = hp.epochs + 1 if resumed["stopped_early"] else resumed["epoch"] + 1
        save_best(best)  # a new job's model dir starts empty
        log.info("resuming after epoch %d from the checkpoint in %s", resumed["epoch"], env.checkpoint_dir)

    def to_inputs(batch: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        if on_device:
            images, sizes, targets = batch
            return augment_batch(images, sizes, spec, hp.random_crop_min_scale, hp.horizontal_flip, device), targets
        images, targets = batch
        return normalize(images, spec, device), targets

    profile_dir = env.output_data_dir / "profiler"
    profiler = start_profiler(hp.profile_steps if group.is_main else 0, profile_dir, device)

    def after_step(loss: torch.Tensor) -> bool:
        if profiler is not None:
            profiler.step()
        return monitor.after_step(loss, model, scaler.get_scale if scaler.is_enabled() else lambda: 1.0)

    for epoch in range(first_epoch, hp.epochs + 1):
        label = f"epoch={epoch}/{hp.epochs}"
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        debugger.set_mode(hook, train=True)
        train_metrics = train_one_epoch(
            network, train_loader, criterion, optimizer, scheduler, scaler, to_inputs, device, amp_dtype, label, after_step, group
        )
        if not math.isfinite(train_metrics["loss"]):
            raise ConfigError(
                f"training diverged in epoch {epoch}: the loss is {train_metrics['loss']}; try a lower lr (now {hp.lr:g})"
            )
        log.info(metrics.metric_line(label, "train", train_metrics))
        record = {"epoch": epoch, "train": train_metrics}
        if "valid" in eval_loaders:
            debugger.set_mode(hook, train=False)
            record["valid"] = evaluate(compiled, eval_loaders["valid"], criterion, spec, device, amp_dtype, group=group)
            log.info(metrics.metric_line(label, "valid", record["valid"]))
        history.append(record)
        monitor.after_epoch(train_metrics["loss"], record["valid"]["loss"] if "valid" in record else None)

        score = record["valid"]["accuracy"] if "valid" in record else epoch  # no valid: keep the latest
        if score > best["score"]:
            best = {"epoch": epoch, "score": score, "state": copy.deepcopy(model.state_dict()), "valid": record.get("valid")}
            save_best(best)
            log.info("saved the model of epoch %d to %s", epoch, env.model_dir)
        patience_over = bool(hp.early_stopping_patience) and epoch - best["epoch"] >= hp.early_stopping_patience
        stop_early = patience_over or monitor.should_stop
        state = {
            "fingerprint": job,
            "epoch": epoch, "stopped_early": stop_early,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "history": history, "best": best, "monitor": monitor.state_dict(),
        }
        if group.is_main:
            save_checkpoint(env.checkpoint_dir, state)
        if patience_over:
            log.info("early stopping: valid accuracy has not improved for %d epochs", epoch - best["epoch"])
        if stop_early:
            break
    stop_profiler(profiler, profile_dir)

    summary = {"best_epoch": best["epoch"], "history": history}
    model.load_state_dict(best["state"])
    report_split = "test" if "test" in eval_loaders else "valid" if "valid" in eval_loaders else None
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.long, device=device)
    if report_split:
        debugger.set_mode(hook, train=False)
        final = evaluate(compiled, eval_loaders[report_split], criterion, spec, device, amp_dtype, confusion, group)
        if report_split == "test":
            summary["test"] = final
            log.info(metrics.metric_line(f"final epoch={best['epoch']}", "test", final))
    confusion = group.sum(confusion)
    if group.is_main:
        write_reports(env.output_data_dir, summary, monitor, classes, confusion.tolist(), report_split)
    log.info("model (epoch %d) in %s; metrics and reports in %s", best["epoch"], env.model_dir, env.output_data_dir)
    return summary


def write_reports(directory: Path, summary: dict, monitor: RuleMonitor, classes: list[data.ClassInfo],
                  confusion: list[list[int]], split: str | None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.json").write_text(json.dumps(summary, indent=1))
    pairs = report.confused_pairs(confusion, [c.label for c in classes]) if split else []
    report.write_training_report(directory, summary["history"], pairs, split or "none")
    if monitor.names:
        outcome = monitor.report()
        report.write_rules_report(directory, outcome)
        fired = [name for name, result in outcome["rules"].items() if result["fired"]]
        log.info("rules checked: %s; %s", ", ".join(monitor.names), f"fired: {', '.join(fired)}" if fired else "none fired")


class Interrupted(BaseException):
    """SIGTERM: the job is being stopped or its spot instance reclaimed.

    A BaseException, like KeyboardInterrupt, so no library's ``except Exception`` swallows it.
    """


def _interrupt(signum: int, _frame) -> None:
    raise Interrupted(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    env = TrainingEnv.from_environ()
    if env.rank != 0:  # every process computes the same metrics and decisions: one of them reports
        logging.getLogger("imgclf").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        hp = parse_hyperparameters(sys.argv[1:] if argv is None else argv)
        run(hp, env)
    except Interrupted as e:
        message = (
            f"stopped by {e}: every completed epoch is in {env.checkpoint_dir / CHECKPOINT_FILE}; "
            "a job given the same checkpoint location resumes from it"
        )
        log.warning(message)
        write_failure(env.output_dir, message)
        return 128 + signal.SIGTERM
    except ConfigError as e:
        log.error("training failed: %s", e)
        write_failure(env.output_dir, str(e))
        return 1
    except Exception as e:
        log.exception("training failed with an unexpected error")
        tail = "".join(traceback.format_exception(e)[-3:])
        write_failure(env.output_dir, f"unexpected error {type(e).__name__}: {e}\n{tail}")
        return 1
    finally:
        distributed.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
