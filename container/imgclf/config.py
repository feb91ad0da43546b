"""Hyperparameters and the SageMaker training environment, read once at the edge.

SageMaker's training toolkit passes hyperparameters as sorted ``--key value`` pairs
(every value started life as a string in hyperparameters.json) and describes the job
in ``SM_*`` environment variables. Everything else in the package takes these values
as arguments.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .rules import TRAINING_RULES

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULERS = ("cosine", "step", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CACHE_MODES = ("auto", "true", "false")
RULE_ACTIONS = ("log", "stop")
AUGMENT_ON = ("auto", "cpu", "device")
TENSORBOARD = ("auto", "true", "false")
# Opt-in to run on the CPU of a host whose GPUs torch cannot use (imgclf.gpu); never implicit.
ALLOW_CPU_ENV = "IMGCLF_ALLOW_CPU"

# Channel names we accept, canonical name first.
CHANNEL_ALIASES = {
    "train": ("train", "training"),
    "valid": ("valid", "validation", "val"),
    "test": ("test", "testing"),
    "pretrained": ("pretrained",),
}


class ConfigError(ValueError):
    """Input the user must fix: a hyperparameter, a channel or the data in it."""


@dataclass(frozen=True)
class Hyperparameters:
    arch: str = "resnet50"
    pretrained: bool = True
    freeze_backbone: bool = False
    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.001
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    lr_scheduler: str = "cosine"
    lr_warmup_epochs: int = 0
    lr_step_size: int = 10
    lr_gamma: float = 0.1
    image_size: int = 224
    random_crop_min_scale: float = 0.08
    horizontal_flip: bool = True
    augment_on: str = "auto"  # auto: the GPU when there is one
    num_workers: int = -1  # -1: chosen from the CPU and GPU count
    seed: int = 42
    early_stopping_patience: int = 0  # 0: off
    precision: str = "auto"
    cache_images: str = "auto"
    compile: bool = False
    rules: tuple[str, ...] = TRAINING_RULES  # checked in the loop; "none" turns them off
    rules_action: str = "log"
    profile_steps: int = 0  # 0: off; else torch.profiler records this many steps
    resume_from: str = ""  # a job name: continue its run (same settings) when this job has no checkpoint
    tensorboard: str = "auto"  # auto: when SageMaker's tensorboardoutputconfig.json is there


def _integer(minimum: int, maximum: int | None = None) -> tuple[Callable[[str], Any], str]:
    def convert(text: str) -> int:
        value = float(text)  # the tuner may send "3.0" for an integer range
        if not value.is_integer():
            raise ValueError
        value = int(value)
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError
        return value

    allowed = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
    return convert, allowed


def _number(minimum: float, maximum: float | None = None, *, open_max: bool = False) -> tuple[Callable[[str], Any], str]:
    def convert(text: str) -> float:
        value = float(text)
        if not value >= minimum:  # also rejects nan
            raise ValueError
        if maximum is not None and (value > maximum or (open_max and value == maximum)):
            raise ValueError
        return value

    if maximum is None:
        allowed = f"a number >= {minimum:g}"
    else:
        allowed = f"a number from {minimum:g} to {maximum:g}" + (" (exclusive)" if open_max else "")
    return convert, allowed


def _choice(choices: Sequence[str]) -> tuple[Callable[[str], Any], str]:
    def convert(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError
        return value

    return convert, "one of " + ", ".join(choices)


def _boolean() -> tuple[Callable[[str], Any], str]:
    truthy, falsy = ("true", "1", "yes"), ("false", "0", "no")

    def convert(text: str) -> bool:
        value = text.strip().lower()
        if value not in truthy + falsy:
            raise ValueError
        return value in truthy

    return convert, "true or false"


def _workers() -> tuple[Callable[[str], Any], str]:
    convert_int, _ = _integer(0)

    def convert(text: str) -> int:
        return -1 if text.strip().lower() == "auto" else convert_int(text)

    return convert, "auto or an integer >= 0"


def _rules() -> tuple[Callable[[str], Any], str]:
    def convert(text: str) -> tuple[str, ...]:
        names = [n.strip().lower().replace("-", "_") for n in text.split(",") if n.strip()]
        if names in ([], ["none"]):
            return ()
        if names == ["all"]:
            return TRAINING_RULES
        if any(n not in TRAINING_RULES for n in names):
            raise ValueError
        return tuple(dict.fromkeys(names))

    return convert, "none, all, or a comma-separated list of " + ", ".join(TRAINING_RULES)


def _job_name() -> tuple[Callable[[str], Any], str]:
    def convert(text: str) -> str:
        value = text.strip()
        if not re.fullmatch(r"[A-Za-z0-9](-*[A-Za-z0-9]){0,62}", value):  # SageMaker's TrainingJobName pattern
            raise ValueError
        return value

    return convert, "a training job name (letters, digits and hyphens, at most 63)"


_PARSERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "arch": _choice(ARCHS),
    "pretrained": _boolean(),
    "freeze_backbone": _boolean(),
    "epochs": _integer(1),
    "batch_size": _integer(1),
    "lr": _number(0.0, 10.0),
    "optimizer": _choice(OPTIMIZERS),
    "momentum": _number(0.0, 1.0, open_max=True),
    "weight_decay": _number(0.0),
    "label_smoothing": _number(0.0, 1.0, open_max=True),
    "lr_scheduler": _choice(LR_SCHEDULERS),
    "lr_warmup_epochs": _integer(0),
    "lr_step_size": _integer(1),
    "lr_gamma": _number(0.0, 1.0),
    "image_size": _integer(16, 1024),
    "random_crop_min_scale": _number(0.01, 1.0),
    "horizontal_flip": _boolean(),
    "augment_on": _choice(AUGMENT_ON),
    "num_workers": _workers(),
    "seed": _integer(0),
    "early_stopping_patience": _integer(0),
    "precision": _choice(PRECISIONS),
    "cache_images": _choice(CACHE_MODES),
    "compile": _boolean(),
    "rules": _rules(),
    "rules_action": _choice(RULE_ACTIONS),
    "profile_steps": _integer(0),
    "resume_from": _job_name(),
    "tensorboard": _choice(TENSORBOARD),
}
assert set(_PARSERS) == {f.name for f in dataclasses.fields(Hyperparameters)}


def hyperparameter_names() -> list[str]:
    return [name.replace("_", "-") for name in _PARSERS]


def _pairs(argv: Sequence[str]) -> list[tuple[str, str]]:
    pairs, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: hyperparameters come as --name value")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
            i += 1
        elif i + 1 < len(argv):
            key, value = arg[2:], argv[i + 1]
            i += 2
        else:
            raise ConfigError(f"hyperparameter {arg[2:]!r} has no value")
        pairs.append((key, value))
    return pairs


def parse_hyperparameters(argv: Sequence[str]) -> Hyperparameters:
    """Parse ``--name value`` pairs; names may use dashes or underscores.

    Names starting with an underscore are SageMaker's own (the tuner adds
    ``_tuning_objective_metric``) and are ignored.
    """
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, text in _pairs(argv):
        if key.startswith("_"):
            continue
        name = key.replace("-", "_")
        if name in given:
            raise ConfigError(f"hyperparameter {name.replace('_', '-')!r} is given twice, as {given[name]!r} and "
                              f"{key!r}; keep one")
        given[name] = key
        if name not in _PARSERS:
            raise ConfigError(
                f"unknown hyperparameter {key!r}; known: {', '.join(hyperparameter_names())}"
            )
        convert, allowed = _PARSERS[name]
        try:
            values[name] = convert(text)
        except (ValueError, OverflowError):
            raise ConfigError(
                f"hyperparameter {name.replace('_', '-')!r} = {text!r} is invalid: expected {allowed}"
            ) from None
    return Hyperparameters(**values)


@dataclass(frozen=True)
class TrainingEnv:
    """Where the job reads and writes, as SageMaker's training toolkit describes it."""

    model_dir: Path
    output_dir: Path
    output_data_dir: Path
    checkpoint_dir: Path
    input_config_dir: Path
    channels: dict[str, Path]
    num_cpus: int
    current_host: str
    hosts: tuple[str, ...]
    job_name: str = "local"  # TRAINING_JOB_NAME: SageMaker sets it, and a spot restart keeps it
    input_modes: dict[str, str] = dataclasses.field(default_factory=dict)  # channel -> File, FastFile or Pipe
    rank: int = 0  # torchrun's, when the program runs under it
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    allow_cpu: bool = False  # ALLOW_CPU_ENV

    def channel(self, name: str) -> Path | None:
        """The folder of a channel by canonical name, accepting its aliases."""
        for alias in CHANNEL_ALIASES[name]:
            if alias in self.channels:
                return self.channels[alias]
        return None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> TrainingEnv:
        base = Path(environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
        if "SM_CHANNELS" in environ:
            names = json.loads(environ["SM_CHANNELS"])
            channels = {n: Path(environ.get(f"SM_CHANNEL_{n.upper()}", base / "input/data" / n)) for n in names}
        else:  # run without the toolkit: every folder under input/data is a channel
            data = base / "input" / "data"
            channels = {p.name: p for p in sorted(data.iterdir()) if p.is_dir()} if data.is_dir() else {}
        hosts = tuple(json.loads(environ.get("SM_HOSTS", '["localhost"]')))
        return cls(
            model_dir=Path(environ.get("SM_MODEL_DIR", base / "model")),
            output_dir=Path(environ.get("SM_OUTPUT_DIR", base / "output")),
            output_data_dir=Path(environ.get("SM_OUTPUT_DATA_DIR", base / "output" / "data")),
            checkpoint_dir=Path(environ.get("SM_CHECKPOINT_DIR", base / "checkpoints")),
            input_config_dir=Path(environ.get("SM_INPUT_CONFIG_DIR", base / "input" / "config")),
            channels=channels,
            num_cpus=int(environ.get("SM_NUM_CPUS", str(os.cpu_count() or 1))),
            current_host=environ.get("SM_CURRENT_HOST", hosts[0]),
            hosts=hosts,
            job_name=environ.get("TRAINING_JOB_NAME") or "local",
            input_modes={name: str(c.get("TrainingInputMode", "File"))
                         for name, c in json.loads(environ.get("SM_INPUT_DATA_CONFIG") or "{}").items()},
            rank=int(environ.get("RANK", "0")),
            world_size=int(environ.get("WORLD_SIZE", "1")),
            local_rank=int(environ.get("LOCAL_RANK", "0")),
            local_world_size=int(environ.get("LOCAL_WORLD_SIZE", "1")),
            allow_cpu=cpu_allowed(environ),
        )


def _env_int(environ: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"environment variable {name}={text!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"environment variable {name}={value} must be >= {minimum}")
    return value


def _env_converted(environ: Mapping[str, str], name: str, default: str, parser: tuple[Callable[[str], Any], str]) -> Any:
    """An environment variable through a hyperparameter converter (``_choice``, ``_boolean``)."""
    text = environ.get(name, "").strip() or default
    convert, allowed = parser
    try:
        return convert(text)
    except ValueError:
        raise ConfigError(f"environment variable {name}={text!r} must be {allowed}") from None


def cpu_allowed(environ: Mapping[str, str]) -> bool:
    """ALLOW_CPU_ENV: run on the CPU of a host whose GPUs torch cannot use."""
    return _env_converted(environ, ALLOW_CPU_ENV, "false", _boolean())


@dataclass(frozen=True)
class ServingConfig:
    """How ``serve`` runs, from SageMaker's hosting variables (and a few of our own, IMGCLF_*)."""

    model_dir: Path
    host: str
    port: int
    workers: int
    threads_per_worker: int
    torch_threads: int
    gpus: int
    timeout: int
    max_payload_bytes: int
    max_image_pixels: int
    max_images_per_request: int
    max_batch_size: int
    max_batch_wait_ms: int
    precision: str
    allow_cpu: bool
    default_top_k: int
    max_concurrent_transforms: int
    batch_strategy: str
    max_connections: int
    client_timeout: int
    decode_slots: int
    serve_user: str | None

    @classmethod
    def from_environ(cls, gpus: int, cpus: int, environ: Mapping[str, str] = os.environ) -> ServingConfig:
        base = Path(environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
        # One model copy per GPU; on CPU, few workers with several torch threads each.
        workers = _env_int(environ, "SAGEMAKER_MODEL_SERVER_WORKERS", gpus if gpus else max(1, cpus // 4))
        payload_mb = _env_int(environ, "SAGEMAKER_MAX_PAYLOAD_IN_MB", 6)
        return cls(
            model_dir=Path(environ.get("SM_MODEL_DIR", base / "model")),
            host=environ.get("IMGCLF_HOST", "0.0.0.0"),
            port=_env_int(environ, "SAGEMAKER_BIND_TO_PORT", 8080),
            workers=workers,
            threads_per_worker=_env_int(environ, "IMGCLF_THREADS_PER_WORKER", 64),
            torch_threads=_env_int(environ, "IMGCLF_TORCH_THREADS", max(1, cpus // workers)),
            gpus=gpus,
            timeout=_env_int(environ, "SAGEMAKER_MODEL_SERVER_TIMEOUT", 60),
            # The runtime API caps real-time bodies at 6,291,456 bytes (6 MiB); batch transform may send more.
            max_payload_bytes=payload_mb * 1024 * 1024,
            max_image_pixels=_env_int(environ, "IMGCLF_MAX_IMAGE_PIXELS", 64_000_000),
            max_images_per_request=_env_int(environ, "IMGCLF_MAX_IMAGES_PER_REQUEST", 256),
            # CPUs run ResNets fastest per image at small batches (cache-sized activations).
            max_batch_size=_env_int(environ, "IMGCLF_MAX_BATCH_SIZE", 32 if gpus else 8),
            max_batch_wait_ms=_env_int(environ, "IMGCLF_MAX_BATCH_WAIT_MS", 5, minimum=0),
            precision=_env_converted(environ, "IMGCLF_PRECISION", "auto", _choice(PRECISIONS)),
            allow_cpu=cpu_allowed(environ),
            default_top_k=_env_int(environ, "IMGCLF_TOP_K", 5),
            max_concurrent_transforms=_env_int(environ, "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", max(1, workers) * 4),
            batch_strategy=environ.get("SAGEMAKER_BATCH_STRATEGY", "SINGLE_RECORD").upper(),
            # nginx: connections held at once (idle ones cost a few kB), and how long a client may
            # pause while sending a request or reading the answer.
            max_connections=_env_int(environ, "IMGCLF_MAX_CONNECTIONS", 4096, minimum=16),
            client_timeout=_env_int(environ, "IMGCLF_CLIENT_TIMEOUT", 20),
            # images decoding at once per worker: decoding memory is this x the per-image maximum
            decode_slots=_env_int(environ, "IMGCLF_DECODE_SLOTS", max(1, cpus // workers)),
            # when serve starts as root, request handling (nginx's and gunicorn's workers) runs as this user
            serve_user=environ.get("IMGCLF_SERVE_USER", "").strip() or None,
        )
