"""Every hyperparameter, declared once: name, default, parser, what it accepts, what it does.

The ``Hyperparameters`` dataclass, ``parse_hyperparameters``, ``hyperparameter_names``, the error
messages and README's hyperparameter table (``python -m imgclf.hyperparameters`` prints it) are all
derived from ``HYPERPARAMETERS``. No torch here: the laptop launchers import this through
``imgclf.config``.

SageMaker's training toolkit passes hyperparameters as sorted ``--key value`` pairs, every value
a string (hyperparameters.json holds strings).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


# SageMaker's TrainingJobName pattern (botocore's service model); the launchers check names with it too.
TRAINING_JOB_NAME = re.compile(r"[A-Za-z0-9](-*[A-Za-z0-9]){0,62}")


class ConfigError(ValueError):
    """Input the user must fix: a hyperparameter, a channel or the data in it."""


@dataclass(frozen=True)
class Parser:
    """Text -> value (raising ValueError for a bad one), and what it accepts, in words."""

    convert: Callable[[str], Any]
    allowed: str


def integer(minimum: int, maximum: int | None = None) -> Parser:
    def convert(text: str) -> int:
        value = float(text)  # the tuner may send "3.0" for an integer range
        if not value.is_integer():
            raise ValueError
        value = int(value)
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError
        return value

    return Parser(convert, f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}")


def number(minimum: float, maximum: float | None = None, *, open_max: bool = False) -> Parser:
    def convert(text: str) -> float:
        value = float(text)
        if not value >= minimum:  # also rejects nan
            raise ValueError
        if maximum is not None and (value > maximum or (open_max and value == maximum)):
            raise ValueError
        return value

    if maximum is None:
        return Parser(convert, f"a number >= {minimum:g}")
    return Parser(convert, f"a number from {minimum:g} to {maximum:g}" + (" (exclusive)" if open_max else ""))


def choice(choices: Sequence[str]) -> Parser:
    def convert(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError
        return value

    return Parser(convert, "one of " + ", ".join(choices))


def boolean() -> Parser:
    truthy, falsy = ("true", "1", "yes"), ("false", "0", "no")

    def convert(text: str) -> bool:
        value = text.strip().lower()
        if value not in truthy + falsy:
            raise ValueError
        return value in truthy

    return Parser(convert, "true or false")


def workers() -> Parser:
    count = integer(0).convert

    def convert(text: str) -> int:
        return -1 if text.strip().lower() == "auto" else count(text)

    return Parser(convert, "auto or an integer >= 0")


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
    def convert(text: str) -> str:
        value = text.strip()
        if not TRAINING_JOB_NAME.fullmatch(value):
            raise ValueError
        return value

    return Parser(convert, "a training job name (letters, digits and hyphens, at most 63)")


@dataclass(frozen=True)
class Hyperparameter:
    name: str  # as users write it (dashes); underscores are accepted too
    default: Any
    parser: Parser
    help: str
    shown: str = ""  # the default as a user would write it, where str() of the value is not that

    @property
    def field(self) -> str:
        return self.name.replace("-", "_")

    @property
    def default_text(self) -> str:
        if self.shown:
            return self.shown
        if isinstance(self.default, bool):
            return str(self.default).lower()
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)


HYPERPARAMETERS = (
    Hyperparameter("arch", "resnet50", choice(ARCHS), "the torchvision ResNet to fine-tune"),
    Hyperparameter("pretrained", True, boolean(), "start from ImageNet weights ([channels](training.md#channels))"),
    Hyperparameter("freeze-backbone", False, boolean(), "train only the new head (needs `pretrained`)"),
    Hyperparameter("epochs", 3, integer(1), "passes over the train channel"),
    Hyperparameter("batch-size", 64, integer(1), "the global batch, split evenly over the processes"),
    Hyperparameter("lr", 0.001, number(0.0, 10.0), "the learning rate before the schedule's factor"),
    Hyperparameter("optimizer", "adamw", choice(OPTIMIZERS), "sgd is Nesterov when momentum > 0"),
    Hyperparameter("momentum", 0.9, number(0.0, 1.0, open_max=True), "sgd only"),
    Hyperparameter("weight-decay", 1e-4, number(0.0), "the optimizer's weight decay"),
    Hyperparameter("label-smoothing", 0.0, number(0.0, 1.0, open_max=True), "the loss's label smoothing"),
    Hyperparameter("lr-scheduler", "cosine", choice(LR_SCHEDULERS), "the learning-rate schedule, applied per step"),
    Hyperparameter("lr-warmup-epochs", 0, integer(0), "linear warm-up before the schedule"),
    Hyperparameter("lr-step-size", 10, integer(1), "step schedule: multiply by `lr-gamma` every this many epochs"),
    Hyperparameter("lr-gamma", 0.1, number(0.0, 1.0), "step schedule's factor"),
    Hyperparameter("image-size", 224, integer(16, 1024), "the model's input side; evaluation resizes to size/0.875 "
                   "and center-crops"),
    Hyperparameter("random-crop-min-scale", 0.08, number(0.01, 1.0), "RandomResizedCrop's lower scale"),
    Hyperparameter("horizontal-flip", True, boolean(), "random flips in training"),
    Hyperparameter("augment-on", "auto", choice(AUGMENT_ON), "auto: the GPU when there is one, else the CPU; cpu: "
                   "per image in the loader; device: a batch at a time on the training device "
                   "([benchmarks](benchmarks.md))"),
    Hyperparameter("num-workers", -1, workers(), "data-loader processes (auto: from the CPU and GPU count)", "auto"),
    Hyperparameter("seed", 42, integer(0), "seeds Python's, NumPy's and torch's generators"),
    Hyperparameter("early-stopping-patience", 0, integer(0), "0: off; else stop after this many epochs without a "
                   "better valid accuracy (needs `valid`)"),
    Hyperparameter("precision", "auto", choice(PRECISIONS), "auto: bf16 on GPUs with native bf16 (compute capability "
                   ">= 8.0), else fp16 with loss scaling (T4, V100); fp32 on CPUs (their bf16 convolution gradients "
                   "can turn NaN) ([GPUs](gpu.md#precision))"),
    Hyperparameter("cache-images", "auto", choice(CACHE_MODES), "keep the decoded images in memory (auto: when they "
                   "fit in half the free memory)"),
    Hyperparameter("compile", False, boolean(), "`torch.compile` the model (needs an image built with "
                   "`WITH_COMPILER=true`)"),
    Hyperparameter("rules", TRAINING_RULES, rule_list(), "checked during training "
                   "([rules](observability.md#training-health-rules))", "all"),
    Hyperparameter("rules-action", "log", choice(RULE_ACTIONS), "stop: end training when a rule fires, keeping the "
                   "best model"),
    Hyperparameter("profile-steps", 0, integer(0), "0: off; else record a torch.profiler trace of this many steps "
                   "([profiling](observability.md#profiling))"),
    Hyperparameter("resume-from", "", job_name(), "continue that job's run (same settings) when this job has no "
                   "checkpoint of its own ([reliability](reliability.md#checkpoints))", "(none)"),
    Hyperparameter("tensorboard", "auto", choice(TENSORBOARD), "auto: event files when SageMaker's TensorBoard config "
                   "is there; true: always; false: never ([TensorBoard](observability.md#tensorboard))"),
)
_BY_FIELD = {h.field: h for h in HYPERPARAMETERS}

Hyperparameters = dataclasses.make_dataclass(
    "Hyperparameters",
    [(h.field, type(h.default), dataclasses.field(default=h.default)) for h in HYPERPARAMETERS],
    frozen=True,
)
Hyperparameters.__module__ = __name__
Hyperparameters.__doc__ = "One job's hyperparameters, one field per entry of HYPERPARAMETERS, with its default."


def hyperparameter_names() -> list[str]:
    return [h.name for h in HYPERPARAMETERS]


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
        field = key.replace("-", "_")
        if field in given:
            raise ConfigError(f"hyperparameter {field.replace('_', '-')!r} is given twice, as {given[field]!r} and "
                              f"{key!r}; keep one")
        given[field] = key
        if field not in _BY_FIELD:
            raise ConfigError(f"unknown hyperparameter {key!r}; known: {', '.join(hyperparameter_names())}")
        declared = _BY_FIELD[field]
        try:
            values[field] = declared.parser.convert(text)
        except (ValueError, OverflowError):
            raise ConfigError(
                f"hyperparameter {declared.name!r} = {text!r} is invalid: expected {declared.parser.allowed}"
            ) from None
    return Hyperparameters(**values)


def markdown_table(docs: str = "docs/") -> str:
    """The hyperparameter table of README.md and docs/reference/hyperparameters.md (tests check that both
    hold exactly this); ``docs`` is the path from the page to docs/, which the help texts' links are relative to."""
    rows = ["| name | default | allowed | what it does |", "|---|---|---|---|"]
    rows += [f"| `{h.name}` | {h.default_text} | {h.parser.allowed} | {h.help.replace('](', '](' + docs)} |"
             for h in HYPERPARAMETERS]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
