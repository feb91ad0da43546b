"""What a checkpoint carries, with ``state_dict()`` / ``load_state_dict()`` like the torch objects inside it."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from .monitor import RuleMonitor


@dataclass
class Best:
    """The kept model: the best epoch by valid accuracy (the latest without a valid channel)."""

    epoch: int = 0
    score: float = -1.0
    state: dict[str, torch.Tensor] | None = None
    valid: dict[str, float] | None = None

    def offer(self, epoch: int, score: float, model: nn.Module, valid: dict[str, float] | None) -> bool:
        """Keep ``model`` if ``score`` beats the best so far; True when it did."""
        if score <= self.score:
            return False
        self.epoch, self.score, self.valid = epoch, score, valid
        self.state = copy.deepcopy(model.state_dict())
        return True


@dataclass
class TrainingState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    monitor: RuleMonitor
    epoch: int = 0  # the last completed epoch
    stopped_early: bool = False  # early stopping or a rule ended training: the run is final
    history: list[dict] = field(default_factory=list)
    best: Best = field(default_factory=Best)

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch, "stopped_early": self.stopped_early, "history": self.history,
            "best": vars(self.best), "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "monitor": self.monitor.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.monitor.load_state_dict(state["monitor"])
        self.epoch, self.stopped_early, self.history = state["epoch"], state["stopped_early"], state["history"]
        self.best = Best(**state["best"])
