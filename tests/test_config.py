"""Hyperparameter parsing as SageMaker's toolkit passes them (strings, kebab-case)."""

import pytest

from imgclf.config import ConfigError, Hyperparameters, TrainingEnv, parse_hyperparameters
from imgclf.data import display_label


def test_defaults_match_the_reference_workload():
    hp = parse_hyperparameters([])
    assert (hp.arch, hp.image_size, hp.pretrained) == ("resnet50", 224, True)


def test_toolkit_style_values_parse():
    hp = parse_hyperparameters(
        ["--batch-size", "256", "--epochs", "3.0", "--lr", "0.00105", "--pretrained", "False",
         "--freeze_backbone=True", "--num-workers", "auto", "--_tuning_objective_metric", "valid:accuracy"]
    )
    assert hp == Hyperparameters(batch_size=256, epochs=3, lr=0.00105, pretrained=False, freeze_backbone=True)


@pytest.mark.parametrize("argv", [["--epochs", "2.5"], ["--momentum", "1"], ["--lr", "nan"], ["--pretrained", "maybe"], ["--epochs"]])
def test_invalid_values_raise(argv):
    with pytest.raises(ConfigError):
        parse_hyperparameters(argv)


@pytest.mark.parametrize(("text", "rules"), [
    ("none", ()), ("", ()), ("all", ("loss_not_decreasing", "vanishing_gradient", "overfit")),
    ("Overfit, loss-not-decreasing,overfit", ("overfit", "loss_not_decreasing")),
])
def test_rules_parse(text, rules):
    assert parse_hyperparameters(["--rules", text]).rules == rules


def test_unknown_rule_is_named():
    with pytest.raises(ConfigError, match="'rules' = 'overfit,dead_relu' is invalid: expected none, all, or a comma"):
        parse_hyperparameters(["--rules", "overfit,dead_relu"])


def test_channel_aliases(tmp_path):
    env = TrainingEnv.from_environ({
        "SM_CHANNELS": '["training", "validation"]',
        "SM_CHANNEL_TRAINING": str(tmp_path / "a"), "SM_CHANNEL_VALIDATION": str(tmp_path / "b"),
        "SM_MODEL_DIR": str(tmp_path / "model"),
    })
    assert env.channel("train") == tmp_path / "a" and env.channel("valid") == tmp_path / "b"
    assert env.channel("test") is None


@pytest.mark.parametrize(("folder", "label"), [("001.Affenpinscher", "Affenpinscher"),
                                               ("042.American_water_spaniel", "American water spaniel"),
                                               ("cats", "cats"), ("007", "007")])
def test_display_label(folder, label):
    assert display_label(folder) == label
