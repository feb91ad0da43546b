"""The job's settings, read once at the edge: the SageMaker training environment (``SM_*``
variables) and serving's (hyperparameters: imgclf.hyperparameters).
Everything else in the package takes these values as arguments. No torch here: the laptop
launchers import this module.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from . import resources
from .hyperparameters import PRECISIONS, ConfigError, Parser, boolean, choice

# Opt-in to run on the CPU of a host whose GPUs torch cannot use (imgclf.gpu); never implicit.
ALLOW_CPU_ENV = "IMGCLF_ALLOW_CPU"

# Channel names we accept, canonical name first.
CHANNEL_ALIASES = {
    "train": ("train", "training"),
    "valid": ("valid", "validation", "val"),
    "test": ("test", "testing"),
    "pretrained": ("pretrained",),
}


def sagemaker_path(environ: Mapping[str, str], variable: str, *parts: str) -> Path:
    """A path SageMaker names in ``variable`` (SM_MODEL_DIR, ...), else its place under
    SAGEMAKER_BASE_DIR (/opt/ml)."""
    if variable in environ:
        return Path(environ[variable])
    return Path(environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"), *parts)


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
        if "SM_CHANNELS" in environ:
            names = json.loads(environ["SM_CHANNELS"])
            channels = {n: sagemaker_path(environ, f"SM_CHANNEL_{n.upper()}", "input", "data", n) for n in names}
        else:  # run without the toolkit: every folder under input/data is a channel
            data = sagemaker_path(environ, "SM_INPUT_DIR", "input") / "data"
            channels = {p.name: p for p in sorted(data.iterdir()) if p.is_dir()} if data.is_dir() else {}
        hosts = tuple(json.loads(environ.get("SM_HOSTS", '["localhost"]')))
        return cls(
            model_dir=sagemaker_path(environ, "SM_MODEL_DIR", "model"),
            output_dir=sagemaker_path(environ, "SM_OUTPUT_DIR", "output"),
            output_data_dir=sagemaker_path(environ, "SM_OUTPUT_DATA_DIR", "output", "data"),
            checkpoint_dir=checkpoint_dir(environ),
            input_config_dir=sagemaker_path(environ, "SM_INPUT_CONFIG_DIR", "input", "config"),
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


def checkpoint_dir(environ: Mapping[str, str]) -> Path:
    """Where checkpoints go: the job's CheckpointConfig.LocalPath (SageMaker writes it to
    input/config/checkpointconfig.json and syncs that folder with CheckpointConfig.S3Uri), else
    /opt/ml/checkpoints, SageMaker's default; SM_CHECKPOINT_DIR overrides both."""
    if "SM_CHECKPOINT_DIR" in environ:
        return Path(environ["SM_CHECKPOINT_DIR"])
    config = sagemaker_path(environ, "SM_INPUT_CONFIG_DIR", "input", "config") / "checkpointconfig.json"
    try:
        local_path = json.loads(config.read_text()).get("LocalPath")
    except FileNotFoundError:
        local_path = None
    except (OSError, ValueError, AttributeError) as e:
        raise ConfigError(f"{config} is not a readable JSON object ({e})") from None
    return Path(local_path) if local_path else sagemaker_path(environ, "SM_CHECKPOINT_DIR", "checkpoints")


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


def _env_converted(environ: Mapping[str, str], name: str, default: str, parser: Parser) -> Any:
    """An environment variable through a hyperparameter parser (``choice``, ``boolean``)."""
    text = environ.get(name, "").strip() or default
    try:
        return parser.convert(text)
    except ValueError:
        raise ConfigError(f"environment variable {name}={text!r} must be {parser.allowed}") from None


def cpu_allowed(environ: Mapping[str, str]) -> bool:
    """ALLOW_CPU_ENV: run on the CPU of a host whose GPUs torch cannot use."""
    return _env_converted(environ, ALLOW_CPU_ENV, "false", boolean())


ENGINES = ("auto", "torch", "openvino")  # what runs the network in serve: imgclf.serving.engines


