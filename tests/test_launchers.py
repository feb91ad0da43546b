"""The launchers' SageMaker API requests, captured before anything is sent (no AWS here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import train_debug
import tune
from conftest import FAST
from imgclf import metrics

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/imgclf:latest"
COMMON = ["--dry-run", "--image-uri", IMAGE, "--role", "arn:aws:iam::123456789012:role/sm", "--region", "us-east-1",
          "--data", "s3://bucket/dogs", "--output-path", "s3://bucket/out"]


def captured(capsys, main, argv) -> dict[str, dict]:
    assert main(argv) == 0
    out = capsys.readouterr().out
    parts = re.split(r"^--- (\w+) \(not sent\)$", out, flags=re.M)[1:]
    return {name: json.loads(body) for name, body in zip(parts[::2], parts[1::2])}


def test_debug_job_with_our_custom_rules(capsys):
    evaluator = "759209512951.dkr.ecr.us-west-2.amazonaws.com/sagemaker-debugger-rule-evaluator:latest"
    assert train_debug.main(COMMON + ["--custom-rule-image", evaluator]) == 0
    out = capsys.readouterr().out
    assert "--- would upload " + str(train_debug.RULES_SOURCE) + " to s3://bucket/out/debug-rules/rules.py" in out
    job = json.loads(re.split(r"^--- CreateTrainingJob \(not sent\)$", out, flags=re.M)[1])
    custom = {r["RuleConfigurationName"]: r for r in job["DebugRuleConfigurations"] if r["RuleEvaluatorImage"] == evaluator}
    assert set(custom) == {"ImgclfLossNotDecreasing", "ImgclfVanishingGradient"}
    loss = custom["ImgclfLossNotDecreasing"]
    assert loss["RuleParameters"] | {} == {"source_s3_uri": "s3://bucket/out/debug-rules/rules.py",
                                          "rule_to_invoke": "LossNotDecreasing", "window": "5"}
    assert loss["InstanceType"] == "ml.t3.medium"
    assert len(job["DebugHookConfig"]["CollectionConfigurations"]) == 4


def test_distributed_job_request(capsys):
    request = captured(capsys, train_debug.main, COMMON + ["--instance-count", "2", "--distributed"])
    job = request["CreateTrainingJob"]
    assert job["ResourceConfig"]["InstanceCount"] == 2
    assert job["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"


def test_tuner_request(capsys):
    request = captured(capsys, tune.main, COMMON + ["--max-jobs", "6", "--max-parallel-jobs", "3"])
    job = request["CreateHyperParameterTuningJob"]
    config, definition = job["HyperParameterTuningJobConfig"], job["TrainingJobDefinition"]
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "valid:accuracy"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 3}
    ranges = config["ParameterRanges"]
    assert ranges["ContinuousParameterRanges"] == [{"Name": "lr", "MinValue": "0.001", "MaxValue": "0.1", "ScalingType": "Logarithmic"}]
    assert ranges["CategoricalParameterRanges"] == [{"Name": "batch-size", "Values": ["32", "64", "128", "256"]}]
    assert ranges["IntegerParameterRanges"][0] | {"ScalingType": "Auto"} == {"Name": "epochs", "MinValue": "2", "MaxValue": "4", "ScalingType": "Auto"}
    algorithm = definition["AlgorithmSpecification"]
    assert algorithm["TrainingImage"] == IMAGE
    regex = {d["Name"]: d["Regex"] for d in algorithm["MetricDefinitions"]}["valid:accuracy"]
    line = metrics.metric_line("epoch=2/3", "valid", {"loss": 0.5, "accuracy": 0.8125, "seconds": 3.0, "images_per_sec": 9.0})
    assert float(re.search(regex, line).group(1)) == 0.8125
    assert definition["StaticHyperParameters"]["arch"] == "resnet50"
    assert [c["ChannelName"] for c in definition["InputDataConfig"]] == ["train", "valid", "test"]
    assert "DebugHookConfig" not in json.dumps(job)  # no default hook on tuning jobs


def test_debug_training_request(capsys):
    request = captured(capsys, train_debug.main, COMMON + ["--spot"])
    job = request["CreateTrainingJob"]
    collections = {c["CollectionName"]: c["CollectionParameters"] for c in job["DebugHookConfig"]["CollectionConfigurations"]}
    assert len(job["DebugHookConfig"]["CollectionConfigurations"]) == 4  # each once, with our save intervals
    assert collections["losses"]["save_interval"] == "10" and collections["relu_input"]["include_regex"] == ".*relu_input"
    assert [r["RuleConfigurationName"] for r in job["DebugRuleConfigurations"]] == [
        "LossNotDecreasing", "VanishingGradient", "Overfit", "Overtraining", "PoorWeightInitialization"]
    assert [r["RuleConfigurationName"] for r in job["ProfilerRuleConfigurations"]] == ["ProfilerReport", "LowGPUUtilization"]
    assert job["ProfilerConfig"]["ProfilingIntervalInMilliseconds"] == 500
    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert job["EnableManagedSpotTraining"] is True
    assert job["CheckpointConfig"]["S3Uri"] == "s3://bucket/out/checkpoints"
    assert job["HyperParameters"]["batch-size"] == "256"


def test_missing_settings_fail_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        tune.main(["--dry-run", "--image-uri", IMAGE, "--data", "s3://bucket/dogs"])
    assert "missing --role (flags, or env" in str(exit_info.value)  # the region comes from AWS_DEFAULT_REGION
    with pytest.raises(SystemExit) as exit_info:
        tune.main(COMMON + ["--local"])
    assert "local mode has no tuner" in str(exit_info.value)


def test_deploy_request(capsys):
    import deploy

    argv = [a for a in COMMON if a not in ("--data", "s3://bucket/dogs")]
    request = captured(capsys, deploy.main, argv + ["--model-data", "s3://bucket/out/job/output/model.tar.gz",
                                                    "--endpoint", "dogs", "--instance-type", "ml.c5.xlarge"])
    assert list(request) == ["CreateModel", "CreateEndpointConfig", "CreateEndpoint"]
    container = request["CreateModel"]["PrimaryContainer"]
    assert (container["Image"], container["ModelDataUrl"]) == (IMAGE, "s3://bucket/out/job/output/model.tar.gz")
    variant = request["CreateEndpointConfig"]["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.c5.xlarge", 1)
    assert request["CreateEndpoint"]["EndpointName"] == "dogs"


def local_target(image: str, output: Path, data: Path, instance_count: int = 1, distributed: bool = False):
    from argparse import Namespace

    import launch

    return launch.target_from(Namespace(
        image_uri=image, role=None, region=None, data=str(data), output_path=f"file://{output}", instance_type="local",
        instance_count=instance_count, distributed=distributed, spot=False, max_run=3600, local=True, dry_run=False))


@pytest.mark.docker
def test_local_mode_round_trip(image, tmp_path, sample_data):
    """Estimator.fit and Model.deploy in the SDK's local mode run the real image via docker compose."""
    import launch

    target = local_target(image, tmp_path, sample_data)
    session = launch.session(target)
    estimator = launch.estimator(target, session, {**FAST, "epochs": "5"})
    estimator.fit(launch.channels(target), wait=True)
    model_data = estimator.model_data
    assert model_data.startswith("file://") and model_data.endswith("model.tar.gz")

    launch.deploy(target, session, model_data, "imgclf-local-test", "local", wait=True)
    try:
        png = sorted((sample_data / "test" / "004.three").iterdir())[0].read_bytes()
        answer = launch.predict(session, "imgclf-local-test", png, "image/png", 3)
        assert answer["predictions"][0][0]["label"] == "three" and len(answer["predictions"][0]) == 3
    finally:
        launch.delete_endpoint(session, "imgclf-local-test")


