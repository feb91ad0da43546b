"""Every hyperparameter, declared once as a field of ``Hyperparameters``, and their parser (``--name value``
pairs, every value a string). No torch here: the launchers import it."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .archs import ARCHS
from .rules import TRAINING_RULES

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# SageMaker's TrainingJobName pattern (botocore's service model); the launchers check names with it too.
TRAINING_JOB_NAME = re.compile(r"[A-Za-z0-9](-*[A-Za-z0-9]){0,62}")


class ConfigError(ValueError):
    """Input the user must fix: a hyperparameter, a channel or the data in it."""


@dataclass(frozen=True)
class Parser:
    """Text -> value (raising ValueError for a bad one), and what it accepts, in words."""

    convert: Callable[[str], Any]
    allowed: str
    values: tuple[str, ...] = ()  # a choice's values, for tests that try each


def _checked(convert: Callable[[str], Any], ok: Callable[[Any], Any]) -> Callable[[str], Any]:
    def checked(text: str) -> Any:
        value = convert(text)
        if not ok(value):
            raise ValueError
        return value

    return checked


def _whole(text: str) -> int:
    value = float(text)  # the tuner may send "3.0" for an integer range
    if not value.is_integer():
        raise ValueError
    return int(value)


def integer(minimum: int, maximum: int | None = None) -> Parser:
    top = math.inf if maximum is None else maximum
    allowed = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
    return Parser(_checked(_whole, lambda value: minimum <= value <= top), allowed)


def number(minimum: float, maximum: float | None = None, *, open_max: bool = False) -> Parser:
    top = math.inf if maximum is None else maximum
    allowed = f"a number >= {minimum:g}" if maximum is None else (
        f"a number from {minimum:g} to {maximum:g}" + (" (exclusive)" if open_max else ""))
    return Parser(_checked(float, lambda value: minimum <= value <= top and not (open_max and value == top)), allowed)


def choice(choices: Sequence[str]) -> Parser:
    return Parser(_checked(lambda text: text.strip().lower(), lambda value: value in choices),
                  "one of " + ", ".join(choices), tuple(choices))


def to_bool(value: object) -> bool:
    """The one reading of a yes/no setting (hyperparameters, environment variables, the toolkit's flags)."""
    text = str(value).strip().lower()
    if text not in ("true", "1", "yes", "false", "0", "no"):
        raise ValueError(f"{value!r} is not true or false")
    return text in ("true", "1", "yes")


def boolean() -> Parser:
    return Parser(to_bool, "true or false")


def workers() -> Parser:
    count = integer(0).convert
    return Parser(lambda text: -1 if text.strip().lower() == "auto" else count(text), "auto or an integer >= 0")


def rule_list() -> Parser:
    def convert(text: str) -> tuple[str, ...]:
        names = [n.strip().lower().replace("-", "_") for n in text.split(",") if n.strip()]
        if names in ([], ["none"]):
            return ()
        if names == ["all"]:
            return TRAINING_RULES
        if any(n not in TRAINING_RULES for n in names):
            raise ValueError
        return tuple(dict.fromkeys(names))

    return Parser(convert, "none, all, or a comma-separated list of " + ", ".join(TRAINING_RULES))


def job_name() -> Parser:
    return Parser(_checked(str.strip, TRAINING_JOB_NAME.fullmatch),
                  "a training job name (letters, digits and hyphens, at most 63)")


def setting(default: Any, parser: Parser, help: str, *, run: bool = False, shown: str = "") -> Any:
    """A Hyperparameters field; ``run``: a run setting (docs/training.md#run-settings); ``shown``: the default."""
    return dataclasses.field(default=default, metadata={"parser": parser, "help": help, "run": run, "shown": shown})


@dataclass(frozen=True)
class Hyperparameters:
    """One job's hyperparameters: users write the field names with dashes (underscores work too)."""

    arch: str = setting("resnet50", choice(ARCHS), "the torchvision network to fine-tune (each one's ImageNet "
                        "weights file and evaluation resize: the architecture table)", run=True)
    pretrained: bool = setting(True, boolean(), "start from ImageNet weights ([channels](training.md#channels))", run=True)
    freeze_backbone: bool = setting(False, boolean(), "train only the new head (needs `pretrained`)", run=True)
    epochs: int = setting(3, integer(1), "passes over the train channel")
    batch_size: int = setting(64, integer(1), "the global batch, split evenly over the processes", run=True)
    lr: float = setting(0.001, number(0.0, 10.0), "the learning rate before the schedule's factor", run=True)
    optimizer: str = setting("adamw", choice(("sgd", "adam", "adamw")), "sgd is Nesterov when momentum > 0", run=True)
    momentum: float = setting(0.9, number(0.0, 1.0, open_max=True), "sgd only", run=True)
    weight_decay: float = setting(1e-4, number(0.0), "the optimizer's weight decay", run=True)
    label_smoothing: float = setting(0.0, number(0.0, 1.0, open_max=True), "the loss's label smoothing", run=True)
    lr_scheduler: str = setting("cosine", choice(("cosine", "step", "constant")),
                                "the learning-rate schedule, applied per step", run=True)
    lr_warmup_epochs: int = setting(0, integer(0), "linear warm-up before the schedule", run=True)
    lr_step_size: int = setting(10, integer(1), "step schedule: multiply by `lr-gamma` every this many epochs "
                                "after the warm-up", run=True)
    lr_gamma: float = setting(0.1, number(0.0, 1.0), "step schedule's factor", run=True)
    image_size: int = setting(224, integer(16, 1024), "the model's input side; evaluation resizes by the ratio "
                              "the arch's ImageNet weights declare and center-crops", run=True)
    random_crop_min_scale: float = setting(0.08, number(0.01, 1.0), "RandomResizedCrop's lower scale", run=True)
    horizontal_flip: bool = setting(True, boolean(), "random flips in training", run=True)
    augment_on: str = setting("auto", choice(("auto", "cpu", "device")), "auto: the GPU when there is one, else the "
                              "CPU; cpu: per image in the loader; device: a batch at a time on the training device "
                              "([benchmarks](benchmarks.md))", run=True)
    num_workers: int = setting(-1, workers(), "data-loader processes (auto: from the CPU and GPU count)", shown="auto")
    seed: int = setting(42, integer(0), "seeds Python's, NumPy's and torch's generators", run=True)
    early_stopping_patience: int = setting(0, integer(0), "0: off; else stop after this many epochs without a "
                                           "better valid accuracy (needs `valid`)")
    precision: str = setting("auto", choice(PRECISIONS), "auto: bf16 on GPUs with native bf16 (compute capability "
                             ">= 8.0), else fp16 with loss scaling (T4; V100 needs a cu126 build); fp32 on CPUs "
                             "(their bf16 convolution gradients can turn NaN) ([GPUs](gpu.md#precision))", run=True)
    cache_images: str = setting("auto", choice(("auto", "true", "false")), "keep the decoded images in memory "
                                "(auto: when they fit in half the free memory)")
    compile: bool = setting(False, boolean(), "`torch.compile` the model (needs an image built with "
                            "`WITH_COMPILER=true`)")
    rules: tuple[str, ...] = setting(TRAINING_RULES, rule_list(), "checked during training "
                                     "([rules](observability.md#training-health-rules))", shown="all")
    rules_action: str = setting("log", choice(("log", "stop")), "stop: end training when a rule fires, keeping the "
                                "best model")
    profile_steps: int = setting(0, integer(0), "0: off; else record a torch.profiler trace of this many steps "
                                 "([profiling](observability.md#profiling))")
    resume_from: str = setting("", job_name(), "continue that job's run (same settings) when this job has no "
                               "checkpoint of its own ([reliability](reliability.md#checkpoints))", shown="(none)")
    tensorboard: str = setting("auto", choice(("auto", "true", "false")), "auto: event files when SageMaker's "
                               "TensorBoard config is there; true: always; false: never ([TensorBoard](observability.md#tensorboard))")


@dataclass(frozen=True)
class Hyperparameter:
    """One field of Hyperparameters with its metadata, as the parser, the table and the checkpoint read it."""

    field: str
    default: Any
    parser: Parser
    help: str
    run: bool
    shown: str

    @property
    def name(self) -> str:  # as users write it
        return self.field.replace("_", "-")

    @property
    def default_text(self) -> str:
        if self.shown:
            return self.shown
        if isinstance(self.default, bool):
            return str(self.default).lower()
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)