@dataclass(frozen=True)
class ServingConfig:
    """How ``serve`` runs, from SageMaker's hosting variables (and a few of our own, IMGCLF_*)."""

    # Every variable from_environ reads: (name, default, meaning). docs/reference/serving-variables.md
    # is generated from it, and a test fails when from_environ reads a variable missing here.
    VARIABLES: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("SAGEMAKER_BASE_DIR", "/opt/ml", "the folder laid out like /opt/ml (outside the image)"),
        ("SM_MODEL_DIR", "$SAGEMAKER_BASE_DIR/model", "the model folder `train` left"),
        ("IMGCLF_HOST", "0.0.0.0", "the address nginx listens on"),
        ("SAGEMAKER_BIND_TO_PORT", "8080", "the port nginx listens on (the image has the `accept-bind-to-port` label)"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "one per usable GPU, else one per 4 CPUs",
         "gunicorn workers; each holds one model copy (on a GPU host, one per GPU)"),
        ("IMGCLF_THREADS_PER_WORKER", "64", "request threads per worker (they decode; one thread runs the model)"),
        ("IMGCLF_TORCH_THREADS", "CPUs / workers", "torch's intra-op threads per worker"),
        ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "60", "seconds a request may take from nginx's hand-off to its answer (503 after)"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "6", "the body limit in MiB (413 above); also `/execution-parameters`' MaxPayloadInMB"),
        ("IMGCLF_MAX_IMAGE_PIXELS", "64000000, less where the container's memory is small",
         "an image declaring more pixels is refused (413) before any pixel is decoded (WEBP: fewer, by its cost per pixel)"),
        ("IMGCLF_MAX_IMAGES_PER_REQUEST", "256", "instances in one JSON request (413 above)"),
        ("IMGCLF_MAX_BATCH_SIZE", "32 on GPU, 8 on CPU", "images in one forward pass across concurrent requests"),
        ("IMGCLF_MAX_BATCH_WAIT_MS", "5", "how long the batcher waits for requests still decoding (0: never)"),
        ("IMGCLF_ENGINE", "auto", "what runs the network: auto (OpenVINO on CPUs, torch on GPUs), torch or openvino"),
        ("IMGCLF_PRECISION", "auto", "auto, fp32, bf16 or fp16 (auto: fp16 on GPU, bf16 on CPUs with native bf16, else fp32)"),
        ("IMGCLF_ALLOW_CPU", "false", "true: serve on the CPU of a host whose GPUs torch cannot use (else `/ping` answers 500)"),
        ("IMGCLF_TOP_K", "5", "labels per image when the request names no `top_k`"),
        ("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", "workers x 4", "`/execution-parameters`' MaxConcurrentTransforms"),
        ("SAGEMAKER_BATCH_STRATEGY", "SINGLE_RECORD", "`/execution-parameters`' BatchStrategy: SINGLE_RECORD or MULTI_RECORD (JSON Lines)"),
        ("IMGCLF_MAX_CONNECTIONS", "4096", "connections nginx holds at once (at least 16)"),
        ("IMGCLF_CLIENT_TIMEOUT", "20", "seconds a client may pause while sending a request or reading the answer (408)"),
        ("IMGCLF_DECODE_SLOTS", "CPUs / workers, fewer where the container's memory is small",
         "images decoding at once in a worker: decoding memory is this x the pixel cap x 6 bytes at most"),
        ("IMGCLF_SERVE_USER", "(none; the image: imgclf)", "started as root, nginx's and gunicorn's workers run as this user"),
    )

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
    engine: str
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
    def from_environ(cls, gpus: int, cpus: int, environ: Mapping[str, str] = os.environ,
                     memory_bytes: int | None = None) -> ServingConfig:
        """``cpus`` and ``memory_bytes``: what the container may use (imgclf.resources); with
        ``memory_bytes``, the default decode slots and pixel cap fit it (resources.fit_decoding)."""
        model_dir = sagemaker_path(environ, "SM_MODEL_DIR", "model")
        # One model copy per GPU; on CPU, few workers with several torch threads each.
        workers = _env_int(environ, "SAGEMAKER_MODEL_SERVER_WORKERS", gpus if gpus else max(1, cpus // 4))
        slots, pixels = max(1, cpus // workers), 64_000_000
        if memory_bytes:
            budget = memory_bytes - resources.reserved_bytes(workers, resources.model_bytes(model_dir))
            slots, pixels = resources.fit_decoding(budget, workers, slots, pixels)
        payload_mb = _env_int(environ, "SAGEMAKER_MAX_PAYLOAD_IN_MB", 6)
        return cls(
            model_dir=model_dir,
            host=environ.get("IMGCLF_HOST", "0.0.0.0"),
            port=_env_int(environ, "SAGEMAKER_BIND_TO_PORT", 8080),
            workers=workers,
            threads_per_worker=_env_int(environ, "IMGCLF_THREADS_PER_WORKER", 64),
            torch_threads=_env_int(environ, "IMGCLF_TORCH_THREADS", max(1, cpus // workers)),
            gpus=gpus,
            timeout=_env_int(environ, "SAGEMAKER_MODEL_SERVER_TIMEOUT", 60),
            # The runtime API caps real-time bodies at 6,291,456 bytes (6 MiB); batch transform may send more.
            max_payload_bytes=payload_mb * 1024 * 1024,
            max_image_pixels=_env_int(environ, "IMGCLF_MAX_IMAGE_PIXELS", pixels),
            max_images_per_request=_env_int(environ, "IMGCLF_MAX_IMAGES_PER_REQUEST", 256),
            # CPUs run ResNets fastest per image at small batches (cache-sized activations).
            max_batch_size=_env_int(environ, "IMGCLF_MAX_BATCH_SIZE", 32 if gpus else 8),
            max_batch_wait_ms=_env_int(environ, "IMGCLF_MAX_BATCH_WAIT_MS", 5, minimum=0),
            engine=_env_converted(environ, "IMGCLF_ENGINE", "auto", choice(ENGINES)),
            precision=_env_converted(environ, "IMGCLF_PRECISION", "auto", choice(PRECISIONS)),
            allow_cpu=cpu_allowed(environ),
            default_top_k=_env_int(environ, "IMGCLF_TOP_K", 5),
            max_concurrent_transforms=_env_int(environ, "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", max(1, workers) * 4),
            # MULTI_RECORD: JSON Lines bodies (imgclf.serving.codecs), so both are true when advertised
            batch_strategy=_env_converted(environ, "SAGEMAKER_BATCH_STRATEGY", "single_record",
                                          choice(("single_record", "multi_record"))).upper(),
            # nginx: connections held at once (idle ones cost a few kB), and how long a client may
            # pause while sending a request or reading the answer.
            max_connections=_env_int(environ, "IMGCLF_MAX_CONNECTIONS", 4096, minimum=16),
            client_timeout=_env_int(environ, "IMGCLF_CLIENT_TIMEOUT", 20),
            # images decoding at once per worker: decoding memory is this x the per-image maximum
            decode_slots=_env_int(environ, "IMGCLF_DECODE_SLOTS", slots),
            # when serve starts as root, request handling (nginx's and gunicorn's workers) runs as this user
            serve_user=environ.get("IMGCLF_SERVE_USER", "").strip() or None,
        )