@pytest.mark.docker
def test_local_mode_two_instances_train_one_model(image, tmp_path, sample_data, capfd):
    """instance_count=2 with --distributed: two containers, torchrun on each, gloo between them."""
    import tarfile

    import launch

    target = local_target(image, tmp_path, sample_data, instance_count=2, distributed=True)
    estimator = launch.estimator(target, launch.session(target), {**FAST, "epochs": "3"})
    estimator.fit(launch.channels(target), wait=True)
    logs = capfd.readouterr().out
    with capfd.disabled():
        print("\n".join(line for line in logs.splitlines() if "torchrun" in line or "gloo" in line or "test_accuracy" in line))
    assert "--nnodes 2 --nproc_per_node 1" in logs and "--node_rank 1" in logs
    assert "process 0 of 2 (local 0 of 1), gloo backend" in logs
    job_dir = Path(estimator.model_data.removeprefix("file://")).parent
    with tarfile.open(job_dir / "output.tar.gz") as tar:  # local mode packs /opt/ml/output, SageMaker output/data
        metrics = json.load(tar.extractfile("data/metrics.json"))
    assert metrics["test"]["accuracy"] > 0.8
    with tarfile.open(job_dir / "model.tar.gz") as tar:
        assert {"model.pt", "classes.json", "model.json"} <= set(tar.getnames())


def test_prepare_data_unzips_verifies_and_uploads_once(tmp_path, sample_data, capsys):
    import zipfile

    import boto3
    from moto import mock_aws

    import prepare_data

    archive = tmp_path / "dogImages.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(sample_data.rglob("*.png")):
            zf.write(path, f"dogImages/{path.relative_to(sample_data)}")
    files = len(list(sample_data.rglob("*.png")))
    argv = ["--bucket", "data", "--prefix", "digits", "--source", str(archive), "--work", str(tmp_path / "work"),
            "--region", "us-east-1"]
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="data")
        assert prepare_data.main(argv) == 0
        assert f"uploaded {files} files, skipped 0" in capsys.readouterr().out
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="data") for o in page["Contents"]]
        assert len(keys) == files
        assert {k.split("/")[1] for k in keys} == {"train", "valid", "test"}
        assert any(k.startswith("digits/train/001.zero/") for k in keys)
        assert prepare_data.main(argv) == 0  # a rerun uploads nothing
        assert f"uploaded 0 files, skipped {files}" in capsys.readouterr().out
    assert prepare_data.main(argv + ["--dry-run"]) == 0  # outside the mock: no S3 call may happen
    assert f"would upload {files} files to s3://data/digits/" in capsys.readouterr().out


def test_invoke_dry_run(capsys, sample_data):
    import invoke

    image = sorted((sample_data / "test" / "004.three").iterdir())[0]
    assert invoke.main([str(image), "--endpoint", "dogs", "--top-k", "2", "--dry-run"]) == 0
    request = json.loads(capsys.readouterr().out)
    assert request["EndpointName"] == "dogs" and request["ContentType"] == "image/png"
    assert request["CustomAttributes"] == "top_k=2"
