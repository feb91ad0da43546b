"""The real `train` failing (or not) the way issue 14 reproduced: full and read-only disks, a
diverged model, jobs sharing a checkpoint location, stops, data and setup edge cases. Runs on a
tiny copy of the sample data (3 classes, 16 px) so each job takes seconds."""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch
from torchvision import models

from conftest import TINY, channels_of, run_job
from imgclf import atomic
from imgclf.model import imagenet_weights_filename
from imgclf_launch import local_train
from test_train_units import small_disk


def failure_of(base: Path) -> str:
    return (base / "output" / "failure").read_text()


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if atomic.TEMP_MARK in p.name]


def test_a_full_model_disk_fails_the_job_naming_the_file(tmp_path, tiny_data):
    base = tmp_path / "ml"
    local_train.layout(base, channels_of(tiny_data), TINY)
    with small_disk(base / "model", "2m"):  # resnet18's model.pt is 45 MB
        result = local_train.run_train(base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        assert result.returncode != 0, result.stdout[-3000:]
        assert temp_files(base / "model") == []
    assert re.match(rf"could not write {base.resolve()}/model/model.pt: No space left on device \(ENOSPC\)", failure_of(base))
    assert not (base / "output" / "success").exists()


@pytest.mark.parametrize("problem", ["full", "read-only"])
def test_an_unwritable_output_folder_still_fails_the_job(tmp_path, tiny_data, problem):
    """Before: the toolkit's failure write raised too, and its `finally` exited 0."""
    base = tmp_path / "ml"
    local_train.layout(base, channels_of(tiny_data), TINY)
    with small_disk(base / "output", "64k", read_only=problem == "read-only") as output:
        if problem == "full":
            with open(output / "filler", "wb") as filler, pytest.raises(OSError):
                filler.write(b"x" * 200_000)
        result = local_train.run_train(base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        assert result.returncode != 0, result.stdout[-3000:]
        assert "Reporting training SUCCESS" not in result.stdout
        assert not (output / "success").exists() and temp_files(output) == []


def test_a_model_with_non_finite_outputs_fails_the_job(tmp_path, tiny_data):
    """Finite train loss, NaN outputs in evaluation (as lr=10 gave on the full sample data): BatchNorm
    trains on batch statistics but evaluates with running ones, here NaN from the start."""
    weights = tmp_path / "pretrained" / imagenet_weights_filename("resnet18")
    weights.parent.mkdir()
    state = models.resnet18(weights=None).state_dict()
    state["bn1.running_mean"].fill_(float("nan"))
    torch.save(state, weights)
    channels = {**channels_of(tiny_data), "pretrained": weights.parent}
    code, output = run_job(tmp_path / "ml", channels, {**TINY, "pretrained": "true"})
    assert code != 0, output[-3000:]
    assert "epoch=1/1 train_loss=" in output  # finite
    assert failure_of(tmp_path / "ml").startswith("training diverged in epoch 1: the valid loss is nan; try a lower lr")
    assert not (tmp_path / "ml" / "output" / "success").exists()


def job(base: Path, data: Path, name: str, **hyperparameters: str) -> str:
    code, output = run_job(base, channels_of(data), {**TINY, **hyperparameters}, env={"TRAINING_JOB_NAME": name})
    assert code == 0, output[-3000:]
    return output


def valid_accuracies(output: str) -> list[float]:
    return [float(v) for v in re.findall(r"valid_accuracy=([0-9.]+)", output)]


def test_jobs_sharing_a_checkpoint_location_keep_their_own_runs(tmp_path, tiny_data):
    base = tmp_path / "ml"  # checkpoints/ is kept between jobs, like a shared checkpoint S3 URI
    job(base, tiny_data, "job-a", epochs="2")
    output = job(base, tiny_data, "job-b", lr="0.05", optimizer="sgd", epochs="1")  # another trial
    assert "resuming" not in output and "epoch=1/1 train_loss=" in output and valid_accuracies(output)
    output = job(base, tiny_data, "job-a", epochs="3")  # a restart of job-a: resumes
    assert "resuming after epoch 2" in output and re.findall(r"epoch=(\d)/3 train_loss", output) == ["3"]
    output = job(base, tiny_data, "job-a", epochs="3", optimizer="sgd")  # changed settings: a new run, no KeyError
    assert "resuming" not in output and re.findall(r"epoch=(\d)/3 train_loss", output) == ["1", "2", "3"]
    kept = json.loads((base / "model" / "model.json").read_text())["valid"]["accuracy"]
    assert valid_accuracies(output)[-1] == pytest.approx(kept, abs=1e-6)  # the tuner reads the kept model's
    assert len(list((base / "checkpoints").glob("job-a-*/last.pt"))) == 2

    output = job(base, tiny_data, "job-c", epochs="4", **{"resume-from": "job-a"})  # explicit continuation
    assert "continuing job job-a's run" in output and re.findall(r"epoch=(\d)/4 train_loss", output) == ["4"]
    code, _ = run_job(base, channels_of(tiny_data), {**TINY, "lr": "0.3", "resume-from": "job-a"}, env={"TRAINING_JOB_NAME": "job-d"})
    assert code != 0 and "its runs differ: lr=0.002 there, 0.3 here" in failure_of(base)


def test_a_corrupt_checkpoint_is_named_and_the_job_goes_on(tmp_path, tiny_data):
    base = tmp_path / "ml"
    job(base, tiny_data, "job-a", epochs="1")
    job(base, tiny_data, "job-a", epochs="2")
    (last,) = (base / "checkpoints").glob("job-a-*/last.pt")
    last.write_bytes(last.read_bytes()[:5000])
    output = job(base, tiny_data, "job-a", epochs="3")
    assert f"checkpoint {last} is unreadable" in output and "resuming after epoch 1" in output
    assert last.with_name("last.pt.corrupt").exists()


def start(base: Path, data: Path, hyperparameters: dict) -> subprocess.Popen:
    local_train.layout(base, channels_of(data), hyperparameters)
    return subprocess.Popen(local_train.train_command(), env=local_train.train_env(base),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_stop_before_the_first_epoch_says_nothing_was_saved_and_workers_stay_quiet(tmp_path, tiny_data):
    process = start(tmp_path / "ml", tiny_data, {**TINY, "num-workers": "2", "epochs": "50"})
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "epoch=1/50 step" in line:  # loader workers are running
            process.send_signal(signal.SIGTERM)
            break
    output = "".join(lines) + process.communicate(timeout=200)[0]
    assert process.returncode != 0
    failure = failure_of(tmp_path / "ml")
    if "epoch=1/50 train_loss" in output:
        pytest.fail("the stop arrived after epoch 1: this test needs it inside the first epoch\n" + output[-2000:])
    assert failure.startswith("stopped by SIGTERM before the first epoch completed: no checkpoint was written"), failure
    assert "Exception ignored" not in output and "Traceback" not in output, output[-3000:]


@pytest.mark.parametrize(
    ("change", "expected"),
    [({"batch-size": "1", "image-size": "32"}, "BatchNorm cannot train on a single value per channel"),
     ({"batch_size": "8"}, "'batch-size' is given twice"),
     ({"classes": "1"}, "a classifier needs at least 2 classes; the train channel has 1"),
     ({"pipe": "1"}, "channel(s) train use Pipe mode, which is not supported; use File or FastFile"),
     ({"macosx": "1"}, None)],
)
def test_setup_problems_fail_clearly(tmp_path, tiny_data, change, expected):
    data, config = tiny_data, {}
    if "classes" in change or "macosx" in change:
        data = tmp_path / "data"
        shutil.copytree(tiny_data, data)
        for split in ("train", "valid", "test"):
            if "classes" in change:
                for folder in sorted((data / split).iterdir())[1:]:
                    shutil.rmtree(folder)
            else:  # what unzipping a Mac-made zip leaves
                (data / split / "__MACOSX" / "001.zero").mkdir(parents=True)
                (data / split / "__MACOSX" / "001.zero" / "._a.png").write_bytes(b"\0\5\26\7")
                (data / split / "001.zero" / "._b.png").write_bytes(b"\0\5\26\7")
    if "pipe" in change:
        config["inputdataconfig.json"] = json.dumps({n: {"TrainingInputMode": "Pipe" if n == "train" else "File"}
                                                   for n in ("train", "valid", "test")})
    hyperparameters = {**TINY, **{k: v for k, v in change.items() if k not in ("classes", "pipe", "macosx")}}
    code, output = run_job(tmp_path / "ml", channels_of(data), hyperparameters, config_files=config)
    if expected is None:
        assert code == 0 and "skipping" not in output and ", 0 unreadable skipped" in output, output[-3000:]
    else:
        assert code != 0 and expected in failure_of(tmp_path / "ml"), output[-3000:]


def test_a_toolkit_failure_before_the_program_fails_the_job(tmp_path, tiny_data):
    """Empty hyperparameters.json and no output/ folder: the toolkit's failure write used to raise
    and its `finally` exited 0."""
    base = tmp_path / "ml"
    local_train.layout(base, channels_of(tiny_data), TINY)
    (base / "input" / "config" / "hyperparameters.json").write_text("")
    shutil.rmtree(base / "output")
    result = local_train.run_train(base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert result.returncode != 0, result.stdout[-3000:]
    assert (base / "output" / "failure").read_text().strip()


def test_an_unresolvable_single_host_does_not_wait(tmp_path, tiny_data):
    """SageMaker names the host algo-1; outside its network that name does not resolve."""
    config = {"resourceconfig.json": json.dumps({"current_host": "algo-1", "hosts": ["algo-1"],
                                                 "network_interface_name": "lo", "current_instance_type": "local"})}
    code, output = run_job(tmp_path / "ml", channels_of(tiny_data), TINY, config_files=config)
    assert code == 0, output[-3000:]


def test_several_hosts_without_the_distributed_flag_train_one_job(tmp_path, tiny_data):
    from test_distributed import start_hosts

    bases, processes = start_hosts(tmp_path, tiny_data, {**TINY, "epochs": "2"})
    outputs = [p.communicate(timeout=900)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs[0][-3000:] + outputs[1][-3000:]
    assert "2 hosts without sagemaker_torch_distributed_enabled: training one distributed job" in outputs[0]
    assert "process 0 of 2" in outputs[0]
    assert (bases[0] / "model" / "model.pt").is_file() and not (bases[1] / "model" / "model.pt").exists()


@pytest.mark.parametrize(("layout", "expected"), [
    ("splits", "looks like a whole dataset, not one folder per class: it has class folders named like splits (test, train, valid)"),
    ("nested", "looks like a whole dataset, not one folder per class: it has class folders that hold only folders, "
               "the same in each (001.zero, 002.one, 003.two)"),
])
def test_a_whole_dataset_uploaded_as_the_train_channel_fails_with_the_reason(tmp_path, tiny_data, layout, expected):
    """train/{train,valid,test}/<class>/... would otherwise train a classifier of the split names."""
    train = tmp_path / "data" / "train"
    for name in ("train", "valid", "test"):
        shutil.copytree(tiny_data / name, train / (name if layout == "splits" else f"part-{name}"))
    code, output = run_job(tmp_path / "ml", {"train": train}, TINY)
    assert code != 0, output[-3000:]
    assert failure_of(tmp_path / "ml").startswith(f"channel 'train' at {tmp_path}/ml/input/data/train " + expected), output[-3000:]
    assert "epoch=1/1" not in output


def test_what_a_write_cut_short_by_sigkill_leaves_is_removed_at_the_next_start(tmp_path, tiny_data):
    """A SIGKILL between atomic's mkstemp and its rename leaves the temporary file (here made the
    way atomic names it): SageMaker would upload it with the checkpoints, to every later job."""
    base = tmp_path / "ml"
    job(base, tiny_data, "job-a")
    (run,) = (base / "checkpoints").glob("job-a-*")
    leftovers = [Path(tempfile.mkstemp(dir=folder, prefix=f".{name}{atomic.TEMP_MARK}")[1])
                 for folder, name in ((run, "last.pt"), (base / "checkpoints", "other.pt"))]
    kept = run / "notes.tmp"  # not ours: stays
    kept.write_text("x")
    output = job(base, tiny_data, "job-a", epochs="2")
    assert "resuming after epoch 1" in output
    for leftover in leftovers:
        assert not leftover.exists() and f"removed {leftover}, left by a write that was cut short" in output
    assert kept.exists() and temp_files(base) == []


def test_the_default_precision_trains_on_where_fp32_does(tmp_path, tiny_data):
    """On a CPU with AMX, bf16 autocast turned this run's loss NaN within 2 to 30 epochs (a NaN weight
    gradient from one convolution's backward kernel) while fp32 trained on: auto trains in fp32 on CPUs."""
    hyperparameters = {**TINY, "lr": "0.001", "epochs": "8"}
    code, output = run_job(tmp_path / "ml", channels_of(tiny_data), hyperparameters)
    assert code == 0, output[-3000:]
    assert "precision fp32" in output or "device cuda" in output
    losses = [float(v) for v in re.findall(r"valid_loss=(\S+)", output)]
    assert len(losses) == 9 and all(math.isfinite(v) for v in losses), losses  # 8 epochs and the kept model's line
