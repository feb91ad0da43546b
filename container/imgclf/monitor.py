"""In-training rules (the ``rules`` hyperparameter), with an optional stop like Debugger's StopTraining."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn

from . import rules

log = logging.getLogger(__name__)

LOSS_WINDOW_MIN_STEPS = 20


class RuleMonitor:
    def __init__(
        self,
        names: Sequence[str],
        stop: bool,
        steps_per_epoch: int,
        reduce_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.names = tuple(names)
        self.stop = stop
        self.interval = max(1, min(10, steps_per_epoch // 10))
        # the loss window counts interval means: half an epoch, at least LOSS_WINDOW_MIN_STEPS steps
        loss_window = max(-(-LOSS_WINDOW_MIN_STEPS // self.interval), steps_per_epoch // 2 // self.interval)
        self.overrides = {"loss_not_decreasing": {"window": loss_window}}
        self.reduce_mean = reduce_mean or (lambda value: value)  # across ranks: every rank takes the same decision
        self.step = 0
        self.epoch = 0
        self.series: dict[str, list[float]] = {"step": [], "loss": [], "grad_min": [], "grad_max": []}
        self.epochs: dict[str, list[float]] = {"train_loss": [], "valid_loss": []}
        self.firings: list[dict] = []
        self.stopped_at: int | None = None
        self._losses: list[torch.Tensor] = []

    @property
    def should_stop(self) -> bool:
        return self.stopped_at is not None

    def after_step(self, loss: torch.Tensor, model: nn.Module) -> bool:
        """Record one optimizer step (after it: the gradients are unscaled); True when the job should stop now."""
        self.step += 1
        if not self.names:
            return False
        self._losses.append(loss.detach().float())
        if self.step % self.interval:
            return False
        loss_mean = self.reduce_mean(torch.stack(self._losses).mean()).view(1)
        self._losses = []
        grads = [p.grad.detach().abs().mean().float().view(1) for p in model.parameters() if p.grad is not None]
        values = torch.cat([loss_mean, *grads]).tolist()  # one device sync per interval
        grad_means = values[1:]
        self.series["step"].append(self.step)
        self.series["loss"].append(values[0])
        self.series["grad_min"].append(min(grad_means, default=0.0))
        self.series["grad_max"].append(max(grad_means, default=0.0))
        self._judge("step", rules.Seen(losses=self.series["loss"], steps_per_loss=self.interval,
                                       gradient_means=grad_means))
        return self.should_stop

    def after_epoch(self, train_loss: float, valid_loss: float | None) -> bool:
        """Record one epoch's losses; True when the job should stop now."""
        self.epochs["train_loss"].append(train_loss)
        if valid_loss is not None:
            self.epochs["valid_loss"].append(valid_loss)
            valid = self.epochs["valid_loss"]
            self._judge("epoch", rules.Seen(train_losses=self.epochs["train_loss"][-len(valid) :], valid_losses=valid))
        self.epoch += 1
        return self.should_stop

    def _judge(self, when: str, seen: rules.Seen) -> None:
        for rule in rules.RULES:
            if rule.when == when and rule.name in self.names:
                parameters = {**rule.parameters, **self.overrides.get(rule.name, {})}
                if rule.check(seen, parameters):
                    self._fire(rule.name, rule.message(seen, parameters))

    def _fire(self, rule: str, message: str) -> None:
        first = not any(f["rule"] == rule for f in self.firings)
        self.firings.append({"rule": rule, "step": self.step, "epoch": self.epoch + 1, "message": message})
        if first:
            log.warning("rule %s fired at step %d (epoch %d): %s", rule, self.step, self.epoch + 1, message)
        if self.stop and self.stopped_at is None:
            self.stopped_at = self.step
            log.warning("stopping training: rule %s fired and rules-action is stop", rule)

    def report(self) -> dict:
        outcomes = {}
        for name in self.names:
            fired = [f for f in self.firings if f["rule"] == name]
            outcomes[name] = {"fired": bool(fired), "times": len(fired), "first": fired[0] if fired else None}
        return {
            "rules": outcomes, "action": "stop" if self.stop else "log", "stopped_at_step": self.stopped_at,
            "interval_steps": self.interval, "series": self.series, "epochs": self.epochs, "firings": self.firings,
        }

    def state_dict(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "series": self.series, "epochs": self.epochs,
                "firings": self.firings, "stopped_at": self.stopped_at}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
