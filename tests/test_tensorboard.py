"""TensorBoard event files from the real `train`, read back with TensorBoard's own reader."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from torchvision import models

from conftest import FAST, channels_of, run_job
from imgclf.config import ConfigError
from imgclf.model import imagenet_weights_filename
from imgclf.tensorboard import CONFIG_FILE, log_dir

STEPS_PER_EPOCH = 1258 // 64  # the sample data's train split, batch 64, last partial batch dropped


def sagemaker_config(local_path: Path) -> dict[str, str]:
    """The file SageMaker writes for a job with a TensorBoardOutputConfig."""
    return {CONFIG_FILE: json.dumps({"LocalPath": str(local_path), "S3OutputPath": "s3://bucket/tb/job-1"})}


def load(directory: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    return accumulator.Reload()


def values(accumulator: EventAccumulator, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in accumulator.Scalars(tag)}


def hparams_plugin(accumulator: EventAccumulator) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(content)
            for tag, content in accumulator.PluginTagToContent("hparams").items()}


@pytest.fixture(scope="module")
def board_job(tmp_path_factory, sample_data) -> tuple[Path, Path, str]:
    """A real 2-epoch `train` with SageMaker's TensorBoard config and a profiler window."""
    base = tmp_path_factory.mktemp("tensorboard") / "opt_ml"
    local_path = base.parent / "tensorboard"
    code, output = run_job(base, channels_of(sample_data), {**FAST, "epochs": "2", "profile-steps": "2"},
                           config_files=sagemaker_config(local_path))
    assert code == 0, output[-3000:]
    return base, local_path, output


def test_every_step_loss_and_lr_match_the_log(board_job):
    base, local_path, output = board_job
    board = load(local_path)
    losses, lrs = values(board, "step/loss"), values(board, "step/lr")
    assert sorted(losses) == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    logged = re.findall(r"epoch=(\d)/2 step (\d+)/\d+ loss ([\d.]+) lr ([\d.e-]+)", output)
    assert len(logged) >= 10
    for epoch, step, loss, lr in logged:
        global_step = (int(epoch) - 1) * STEPS_PER_EPOCH + int(step)
        assert losses[global_step] == pytest.approx(float(loss), abs=6e-5)
        assert lrs[global_step] == pytest.approx(float(lr), rel=5e-3)
    throughput = values(board, "step/images_per_sec")
    assert len(throughput) >= 4 and all(v > 0 for v in throughput.values())


def test_epoch_metrics_match_metrics_json(board_job):
    base, local_path, _ = board_job
    board = load(local_path)
    summary = json.loads((base / "output" / "data" / "metrics.json").read_text())
    for split in ("train", "valid"):
        for name in ("loss", "accuracy"):
            expected = {r["epoch"]: r[split][name] for r in summary["history"]}
            assert values(board, f"epoch/{split}_{name}") == pytest.approx(expected, rel=1e-5)
    assert values(board, "final/test_accuracy") == pytest.approx({2 * STEPS_PER_EPOCH: summary["test"]["accuracy"]})


def test_gradient_values_are_the_rules_own(board_job):
    base, local_path, _ = board_job
    board = load(local_path)
    series = json.loads((base / "output" / "data" / "rules_report.json").read_text())["series"]
    assert values(board, "gradients/mean_abs_max") == pytest.approx(dict(zip(series["step"], series["grad_max"])), rel=1e-5)
    assert values(board, "gradients/mean_abs_min") == pytest.approx(dict(zip(series["step"], series["grad_min"])), rel=1e-5)
    assert len(values(board, "norms/weights")) == 2 and len(values(board, "norms/gradients")) == 2


def test_histograms_images_hparams_and_profile(board_job):
    base, local_path, _ = board_job
    board = load(local_path)
    fc = board.Histograms("weights/fc.weight")
    assert [h.step for h in fc] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert fc[0].histogram_value.num == 10 * 512 and sum(fc[0].histogram_value.bucket) == 10 * 512
    assert len(board.Histograms("gradients/layer4.1.conv2.weight")) == 2
    grid = board.Images("train/augmented_batch")
    assert len(grid) == 1 and Image.open(io.BytesIO(grid[0].encoded_image_string)).size == (8 * 34 + 2, 4 * 34 + 2)
    confusion = board.Images("confusion_matrix/test")
    assert len(confusion) == 1 and Image.open(io.BytesIO(confusion[0].encoded_image_string)).size[0] > 300

    plugin = hparams_plugin(board)
    start = plugin["_hparams_/session_start_info"].session_start_info
    assert start.hparams["lr"].number_value == 0.002 and start.hparams["arch"].string_value == "resnet18"
    assert start.hparams["rules"].string_value == "loss_not_decreasing,vanishing_gradient,overfit"
    metrics = {m.name.tag for m in plugin["_hparams_/experiment"].experiment.metric_infos}
    assert {"epoch/valid_accuracy", "final/test_accuracy"} <= metrics
    assert plugin["_hparams_/session_end_info"].session_end_info.status == api_pb2.STATUS_SUCCESS

    traces = list((local_path / "profiler").glob("*.pt.trace.json"))
    assert len(traces) == 1 and "ProfilerStep#4" in traces[0].read_text()
    assert (base / "output" / "data" / "profiler" / traces[0].name).is_file()  # output.tar.gz still has it


