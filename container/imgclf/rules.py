"""Training-health rules, judged in the training loop and by Debugger; this file imports nothing from the package."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from functools import cache
from statistics import fmean
from typing import Any, NamedTuple


def loss_not_decreasing(losses: Sequence[float], window: int = 20, min_decrease: float = 0.0) -> bool:
    """Fires when the mean of the last ``window`` losses is not ``min_decrease`` (a fraction) below the one before."""
    if len(losses) < 2 * window:
        return False
    before, recent = fmean(losses[-2 * window : -window]), fmean(losses[-window:])
    return recent >= before * (1 - min_decrease)


def vanishing_gradient(gradient_abs_means: Sequence[float], threshold: float = 1e-7) -> bool:
    """Fires when every gradient tensor's mean absolute value is below ``threshold``."""
    return bool(gradient_abs_means) and max(gradient_abs_means) < threshold


def overfit(train_losses: Sequence[float], valid_losses: Sequence[float], ratio: float = 0.1) -> bool:
    """Fires when the latest valid loss is more than ``ratio`` above its best while the train loss kept falling."""
    if len(valid_losses) < 2 or len(train_losses) != len(valid_losses):
        return False
    best = min(range(len(valid_losses)), key=valid_losses.__getitem__)
    return valid_losses[-1] > valid_losses[best] * (1 + ratio) and train_losses[-1] < train_losses[best]


class Seen:
    """The values a rule judges, as training produced them so far."""

    def __init__(self, losses: list[float] | None = None, steps_per_loss: int = 1,
                 gradient_means: list[float] | None = None, train_losses: list[float] | None = None,
                 valid_losses: list[float] | None = None):
        self.losses = [] if losses is None else losses  # train loss, one value per ``steps_per_loss`` steps
        self.steps_per_loss = steps_per_loss
        self.gradient_means = [] if gradient_means is None else gradient_means  # each gradient's mean |value| now
        self.train_losses = [] if train_losses is None else train_losses  # one value per epoch each, aligned
        self.valid_losses = [] if valid_losses is None else valid_losses


class HealthRule(NamedTuple):
    name: str  # as the ``rules`` hyperparameter names it
    when: str  # "step" or "epoch": after which the training loop judges it
    parameters: dict[str, Any]  # defaults; Debugger passes overrides as strings
    check: Callable[[Seen, dict[str, Any]], bool]
    message: Callable[[Seen, dict[str, Any]], str]  # why it fired, for the log and the rules report


def _loss_message(seen: Seen, p: dict[str, Any]) -> str:
    window = p["window"]
    recent, before = fmean(seen.losses[-window:]), fmean(seen.losses[-2 * window : -window])
    return (f"mean train loss of the last {p['window'] * seen.steps_per_loss} steps ({recent:.4g}) is not below "
            f"that of the steps before ({before:.4g})")


RULES = (
    HealthRule(
        "loss_not_decreasing", "step", {"window": 20, "min_decrease": 0.0},
        lambda seen, p: loss_not_decreasing(seen.losses, p["window"], p["min_decrease"]),
        _loss_message,
    ),
    HealthRule(
        "vanishing_gradient", "step", {"threshold": 1e-7},
        lambda seen, p: vanishing_gradient(seen.gradient_means, p["threshold"]),
        lambda seen, p: (f"every gradient's mean |value| is below {p['threshold']:g} "
                         f"(largest {max(seen.gradient_means):.3g})"),
    ),
    HealthRule(
        "overfit", "epoch", {"ratio": 0.1},
        lambda seen, p: overfit(seen.train_losses, seen.valid_losses, p["ratio"]),
        lambda seen, p: (f"valid loss {seen.valid_losses[-1]:.4g} is more than {p['ratio']:.0%} above its best "
                         f"{min(seen.valid_losses):.4g} while the train loss kept falling"),
    ),
)
RULES_BY_NAME = {rule.name: rule for rule in RULES}
TRAINING_RULES = tuple(RULES_BY_NAME)  # what the ``rules`` hyperparameter may name


@cache
def smdebug_rules() -> dict[str, type]:
    """The smdebug custom rules by class name, from this file loaded on its own as Debugger loads it."""
    spec = importlib.util.spec_from_file_location("imgclf_debugger_rules", __file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {rule.__name__: rule for rule in module.TrialRule.__subclasses__()}


if __package__ != "imgclf":  # loaded on its own: by Debugger's rule container, or by smdebug_rules()
    from smdebug.core.modes import ModeKeys
    from smdebug.exceptions import TensorUnavailableForStep
    from smdebug.rules.rule import Rule

    class TrialRule(Rule):
        """One ``HealthRule`` judged on a Debugger trial's TRAIN steps; parameters arrive as strings."""

        rule: HealthRule

        def __init__(self, base_trial: Any, **overrides: str):
            unknown = set(overrides) - set(self.rule.parameters)
            if unknown:
                raise TypeError(f"{type(self).__name__} has no parameter(s) {', '.join(sorted(unknown))}")
            super().__init__(base_trial, action_str="")
            self.parameters = {k: type(v)(overrides.get(k, v)) for k, v in self.rule.parameters.items()}
            self.seen = Seen()

        def invoke_at_step(self, step: int) -> bool:  # ``step`` is global: judge the TRAIN ones
            if self.base_trial.mode(step) != ModeKeys.TRAIN or not self.read(step):
                return False
            return self.rule.check(self.seen, self.parameters)

        def read(self, step: int) -> bool:
            """Add this step's values to ``self.seen``; False when the trial has none."""
            raise NotImplementedError

    class LossNotDecreasing(TrialRule):
        rule = RULES_BY_NAME["loss_not_decreasing"]

        def read(self, step: int) -> bool:
            names = self.base_trial.tensor_names(collection="losses")
            if not names:
                return False
            try:
                self.seen.losses.append(float(self.base_trial.tensor(names[0]).value(step)))
            except TensorUnavailableForStep:
                return False
            return True

    class VanishingGradient(TrialRule):
        rule = RULES_BY_NAME["vanishing_gradient"]

        def read(self, step: int) -> bool:
            self.seen.gradient_means = []
            for name in self.base_trial.tensor_names(collection="gradients"):
                try:
                    self.seen.gradient_means.append(float(abs(self.base_trial.tensor(name).value(step)).mean()))
                except TensorUnavailableForStep:
                    continue
            return True
