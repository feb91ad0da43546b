"""The real `train` (sagemaker-training's console script) on the sample data."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from torchvision import models

from conftest import FAST, channels_of, run_job
from imgclf import metrics
from imgclf.model import imagenet_weights_filename, load_artifacts


def parse_metrics(output: str) -> dict[str, list[float]]:
    """What SageMaker would chart from the log, using the package's own definitions."""
    return {d["Name"]: [float(v) for v in re.findall(d["Regex"], output)] for d in metrics.METRIC_DEFINITIONS}


def test_trains_to_well_above_chance(trained):
    base, output = trained
    summary = json.loads((base / "output" / "data" / "metrics.json").read_text())
    assert summary["test"]["accuracy"] > 0.8, summary["test"]  # chance is 0.1
    assert (base / "output" / "success").exists()
    assert not (base / "output" / "failure").exists()


def test_metric_lines_match_exported_regexes(trained):
    base, output = trained
    summary = json.loads((base / "output" / "data" / "metrics.json").read_text())
    found = parse_metrics(output)
    assert found["train:loss"] == pytest.approx([e["train"]["loss"] for e in summary["history"]], rel=1e-4)
    kept = next(e for e in summary["history"] if e["epoch"] == summary["best_epoch"])
    # every epoch's, then the kept model's again: the tuner's objective is the last value emitted
    assert found["valid:accuracy"] == pytest.approx(
        [e["valid"]["accuracy"] for e in summary["history"]] + [kept["valid"]["accuracy"]], rel=1e-4)
    assert found["test:accuracy"] == pytest.approx([summary["test"]["accuracy"]], rel=1e-4)
    assert len(found["train:images_per_sec"]) == 5 and all(v > 0 for v in found["train:images_per_sec"])
    assert metrics.OBJECTIVE_METRIC in found


def test_artifacts_load_without_pickle_and_keep_best_epoch(trained):
    base, _ = trained
    model_dir = base / "model"
    state = torch.load(model_dir / "model.pt", weights_only=True)
    assert state["fc.weight"].shape == (10, 512)
    model, model_spec, classes = load_artifacts(model_dir)
    assert (model_spec.arch, model_spec.num_classes, model_spec.image.image_size) == ("resnet18", 10, 32)
    assert [c.label for c in classes][:3] == ["zero", "one", "two"]
    assert classes[0].folder == "001.zero"
    saved = json.loads((model_dir / "model.json").read_text())
    history = json.loads((base / "output" / "data" / "metrics.json").read_text())["history"]
    best = max(history, key=lambda e: e["valid"]["accuracy"])
    assert saved["best_epoch"] == best["epoch"]
    assert saved["resize_size"] == 37 and saved["mean"] == [0.485, 0.456, 0.406]


def failure_of(base: Path) -> str:
    return (base / "output" / "failure").read_text()


def test_missing_train_channel_fails_clearly(tmp_path, sample_data):
    code, output = run_job(tmp_path / "ml", {"valid": sample_data / "valid"}, FAST)
    assert code != 0
    assert "missing required channel 'train'" in failure_of(tmp_path / "ml")
    assert "['valid']" in failure_of(tmp_path / "ml")


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [("batch-size", "0", "'batch-size' = '0' is invalid: expected an integer >= 1"),
     ("arch", "vgg16", "expected one of resnet18, resnet34, resnet50, resnet101, resnet152"),
     ("lr", "fast", "'lr' = 'fast' is invalid"),
     ("learning-rate", "0.1", "unknown hyperparameter 'learning-rate'")],
)
def test_bad_hyperparameter_fails_naming_it(tmp_path, sample_data, name, value, expected):
    code, _ = run_job(tmp_path / "ml", channels_of(sample_data), {**FAST, name: value})
    assert code != 0
    assert expected in failure_of(tmp_path / "ml")


def test_mismatched_classes_fail_naming_the_difference(tmp_path, sample_data):
    valid = tmp_path / "valid"
    shutil.copytree(sample_data / "valid", valid)
    shutil.rmtree(valid / "004.three")
    (valid / "011.eleven").mkdir()
    code, _ = run_job(tmp_path / "ml", {"train": sample_data / "train", "valid": valid}, FAST)
    assert code != 0
    failure = failure_of(tmp_path / "ml")
    assert "channel 'valid'" in failure and "missing ['004.three']" in failure and "'011.eleven'" in failure


def test_corrupt_images_are_skipped_and_an_all_corrupt_class_fails(tmp_path, sample_data):
    train = tmp_path / "train"
    shutil.copytree(sample_data / "train", train)
    (train / "002.one" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    code, output = run_job(tmp_path / "ok", {"train": train}, FAST)
    assert code == 0, output[-2000:]
    assert re.search(r"channel 'train': 1258 images in 10 classes, 1 unreadable skipped", output)

    for image in (train / "003.two").iterdir():  # truncate every image of one class
        image.write_bytes(image.read_bytes()[:60])
    code, output = run_job(tmp_path / "bad", {"train": train}, FAST)
    assert code != 0
    assert "class folder(s) with no readable images: 003.two" in failure_of(tmp_path / "bad")


def test_pretrained_channel_is_loaded_and_backbone_frozen(tmp_path, sample_data):
    weights = tmp_path / "pretrained" / imagenet_weights_filename("resnet18")
    weights.parent.mkdir()
    imagenet_like = models.resnet18(weights=None).state_dict()
    torch.save(imagenet_like, weights)
    channels = {"train": sample_data / "train", "pretrained": weights.parent}
    code, output = run_job(tmp_path / "ml", channels, {**FAST, "pretrained": "true", "freeze-backbone": "true"})
    assert code == 0, output[-2000:]
    trained = torch.load(tmp_path / "ml" / "model" / "model.pt", weights_only=True)
    assert torch.equal(trained["layer3.0.conv1.weight"], imagenet_like["layer3.0.conv1.weight"])
    assert trained["fc.weight"].shape == (10, 512)


def test_pretrained_without_weights_or_network_fails_clearly(tmp_path, sample_data):
    code, output = run_job(
        tmp_path / "ml", {"train": sample_data / "train"}, {**FAST, "pretrained": "true"},
        env={"TORCH_HOME": str(tmp_path / "empty_torch_home")},
    )
    assert code != 0
    failure = failure_of(tmp_path / "ml")
    assert failure.startswith("pretrained=true needs ImageNet weights (resnet18-f37072fd.pth) and this job cannot "
                              "download them (https://download.pytorch.org/models/resnet18-f37072fd.pth: "), failure
    assert "Pass a 'pretrained' channel: upload resnet18-f37072fd.pth" in failure and "or set pretrained=false" in failure
    assert "images in" not in output  # refused before the data is read


def test_nan_loss_stops_training_with_advice(tmp_path, sample_data):
    weights = tmp_path / "pretrained" / imagenet_weights_filename("resnet18")
    weights.parent.mkdir()
    state = models.resnet18(weights=None).state_dict()
    state["conv1.weight"].fill_(float("nan"))  # corrupt starting weights: every loss is NaN
    torch.save(state, weights)
    channels = {"train": sample_data / "train", "pretrained": weights.parent}
    code, _ = run_job(tmp_path / "ml", channels, {**FAST, "pretrained": "true"})
    assert code != 0
    assert "training diverged in epoch 1: the loss is nan; try a lower lr (now 0.002)" in failure_of(tmp_path / "ml")
