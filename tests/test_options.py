"""Each optimizer, learning-rate schedule and precision the hyperparameter table allows, in process."""

from __future__ import annotations

import math

import pytest
import torch

from imgclf import precision
from imgclf.hyperparameters import field_of, parse_hyperparameters
from imgclf.model import build_model
from imgclf.train import build_optimizer, build_scheduler

STEPS_PER_EPOCH = 3


def reference_factor(scheduler: str, warmup_epochs: int, epochs: int, step: int) -> float:
    """The schedule in closed form: torchvision's classification reference (warm-up, then the schedule
    counted from its end), with lr-step-size 1 and lr-gamma 0.5."""
    warmup, total = warmup_epochs * STEPS_PER_EPOCH, epochs * STEPS_PER_EPOCH
    if step < warmup:
        return (step + 1) / warmup
    if scheduler == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    if scheduler == "step":
        return 0.5 ** ((step - warmup) // STEPS_PER_EPOCH)
    return 1.0


@pytest.mark.parametrize("warmup", [0, 1, 2])
@pytest.mark.parametrize("scheduler", field_of("lr-scheduler").parser.values)
def test_each_schedule_gives_its_closed_form_per_step(scheduler, warmup):
    hp = parse_hyperparameters(["--lr-scheduler", scheduler, "--lr-warmup-epochs", str(warmup), "--epochs", "4",
                                "--lr-step-size", "1", "--lr-gamma", "0.5", "--lr", "0.1"])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=hp.lr)
    schedule = build_scheduler(hp, optimizer, STEPS_PER_EPOCH)
    rates = []
    for _ in range(4 * STEPS_PER_EPOCH):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    expected = [0.1 * reference_factor(scheduler, warmup, 4, step) for step in range(4 * STEPS_PER_EPOCH)]
    assert rates == pytest.approx(expected, rel=1e-9, abs=1e-15)


def one_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, dtype: torch.dtype | None) -> torch.Tensor:
    """One training step as imgclf.train takes it (autocast, loss scale for fp16); returns the loss."""
    scaler = torch.amp.GradScaler("cpu", enabled=dtype == torch.float16)
    inputs, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        outputs = model(inputs)
        assert outputs.dtype == (dtype or torch.float32)
        loss = torch.nn.functional.cross_entropy(outputs, targets)
    optimizer.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss


@pytest.mark.parametrize("name", field_of("optimizer").parser.values)
def test_each_optimizer_takes_a_step(name):
    torch.manual_seed(0)
    model = build_model("resnet18", 2)
    optimizer = build_optimizer(parse_hyperparameters(["--optimizer", name, "--lr", "0.01"]), model)
    assert type(optimizer).__name__.lower() == name
    before = model.fc.weight.detach().clone()
    assert torch.isfinite(one_step(model, optimizer, None))
    assert not torch.equal(before, model.fc.weight)


@pytest.mark.parametrize("setting", field_of("precision").parser.values)
def test_each_precision_trains_a_step_where_it_is_allowed(setting):
    """On the CPU fp16 is refused with the reason; every other value, and what auto picks on an
    Ampere and a Turing GPU, trains a real step (autocast runs each dtype on the CPU too)."""
    if setting == "fp16":
        with pytest.raises(ValueError, match="precision=fp16 needs a GPU"):
            precision.choose(setting, "train", None, cpu_bf16=True)
    chosen = {precision.choose(setting, "train", capability, cpu_bf16=True) for capability in ((8, 0), (7, 5))}
    if setting != "fp16":
        chosen.add(precision.choose(setting, "train", None, cpu_bf16=False))
    for dtype in chosen:
        torch.manual_seed(0)
        model = build_model("resnet18", 2)
        loss = one_step(model, build_optimizer(parse_hyperparameters([]), model), None if dtype == torch.float32 else dtype)
        assert torch.isfinite(loss), dtype
