"""Training-health rules, one implementation each: the same functions judge an smdebug trial
(the custom rules below, for SageMaker Debugger) and the values the training loop keeps itself
(imgclf.monitor, the ``rules`` hyperparameter).

This file imports nothing from the package, so it also works on its own as the ``source`` of a
Debugger ``Rule.custom`` (scripts/train_debug.py): the rule container loads it and asks for
``LossNotDecreasing`` or ``VanishingGradient``, which are built on first access so that importing
this module never imports smdebug.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from statistics import fmean

# What the ``rules`` hyperparameter may name (imgclf.monitor checks them during training).
TRAINING_RULES = ("loss_not_decreasing", "vanishing_gradient", "overfit")


def loss_not_decreasing(losses: Sequence[float], window: int = 20, min_decrease: float = 0.0) -> bool:
    """Fires when the mean of the last ``window`` losses is not at least ``min_decrease`` (a fraction)
    below the mean of the ``window`` losses before them."""
    if len(losses) < 2 * window:
        return False
    before, recent = fmean(losses[-2 * window : -window]), fmean(losses[-window:])
    return recent >= before * (1 - min_decrease)


def vanishing_gradient(gradient_abs_means: Sequence[float], threshold: float = 1e-7) -> bool:
    """Fires when every gradient tensor's mean absolute value is below ``threshold``."""
    return bool(gradient_abs_means) and max(gradient_abs_means) < threshold


def overfit(train_losses: Sequence[float], valid_losses: Sequence[float], ratio: float = 0.1) -> bool:
    """Fires when the latest valid loss is more than ``ratio`` above its best while the train loss
    has kept falling since that best epoch (one value per epoch in each)."""
    if len(valid_losses) < 2 or len(train_losses) != len(valid_losses):
        return False
    best = min(range(len(valid_losses)), key=valid_losses.__getitem__)
    return valid_losses[-1] > valid_losses[best] * (1 + ratio) and train_losses[-1] < train_losses[best]


@cache
def smdebug_rules() -> dict[str, type]:
    """The rules above as smdebug custom rules (smdebug's PyPI package ships no built-in ones).

    Run one with ``smdebug.rules.rule_invoker.invoke_rule(rule, start_step=..., end_step=...,
    raise_eval_cond=True)`` on ``smdebug.trials.create_trial(path)``.
    """
    from smdebug.core.modes import ModeKeys
    from smdebug.exceptions import TensorUnavailableForStep
    from smdebug.rules.rule import Rule

    class LossNotDecreasing(Rule):
        def __init__(self, base_trial, window: int = 20, min_decrease: float = 0.0):
            super().__init__(base_trial, action_str="")
            self.window, self.min_decrease, self.losses = int(window), float(min_decrease), []

        def invoke_at_step(self, step: int) -> bool:  # ``step`` is global: judge the TRAIN ones
            names = self.base_trial.tensor_names(collection="losses")
            if not names or self.base_trial.mode(step) != ModeKeys.TRAIN:
                return False
            try:
                self.losses.append(float(self.base_trial.tensor(names[0]).value(step)))
            except TensorUnavailableForStep:
                return False
            return loss_not_decreasing(self.losses, self.window, self.min_decrease)

    class VanishingGradient(Rule):
        def __init__(self, base_trial, threshold: float = 1e-7):
            super().__init__(base_trial, action_str="")
            self.threshold = float(threshold)

        def invoke_at_step(self, step: int) -> bool:
            if self.base_trial.mode(step) != ModeKeys.TRAIN:
                return False
            means = []
            for name in self.base_trial.tensor_names(collection="gradients"):
                try:
                    means.append(float(abs(self.base_trial.tensor(name).value(step)).mean()))
                except TensorUnavailableForStep:
                    continue
            return vanishing_gradient(means, self.threshold)

    return {"LossNotDecreasing": LossNotDecreasing, "VanishingGradient": VanishingGradient}


def __getattr__(name: str) -> type:
    rules = smdebug_rules() if name in ("LossNotDecreasing", "VanishingGradient") else {}
    if name not in rules:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return rules[name]
