"""What the launchers ask a backend for, in our own terms: no SDK object crosses this line."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class Target:
    """Where and how jobs run: the flags every launcher shares."""

    region: str
    image_uri: str = ""
    role: str = ""
    data: str = ""
    output_path: str | None = None
    instance_type: str = "local"
    instance_count: int = 1
    distributed: bool = False
    spot: bool = False
    max_run: int = 0
    local: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class Collection:
    """A Debugger tensor collection and how often (in steps) it is saved."""

    name: str
    save_interval: int
    include_regex: str | None = None

    def parameters(self) -> dict[str, str]:
        extra = {"include_regex": self.include_regex} if self.include_regex else {}
        return {"save_interval": str(self.save_interval)} | extra


@dataclass(frozen=True, kw_only=True)
class CustomRule:
    """One of our smdebug rules run by the rule-evaluator image from source in S3."""

    name: str
    rule_to_invoke: str
    collection: str
    image: str
    source: str
    parameters: dict[str, str] = field(default_factory=dict)
    instance_type: str = "ml.t3.medium"
    volume_size_gb: int = 5


@dataclass(frozen=True, kw_only=True)
class Debugger:
    """Hook, built-in rules (rule name, collection it reads or None), custom rules, profiler."""

    s3_output_path: str | None
    collections: tuple[Collection, ...]
    builtin_rules: tuple[tuple[str, str | None], ...]
    custom_rules: tuple[CustomRule, ...] = ()
    profiler_rules: tuple[str, ...] = ()
    profiler_interval_ms: int = 500


@dataclass(frozen=True, kw_only=True)
class TrainingJob:
    """One job of the image; hyperparameters already checked (hyperparameters.checked)."""

    hyperparameters: dict[str, str]
    channels: dict[str, str]
    name: str | None = None  # None: the SDK names it (a tuner's trials)
    tensorboard_s3: str | None = None
    debugger: Debugger | None = None


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """Tuning ranges: name -> (min, max, scaling), (min, max) or categorical values."""

    continuous: dict[str, tuple[float, float, str]]
    integer: dict[str, tuple[int, int]]
    categorical: dict[str, tuple[str, ...]]


@dataclass(frozen=True, kw_only=True)
class Tuning:
    search_space: SearchSpace
    max_jobs: int
    max_parallel_jobs: int


@dataclass(frozen=True)
class TrainingResult:
    job_name: str
    model_data: str
    rule_statuses: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TuningResult:
    best_job: str
    hyperparameters: dict[str, str]


@dataclass(frozen=True)
class Serverless:
    """ProductionVariantServerlessConfig: memory (1024-6144 MB; sets the vCPUs) and requests at once."""

    memory_mb: int
    max_concurrency: int


@dataclass(frozen=True, kw_only=True)
class Deployment:
    model_data: str
    endpoint_name: str
    ami: str | None = None
    environment: dict[str, str] = field(default_factory=dict)  # the container's variables
    async_output: str | None = None  # an asynchronous endpoint: where SageMaker writes each answer
    serverless: Serverless | None = None

    @property
    def async_failures(self) -> str | None:
        """Where an asynchronous endpoint writes the errors of failed requests: beside the answers."""
        return f"{self.async_output.rstrip('/')}/failures" if self.async_output else None


@dataclass(frozen=True, kw_only=True)
class Transform:
    """A batch transform over every object under an S3 prefix (or a local folder), one image each."""

    model_data: str
    input: str
    output_path: str
    content_type: str = "application/x-image"
    max_concurrent_transforms: int | None = None  # None: SageMaker asks the container's /execution-parameters
    max_payload_mb: int | None = None
    ami: str | None = None
    environment: dict[str, str] = field(default_factory=dict)  # the container's variables
