"""Round trips, in process: the model artifacts serve reads (model.json's preprocessing included)
and the checkpoint a resumed job reads (TrainingState through Checkpoints' file)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from imgclf.checkpoint import Checkpoints
from imgclf.data import ClassInfo
from imgclf.model import SPEC_FILE, ModelSpec, build_model, load_artifacts, save_artifacts
from imgclf.monitor import RuleMonitor
from imgclf.preprocess import ImageSpec, decode_for_eval
from imgclf.state import TrainingState

CLASSES = [ClassInfo(0, "001.a", "a"), ClassInfo(1, "002.b", "b"), ClassInfo(2, "003.c", "c")]


def saved_model(tmp_path, image: ImageSpec) -> tuple[torch.nn.Module, ModelSpec]:
    torch.manual_seed(0)
    model, model_spec = build_model("resnet18", 3), ModelSpec("resnet18", 3, image)
    save_artifacts(tmp_path, model.state_dict(), model_spec, CLASSES, {"best_epoch": 2})
    return model, model_spec


def test_model_artifacts_round_trip(tmp_path):
    model, model_spec = saved_model(tmp_path, ImageSpec(32, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)))
    loaded, loaded_spec, classes = load_artifacts(tmp_path)
    assert loaded_spec == model_spec and classes == CLASSES
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert json.loads((tmp_path / SPEC_FILE).read_text()) == {
        "arch": "resnet18", "num_classes": 3, "image_size": 32, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3],
        "format_version": 1, "resize_size": 37, "interpolation": "bilinear", "best_epoch": 2,
    }


def test_model_json_resize_size_is_what_serving_uses(tmp_path):
    """A model trained with another crop ratio must be served with its own, not today's default."""
    saved_model(tmp_path, ImageSpec(32))
    raw = json.loads((tmp_path / SPEC_FILE).read_text())
    (tmp_path / SPEC_FILE).write_text(json.dumps({**raw, "resize_size": 64}))
    _, model_spec, _ = load_artifacts(tmp_path)
    assert model_spec.image.resize_size == 64

    rng = np.random.default_rng(0)
    body = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(body, "PNG")
    served = decode_for_eval(body.getvalue(), model_spec.image, 64_000_000)
    assert torch.equal(served, decode_for_eval(body.getvalue(), ImageSpec(32, resize_size=64), 64_000_000))
    assert not torch.equal(served, decode_for_eval(body.getvalue(), ImageSpec(32), 64_000_000))


def test_a_resize_smaller_than_the_crop_is_refused(tmp_path):
    saved_model(tmp_path, ImageSpec(32))
    raw = json.loads((tmp_path / SPEC_FILE).read_text())
    (tmp_path / SPEC_FILE).write_text(json.dumps({**raw, "resize_size": 16}))
    with pytest.raises(ValueError, match="resize_size 16 is below image_size 32"):
        load_artifacts(tmp_path)


def training_state(seed: int) -> TrainingState:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    return TrainingState(model, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False),
                         torch.Generator().manual_seed(seed), RuleMonitor(["overfit"], False, steps_per_epoch=4))


def train_steps(state: TrainingState, steps: int) -> None:
    for _ in range(steps):
        inputs = torch.randn(8, 4, generator=state.generator)
        loss = state.model(inputs).square().mean()
        state.optimizer.zero_grad()
        loss.backward()
        state.optimizer.step()
        state.scheduler.step()
        state.monitor.after_step(loss, state.model)
    state.monitor.after_epoch(1.0, 0.9)
    state.epoch += 1
    state.history.append({"epoch": state.epoch, "train": {"loss": 1.0}})
    state.best.offer(state.epoch, 0.5, state.model, {"loss": 0.9, "accuracy": 0.5})


def test_training_state_round_trips_through_a_checkpoint_file(tmp_path):
    """What resume reads back (weights_only=True) continues exactly where the saved run stood."""
    original = training_state(seed=1)
    train_steps(original, 4)
    checkpoints = Checkpoints(tmp_path / "run", {"lr": 0.01})
    checkpoints.save(original.state_dict())

    resumed = training_state(seed=2)
    resumed.load_state_dict(Checkpoints(tmp_path / "run", {"lr": 0.01}).load())
    assert (resumed.epoch, resumed.history, resumed.stopped_early) == (original.epoch, original.history, False)
    assert resumed.best.epoch == 1 and resumed.best.valid == {"loss": 0.9, "accuracy": 0.5}
    assert resumed.scheduler.last_epoch == original.scheduler.last_epoch == 4
    assert resumed.monitor.state_dict() == original.monitor.state_dict()
    for a, b in zip(original.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)

    # the same next step on both: optimizer moments, learning rate, generator and torch RNG all restored
    train_steps(original, 1)
    train_steps(resumed, 1)
    for a, b in zip(original.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