def test_where_the_event_files_go(tmp_path):
    config_dir, output, data = tmp_path / "config", tmp_path / "output", tmp_path / "output" / "data"
    config_dir.mkdir()
    assert log_dir("auto", config_dir, output, data) is None
    assert log_dir("true", config_dir, output, data) == data / "tensorboard"  # in output.tar.gz: one per tuning trial
    (config_dir / CONFIG_FILE).write_text(json.dumps({"S3OutputPath": "s3://b/p"}))  # LocalPath is optional
    assert log_dir("auto", config_dir, output, data) == output / "tensorboard"
    assert log_dir("true", config_dir, output, data) == output / "tensorboard"
    (config_dir / CONFIG_FILE).write_text(json.dumps({"LocalPath": "/somewhere/tb", "S3OutputPath": "s3://b/p"}))
    assert log_dir("auto", config_dir, output, data) == Path("/somewhere/tb")
    assert log_dir("false", config_dir, output, data) is None
    (config_dir / CONFIG_FILE).write_text("[1, 2")
    with pytest.raises(ConfigError, match="tensorboardoutputconfig.json is not a JSON object with a LocalPath"):
        log_dir("auto", config_dir, output, data)


def test_no_config_means_no_event_files(trained):
    base, output = trained
    assert not (base / "output" / "tensorboard").exists() and not (base / "output" / "data" / "tensorboard").exists()
    assert "TensorBoard" not in output


def test_unwritable_local_path_fails_the_job_at_once(tmp_path, sample_data):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, output = run_job(tmp_path / "ml", channels_of(sample_data), FAST, config_files=sagemaker_config(blocker / "tb"))
    assert code != 0
    assert f"cannot write TensorBoard event files to {blocker / 'tb'}" in (tmp_path / "ml" / "output" / "failure").read_text()
    assert "epoch=1/1 step" not in output  # it failed before training


def test_a_failed_job_keeps_the_steps_it_logged(tmp_path, sample_data):
    weights = tmp_path / "pretrained" / imagenet_weights_filename("resnet18")
    weights.parent.mkdir()
    state = models.resnet18(weights=None).state_dict()
    state["conv1.weight"].fill_(float("nan"))  # every loss is NaN: the job fails after epoch 1
    torch.save(state, weights)
    channels = {"train": sample_data / "train", "pretrained": weights.parent}
    code, _ = run_job(tmp_path / "ml", channels, {**FAST, "pretrained": "true"}, config_files=sagemaker_config(tmp_path / "tb"))
    assert code != 0
    board = load(tmp_path / "tb")
    losses = values(board, "step/loss")
    assert sorted(losses) == list(range(1, STEPS_PER_EPOCH + 1)) and all(math.isnan(v) for v in losses.values())
    assert "_hparams_/session_end_info" not in hparams_plugin(board)  # never reported as a success


FULL_DISK = """
import resource, signal, sys, torch
from imgclf.monitor import RuleMonitor
from imgclf.preprocess import ImageSpec
from imgclf.tensorboard import Board
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
model = torch.nn.Linear(64, 10)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
monitor = RuleMonitor(["vanishing_gradient"], False, 50)
board = Board(__import__("pathlib").Path(sys.argv[1]), ImageSpec(32), monitor, optimizer, 8, {"lr": 0.1})
for epoch in range(1, 31):
    for _ in range(50):
        loss = model(torch.randn(8, 64)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        monitor.after_step(loss, model)
        board.after_step(loss)
    board.after_epoch({"epoch": epoch, "train": {"loss": 1.0, "accuracy": 0.5}}, model)
print("trained", epoch, "epochs, board active:", board.active)
"""


@pytest.mark.slow  # starts processes
def test_a_full_disk_stops_the_board_not_the_training(tmp_path):
    result = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path / "tb")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trained 30 epochs, board active: False" in result.stdout
    assert result.stderr.count("TensorBoard output stopped, training goes on") == 1
    assert "File too large" in result.stderr
    (events,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    assert events.stat().st_size <= 20_000
