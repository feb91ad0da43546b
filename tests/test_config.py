"""Hyperparameter parsing as SageMaker's toolkit passes them (strings, kebab-case)."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imgclf.config import ConfigError, Hyperparameters, TrainingEnv, parse_hyperparameters
from imgclf.hyperparameters import HYPERPARAMETERS, markdown_table
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


def test_readme_holds_the_generated_hyperparameter_table():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert markdown_table() in readme, "README's table is stale: paste `python -m imgclf.hyperparameters` into it"
    assert readme.count("| name | default | allowed |") == 1


def test_each_shown_default_parses_to_the_default():
    for declared in HYPERPARAMETERS:
        if declared.default != "":  # resume-from: no job to resume is shown as (none)
            assert declared.parser.convert(declared.default_text) == declared.default, declared.name
    assert [f.name for f in dataclasses.fields(Hyperparameters)] == [h.field for h in HYPERPARAMETERS]


@pytest.mark.parametrize("name", [h.name for h in HYPERPARAMETERS])
def test_every_error_names_what_is_allowed(name):
    declared = next(h for h in HYPERPARAMETERS if h.name == name)
    with pytest.raises(ConfigError, match=f"^hyperparameter '{name}' = 'bo/gus' is invalid: expected "
                                          f"{re.escape(declared.parser.allowed)}$"):
        parse_hyperparameters([f"--{name}", "bo/gus"])


def test_the_laptop_modules_import_no_torch():
    """The launchers import imgclf.config and imgclf.metrics on laptops without torch."""
    code = "import sys, imgclf.config, imgclf.metrics; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