HYPERPARAMETERS = tuple(Hyperparameter(f.name, f.default, **f.metadata) for f in dataclasses.fields(Hyperparameters))
_BY_FIELD = {h.field: h for h in HYPERPARAMETERS}
RUN_SETTINGS = tuple(h.field for h in HYPERPARAMETERS if h.run)


def field_of(name: str) -> Hyperparameter:
    return _BY_FIELD[name.replace("-", "_")]


def _pairs(argv: Sequence[str]) -> Iterator[tuple[str, str]]:
    args = iter(argv)
    for arg in args:
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: hyperparameters come as --name value")
        key, equals, value = arg[2:].partition("=")
        if not equals and (value := next(args, None)) is None:
            raise ConfigError(f"hyperparameter {key!r} has no value")
        yield key, value


def parse_hyperparameters(argv: Sequence[str]) -> Hyperparameters:
    """Parse ``--name value`` pairs; names may use dashes or underscores."""
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, text in list(_pairs(argv)):  # every pair well-formed first
        if key.startswith("_"):  # SageMaker's own, such as the tuner's _tuning_objective_metric
            continue
        field = key.replace("-", "_")
        if field in given:
            raise ConfigError(f"hyperparameter {field.replace('_', '-')!r} is given twice, as {given[field]!r} and "
                              f"{key!r}; keep one")
        given[field] = key
        if field not in _BY_FIELD:
            raise ConfigError(f"unknown hyperparameter {key!r}; known: {', '.join(h.name for h in HYPERPARAMETERS)}")
        declared = _BY_FIELD[field]
        try:
            values[field] = declared.parser.convert(text)
        except (ValueError, OverflowError):
            raise ConfigError(
                f"hyperparameter {declared.name!r} = {text!r} is invalid: expected {declared.parser.allowed}"
            ) from None
    return Hyperparameters(**values)


def markdown_table(docs: str = "docs/") -> str:
    """The table of README.md and docs/reference/hyperparameters.md; ``docs``: the path from the page to docs/."""
    rows = ["| name | default | allowed | what it does |", "|---|---|---|---|"]
    rows += [f"| `{h.name}` | {h.default_text} | {h.parser.allowed} | {h.help.replace('](', '](' + docs)} |"
             for h in HYPERPARAMETERS]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
