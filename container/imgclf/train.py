"""The training program: fine-tune on ``train``, keep the best epoch on ``valid``, report ``test``."""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import signal
import sys
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import lr_scheduler
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset

from . import atomic, data, debugger, distributed, gpu, metrics, precision, report, stopping, tensorboard
from .augment import augment_batch, pad_collate
from .checkpoint import Checkpoints, open_run, run_settings
from .config import ConfigError, TrainingEnv
from .hyperparameters import Hyperparameters, parse_hyperparameters
from .distributed import Ranks
from .failure import describe_os_error, write_failure
from .logs import setup_logging
from .model import ModelSpec, create_model, eval_image_spec, imagenet_weights, imagenet_weights_filename, save_artifacts
from .monitor import RuleMonitor
from .preprocess import ImageSpec, normalize
from .profiling import start_profiler, stop_profiler
from .state import TrainingState

log = logging.getLogger("imgclf.train")


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


def build_scheduler(hp: Hyperparameters, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> lr_scheduler.LRScheduler:
    """Per step: a linear warm-up, then cosine, step or constant, as torchvision's classification reference."""
    warmup = hp.lr_warmup_epochs * steps_per_epoch
    if hp.lr_scheduler == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, max(1, hp.epochs * steps_per_epoch - warmup))
    elif hp.lr_scheduler == "step":
        main = lr_scheduler.StepLR(optimizer, hp.lr_step_size * steps_per_epoch, hp.lr_gamma)
    else:
        main = lr_scheduler.ConstantLR(optimizer, 1.0)
    if not warmup:
        return main
    ramp = lr_scheduler.LinearLR(optimizer, 1 / warmup, total_iters=max(1, warmup - 1))
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def default_workers(requested: int, device: torch.device, num_cpus: int) -> int:
    if requested >= 0:
        return requested
    # On a CPU the compute threads need every core; augmenting cached uint8 images inline is cheap.
    return min(8, num_cpus) if device.type == "cuda" else 0


