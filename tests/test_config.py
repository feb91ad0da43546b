"""Hyperparameter parsing as SageMaker's toolkit passes them (strings, kebab-case)."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imgclf.config import ConfigError, ServingConfig, TrainingEnv
from imgclf.data import display_label
from imgclf.hyperparameters import HYPERPARAMETERS, Hyperparameters, markdown_table, parse_hyperparameters


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


@pytest.mark.parametrize(("gpus", "cpus", "expected"), [
    # one worker per GPU, else one per 4 cores; torch threads and decode slots share the cores out
    (0, 2, {"workers": 1, "torch_threads": 2, "decode_slots": 2, "max_batch_size": 8, "max_concurrent_transforms": 4}),
    (0, 16, {"workers": 4, "torch_threads": 4, "decode_slots": 4, "max_batch_size": 8, "max_concurrent_transforms": 16}),
    (4, 48, {"workers": 4, "torch_threads": 12, "decode_slots": 12, "max_batch_size": 32, "max_concurrent_transforms": 16}),
])
def test_serving_defaults_follow_the_machine(gpus, cpus, expected):
    config = ServingConfig.from_environ(gpus, cpus, {})
    assert {k: getattr(config, k) for k in expected} == expected
    assert (config.port, config.max_payload_bytes, config.timeout, config.batch_strategy, config.serve_user) == (
        8080, 6 * 1024 * 1024, 60, "SINGLE_RECORD", None)
    assert config.model_dir == Path("/opt/ml/model")


def test_serving_reads_sagemakers_variables():
    config = ServingConfig.from_environ(0, 8, {
        "SAGEMAKER_BIND_TO_PORT": "9090", "SAGEMAKER_MODEL_SERVER_WORKERS": "3", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "20",
        "SAGEMAKER_BATCH_STRATEGY": "multi_record", "SAGEMAKER_BASE_DIR": "/tmp/ml", "IMGCLF_MAX_BATCH_WAIT_MS": "0",
        "IMGCLF_SERVE_USER": " nobody ",
    })
    assert (config.port, config.workers, config.max_concurrent_transforms, config.max_payload_bytes) == (
        9090, 3, 12, 20 * 1024 * 1024)
    assert (config.batch_strategy, config.model_dir, config.max_batch_wait_ms, config.serve_user) == (
        "MULTI_RECORD", Path("/tmp/ml/model"), 0, "nobody")


@pytest.mark.parametrize(("environ", "message"), [
    ({"SAGEMAKER_MODEL_SERVER_WORKERS": "two"}, "SAGEMAKER_MODEL_SERVER_WORKERS='two' is not an integer"),
    ({"SAGEMAKER_BIND_TO_PORT": "0"}, "SAGEMAKER_BIND_TO_PORT=0 must be >= 1"),
    ({"IMGCLF_MAX_CONNECTIONS": "8"}, "IMGCLF_MAX_CONNECTIONS=8 must be >= 16"),
    ({"IMGCLF_PRECISION": "fp8"}, "IMGCLF_PRECISION='fp8' must be one of auto, fp32, bf16, fp16"),
])
def test_bad_serving_variables_are_named(environ, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        ServingConfig.from_environ(0, 4, environ)