@dataclass
class Run:
    """One training run: what ``setup`` builds and the rest of the run reads."""

    hp: Hyperparameters
    env: TrainingEnv
    ranks: Ranks
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast's; None: fp32
    image_spec: ImageSpec
    classes: list[data.ClassInfo]
    loaders: dict[str, DataLoader]  # by channel
    network: nn.Module  # state.model as it runs: compiled with compile=true, in DDP when distributed
    criterion: nn.Module
    hook: object  # smdebug's, or None
    state: TrainingState
    board: tensorboard.Board
    profiler: object  # torch.profiler's, or None
    checkpoints: Checkpoints | None = None  # from resume

    @property
    def evaluator(self) -> nn.Module:
        """The network without DDP: each process evaluates its own shard, with no collective per batch."""
        return self.network.module if isinstance(self.network, DistributedDataParallel) else self.network

    def autocast(self) -> torch.autocast:
        dtype = self.amp_dtype
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def to_inputs(self, batch: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """A train loader batch as the model's (inputs, targets)."""
        if len(batch) == 3:  # augmentation on the device: padded uint8 images, their sizes, targets
            images, sizes, targets = batch
            hp = self.hp
            inputs = augment_batch(images, sizes, self.image_spec, hp.random_crop_min_scale, hp.horizontal_flip, self.device)
        else:
            images, targets = batch
            inputs = normalize(images, self.image_spec, self.device)
        self.board.see_inputs(inputs)
        return inputs, targets


def train_one_epoch(run: Run, epoch_tag: str) -> dict[str, float]:
    """One pass over the train loader (ended early when a rule stops training)."""
    state, device, loader = run.state, run.device, run.loaders["train"]
    run.network.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, start = 0, time.perf_counter()
    log_every = max(1, len(loader) // 10)
    for step, batch in enumerate(stopping.between_items(loader), 1):
        inputs, targets = run.to_inputs(batch)
        targets = targets.to(device, non_blocking=True)
        with run.autocast():
            outputs = run.network(inputs)
            loss = run.criterion(outputs, targets)
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.scheduler.step()

        loss_sum += loss.detach().float() * targets.size(0)
        correct += (outputs.argmax(1) == targets).sum()
        seen += targets.size(0)
        if run.profiler is not None:
            run.profiler.step()
        stop = state.monitor.after_step(loss, state.model)  # True when a rule stops training now
        run.board.after_step(loss)
        if step % log_every == 0 or step == len(loader) or stop:
            log.info(
                "%s step %d/%d loss %.4f lr %.3g %.1f images/s",
                epoch_tag, step, len(loader), loss.item(), state.optimizer.param_groups[0]["lr"],
                seen / (time.perf_counter() - start),
            )
        if stop:
            break
    return totals(loss_sum, correct, seen, time.perf_counter() - start, run.ranks)


def totals(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, seconds: float, ranks: Ranks) -> dict[str, float]:
    """Loss, accuracy and throughput over every process (one all-reduce)."""
    summed = ranks.sum(torch.stack([loss_sum.double(), correct.double(), torch.tensor(float(seen), device=loss_sum.device)]))
    loss, hits, count = summed.tolist()
    return {"loss": loss / count, "accuracy": hits / count, "seconds": seconds, "images_per_sec": count / seconds}


@torch.inference_mode()
def evaluate(run: Run, loader: DataLoader, confusion: torch.Tensor | None = None) -> dict[str, float]:
    """Loss and accuracy over ``loader``; also counts [true, predicted] pairs into ``confusion``."""
    device = run.device
    run.evaluator.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, start = 0, time.perf_counter()
    for images, targets in stopping.between_items(loader):
        inputs = normalize(images, run.image_spec, device)
        targets = targets.to(device, non_blocking=True)
        with run.autocast():
            outputs = run.evaluator(inputs)
        loss_sum += run.criterion(outputs.float(), targets) * targets.size(0)
        predicted = outputs.argmax(1)
        correct += (predicted == targets).sum()
        seen += targets.size(0)
        if confusion is not None:
            n = confusion.size(0)
            confusion += torch.bincount(targets * n + predicted, minlength=n * n).view(n, n).to(confusion.device)
    return totals(loss_sum, correct, seen, time.perf_counter() - start, run.ranks)


def load_splits(hp: Hyperparameters, env: TrainingEnv, spec: ImageSpec) -> tuple[list[data.ClassInfo], dict[str, data.Split]]:
    piped = sorted(name for name, mode in env.input_modes.items() if mode.lower() == "pipe")
    if piped:
        raise ConfigError(f"channel(s) {', '.join(piped)} use Pipe mode, which is not supported; use File or FastFile input mode")
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


def final_map_side(image_size: int) -> int:
    """The side of the last feature map of every arch (imgclf.archs): five stride-2 stages, each ceil(n / 2)."""
    return math.ceil(image_size / 32)


def check_batch(hp: Hyperparameters, train_images: int, ranks: Ranks) -> int:
    """The per-process batch; refuses one that leaves BatchNorm a single value per channel."""
    if hp.batch_size % ranks.world_size:
        raise ConfigError(f"batch-size {hp.batch_size} does not split evenly over {ranks.world_size} processes")
    batch = hp.batch_size // ranks.world_size
    per_process = -(-train_images // ranks.world_size)
    if min(batch, per_process) == 1 and final_map_side(hp.image_size) == 1:
        raise ConfigError(
            f"batch-size {hp.batch_size} gives each of the {ranks.world_size} process(es) batches of one image, and at "
            f"image-size {hp.image_size} the last block's feature map is 1x1: BatchNorm cannot train on a single value "
            "per channel; use a batch of at least 2 images per process or image-size >= 33"
        )
    return batch


def build_loaders(
    hp: Hyperparameters, splits: dict[str, data.Split], spec: ImageSpec, device: torch.device, workers: int,
    ranks: Ranks, generator: torch.Generator | None, on_device: bool,
) -> dict[str, DataLoader]:
    """A loader per channel; ``batch-size`` is the global batch, of which each process takes its share."""
    batch = check_batch(hp, len(splits["train"].targets), ranks)
    common = dict(batch_size=batch, num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                  worker_init_fn=stopping.ignore_in_worker if workers else None)
    transform = None if on_device else data.train_augmentation(spec, hp.random_crop_min_scale, hp.horizontal_flip)
    train_set = data.ImageDataset(splits["train"], spec, transform)
    if ranks.active:
        sampler = DistributedSampler(train_set, ranks.world_size, ranks.rank, shuffle=True, seed=hp.seed)
        generator = None  # the workers' seeds then come from torch's global generator
    else:
        sampler = RandomSampler(train_set, generator=generator)
    loaders = {"train": DataLoader(train_set, sampler=sampler, drop_last=len(sampler) > batch, generator=generator,
                                   collate_fn=pad_collate if on_device else None, **common)}
    for name, split in splits.items():
        if name != "train":
            dataset = data.ImageDataset(split, spec)  # a share per process, unpadded: each image counts once
            loaders[name] = DataLoader(Subset(dataset, range(ranks.rank, len(dataset), ranks.world_size)), **common)
    return loaders


def build_network(hp: Hyperparameters, env: TrainingEnv, num_classes: int, device: torch.device, ranks: Ranks,
                  amp_dtype: torch.dtype | None) -> tuple[nn.Module, nn.Module, nn.Module, object, torch.dtype | None]:
    """(model, network, criterion, Debugger hook, autocast dtype); ``model`` keeps the plain state_dict keys."""
    model = create_model(hp.arch, num_classes, hp.pretrained, env.channel("pretrained"), hp.freeze_backbone)
    model = model.to(device, memory_format=torch.channels_last)
    network = torch.compile(model) if hp.compile else model
    network = DistributedDataParallel(network) if ranks.active else network
    criterion = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
    hook = debugger.create_hook(env.input_config_dir, model, criterion)
    if hook is not None and amp_dtype == torch.bfloat16:
        log.info("Debugger hook: smdebug cannot save bf16 tensors, so this job trains in fp32")
        amp_dtype = None
    return model, network, criterion, hook, amp_dtype


def check_weights_reachable(hp: Hyperparameters, env: TrainingEnv, timeout: float = 5.0) -> None:
    """Fail in seconds, not after loading the data, where pretrained=true must download and cannot."""
    if not hp.pretrained or env.channel("pretrained") is not None:
        return
    filename = imagenet_weights_filename(hp.arch)
    url = imagenet_weights(hp.arch).url
    if (Path(torch.hub.get_dir()) / "checkpoints" / filename).is_file():
        return
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # the server answered: the network is there, and the download says what went wrong
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"pretrained=true needs ImageNet weights ({filename}) and this job cannot download them ({url}: "
            f"{getattr(e, 'reason', e)}): it has no internet access (network isolation, or a VPC without egress). "
            f"Pass a 'pretrained' channel: upload {filename} (from {url}) to S3 once and give that prefix as the "
            f"job's 'pretrained' input (prepare_data.py --weights {hp.arch} does it and prints the launchers' "
            "--pretrained value); or set pretrained=false") from None


def setup(hp: Hyperparameters, env: TrainingEnv) -> Run:
    check_weights_reachable(hp, env)
    ranks = Ranks(env.rank, env.world_size, env.local_rank, env.local_world_size)
    device = gpu.select_device(env.local_rank, env.allow_cpu)
    distributed.start(ranks, device)
    amp_dtype = precision.autocast_dtype(hp.precision, device)
    if hp.compile and shutil.which("cc") is None and shutil.which("gcc") is None:
        raise ConfigError("compile=true needs a C compiler for torch.compile; build the image with WITH_COMPILER=true")
    generator = seed_everything(hp.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    on_device = hp.augment_on == "device" or (hp.augment_on == "auto" and device.type == "cuda")
    log.info("device %s, precision %s, augmentation on the %s, hyperparameters %s", device, amp_dtype or "fp32",
             "device" if on_device else "CPU", json.dumps(asdict(hp)))

    image_spec = eval_image_spec(hp.arch, hp.image_size)
    classes, splits = load_splits(hp, env, image_spec)
    if hp.early_stopping_patience and "valid" not in splits:
        raise ConfigError("early-stopping-patience needs a 'valid' channel to watch")
    workers = default_workers(hp.num_workers, device, env.num_cpus // ranks.local_world_size)
    loaders = build_loaders(hp, splits, image_spec, device, workers, ranks, generator, on_device)

    model, network, criterion, hook, amp_dtype = build_network(hp, env, len(classes), device, ranks, amp_dtype)
    optimizer = build_optimizer(hp, model)
    steps = len(loaders["train"])
    state = TrainingState(
        model, optimizer, build_scheduler(hp, optimizer, steps),
        torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16), generator,
        RuleMonitor(hp.rules, hp.rules_action == "stop", steps, ranks.mean),
    )
    board = tensorboard.open_board(hp, env, ranks.is_main, image_spec, state.monitor, optimizer)
    profiler = start_profiler(hp.profile_steps if ranks.is_main else 0, env.output_data_dir / "profiler", device)
    return Run(hp, env, ranks, device, amp_dtype, image_spec, classes, loaders, network, criterion, hook, state, board,
               profiler)


def save_model(run: Run) -> None:
    """The kept model into SM_MODEL_DIR (rank 0)."""
    best = run.state.best
    if run.ranks.is_main and best.state is not None:
        model_spec = ModelSpec(run.hp.arch, len(run.classes), run.image_spec)
        save_artifacts(run.env.model_dir, best.state, model_spec, run.classes, {"best_epoch": best.epoch, "valid": best.valid})


def resume(run: Run) -> None:
    """Continue this run from its checkpoint (or, with resume-from, another job's), if there is one."""
    settings = run_settings(run.hp, [c.folder for c in run.classes])
    if run.ranks.is_main:  # before any checkpoint write
        for leftover in atomic.remove_leftovers(run.env.checkpoint_dir):
            log.info("removed %s, left by a write that was cut short", leftover)
    run.checkpoints, saved = open_run(run.env.checkpoint_dir, run.env.job_name, settings, run.hp.resume_from)
    if not run.ranks.same_on_all(None if saved is None else saved["epoch"]):
        raise ConfigError(f"the hosts' checkpoints in {run.env.checkpoint_dir} differ; give every host the same one")
    if saved is None:
        log.info("no checkpoint of this run in %s: training from the start", run.checkpoints.folder)
        return
    run.state.load_state_dict(saved)
    save_model(run)  # a new job's model dir starts empty
    log.info("resuming after epoch %d from the checkpoint in %s", saved["epoch"], run.checkpoints.folder)


class Diverged(ArithmeticError):
    """The loss is not finite: the settings (most often the learning rate) made training diverge."""


def check_finite(epoch: int, split: str, values: dict[str, float], lr: float) -> None:
    if not math.isfinite(values["loss"]):
        raise Diverged(f"training diverged in epoch {epoch}: the {'' if split == 'train' else split + ' '}loss is "
                       f"{values['loss']}; try a lower lr (now {lr:g})")


def run_epoch(run: Run, epoch: int) -> dict:
    """Train one epoch and evaluate it on valid; returns its history record."""
    epoch_tag = f"epoch={epoch}/{run.hp.epochs}"
    if isinstance(run.loaders["train"].sampler, DistributedSampler):
        run.loaders["train"].sampler.set_epoch(epoch)
    debugger.set_mode(run.hook, train=True)
    train_metrics = train_one_epoch(run, epoch_tag)
    check_finite(epoch, "train", train_metrics, run.hp.lr)
    log.info(metrics.metric_line(epoch_tag, "train", train_metrics))
    record = {"epoch": epoch, "train": train_metrics}
    if "valid" in run.loaders:
        debugger.set_mode(run.hook, train=False)
        record["valid"] = evaluate(run, run.loaders["valid"])
        check_finite(epoch, "valid", record["valid"], run.hp.lr)
        log.info(metrics.metric_line(epoch_tag, "valid", record["valid"]))
    run.state.monitor.after_epoch(train_metrics["loss"], record["valid"]["loss"] if "valid" in record else None)
    return record


def fit(run: Run) -> None:
    """The epochs this run still has, each followed by keeping the best model and a checkpoint."""
    hp, state = run.hp, run.state
    for epoch in range(hp.epochs + 1 if state.stopped_early else state.epoch + 1, hp.epochs + 1):
        record = run_epoch(run, epoch)
        state.history.append(record)
        state.epoch = epoch
        with stopping.finish_first():  # a SIGTERM now stops right after the model and checkpoint are written
            if state.best.offer(epoch, record["valid"]["accuracy"] if "valid" in record else epoch, state.model, record.get("valid")):
                save_model(run)
                log.info("saved the model of epoch %d to %s", epoch, run.env.model_dir)
            patience_over = bool(hp.early_stopping_patience) and epoch - state.best.epoch >= hp.early_stopping_patience
            state.stopped_early = patience_over or state.monitor.should_stop
            if run.ranks.is_main:
                run.checkpoints.save(state.state_dict())
            run.checkpoints.saved_epoch = epoch  # by rank 0, for every rank's stop message
        run.board.after_epoch(record, state.model)
        if patience_over:
            log.info("early stopping: valid accuracy has not improved for %d epochs", epoch - state.best.epoch)
        if state.stopped_early:
            break
    stop_profiler(run.profiler, run.env.output_data_dir / "profiler")


def finish(run: Run) -> dict:
    """Evaluate the kept model, log its metrics last (the tuner's objective is the last value), write the reports."""
    best = run.state.best
    summary = {"best_epoch": best.epoch, "history": run.state.history}
    run.state.model.load_state_dict(best.state)
    if best.valid is not None:
        log.info(metrics.metric_line(f"final epoch={best.epoch}", "valid", best.valid))
    split = "test" if "test" in run.loaders else "valid" if "valid" in run.loaders else None
    confusion = torch.zeros(len(run.classes), len(run.classes), dtype=torch.long, device=run.device)
    if split:
        debugger.set_mode(run.hook, train=False)
        final = evaluate(run, run.loaders[split], confusion)
        if not math.isfinite(final["loss"]):
            raise Diverged(f"the kept model (epoch {best.epoch}) gives a {split} loss of {final['loss']}: its outputs "
                           f"are not finite; try a lower lr (now {run.hp.lr:g})")
        if split == "test":
            summary["test"] = final
            log.info(metrics.metric_line(f"final epoch={best.epoch}", "test", final))
    confusion = run.ranks.sum(confusion)
    if run.ranks.is_main:
        write_reports(run.env.output_data_dir, summary, run.state.monitor, run.classes, confusion.tolist(), split)
    run.board.finish(summary, confusion.tolist(), [c.label for c in run.classes], split, run.env.output_data_dir / "profiler")
    log.info("model (epoch %d) in %s; metrics and reports in %s", best.epoch, run.env.model_dir, run.env.output_data_dir)
    return summary


def train(hp: Hyperparameters, env: TrainingEnv) -> dict:
    """setup -> resume -> fit -> finish."""
    run = setup(hp, env)
    try:
        resume(run)
        fit(run)
        return finish(run)
    except stopping.Interrupted as e:
        e.checkpoints = run.checkpoints  # for the stop message: what is saved, and where
        raise


def write_reports(directory: Path, summary: dict, monitor: RuleMonitor, classes: list[data.ClassInfo],
                  confusion: list[list[int]], split: str | None) -> None:
    atomic.write_json(directory / "metrics.json", summary)
    pairs = report.confused_pairs(confusion, [c.label for c in classes]) if split else []
    report.write_training_report(directory, summary["history"], pairs, split or "none")
    if monitor.names:
        outcome = monitor.report()
        report.write_rules_report(directory, outcome)
        fired = [name for name, result in outcome["rules"].items() if result["fired"]]
        log.info("rules checked: %s; %s", ", ".join(monitor.names), f"fired: {', '.join(fired)}" if fired else "none fired")


def stop_message(e: stopping.Interrupted) -> str:
    checkpoints: Checkpoints | None = getattr(e, "checkpoints", None)
    if checkpoints is None or checkpoints.saved_epoch == 0:
        return f"stopped by {e} before the first epoch completed: no checkpoint was written, so a restart trains from the start"
    return (f"stopped by {e}: epochs 1-{checkpoints.saved_epoch} are in {checkpoints.path}; "
            "a restart of this job (same name and settings) resumes from it")


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    env = TrainingEnv.from_environ()
    if env.rank != 0:  # every process computes the same metrics and decisions: one of them reports
        logging.getLogger("imgclf").setLevel(logging.ERROR)
    stopping.install()
    try:
        hp = parse_hyperparameters(sys.argv[1:] if argv is None else argv)
        train(hp, env)
    except stopping.Interrupted as e:
        message = stop_message(e)
        log.warning(message)
        write_failure(env.output_dir, message)
        return 128 + signal.SIGTERM
    except (ConfigError, Diverged) as e:
        log.error("training failed: %s", e)
        write_failure(env.output_dir, str(e))
        return 1
    except OSError as e:
        message = describe_os_error(e)
        log.error("training failed: %s", message, exc_info=True)
        write_failure(env.output_dir, message)
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
