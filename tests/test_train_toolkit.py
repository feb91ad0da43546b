"""``train``'s glue to sagemaker-training: script mode (the job's own program), the failure file's
first line when the toolkit itself fails, a peer host that never joins, and the toolkit internals
imgclf.toolkit relies on."""

from __future__ import annotations

import inspect
import json
import tarfile
import time
from pathlib import Path

import pytest

from conftest import TINY, channels_of, run_job
from imgclf import failure
from test_train_failures import failure_of

PROGRAM = '''
import json, sys
import imgclf.config  # the image's package, importable from the job's program
env = imgclf.config.TrainingEnv.from_environ()
(env.model_dir / "mine.json").write_text(json.dumps({"args": sys.argv[1:], "channels": sorted(env.channels)}))
'''


def sdk_hyperparameters(values: dict) -> dict:
    """As the SDK sends them: every value JSON-encoded, then a string."""
    return {k: json.dumps(v) for k, v in values.items()}


def source(tmp_path: Path, packed: bool) -> Path:
    folder = tmp_path / "source"
    folder.mkdir()
    (folder / "my_train.py").write_text(PROGRAM)
    if not packed:
        return folder
    with tarfile.open(tmp_path / "sourcedir.tar.gz", "w:gz") as tar:  # what the SDK uploads
        tar.add(folder / "my_train.py", "my_train.py")
    return tmp_path / "sourcedir.tar.gz"


@pytest.mark.parametrize("packed", [True, False], ids=["sourcedir.tar.gz", "folder"])
def test_a_job_that_names_its_own_program_runs_it_with_our_package(tmp_path, tiny_data, packed):
    hyperparameters = {**TINY, **sdk_hyperparameters({"sagemaker_program": "my_train.py",
                                                      "sagemaker_submit_directory": str(source(tmp_path, packed))})}
    code, output = run_job(tmp_path / "ml", channels_of(tiny_data), hyperparameters)
    assert code == 0, output[-3000:]
    mine = json.loads((tmp_path / "ml" / "model" / "mine.json").read_text())
    assert mine["channels"] == ["test", "train", "valid"] and mine["args"][:2] == ["--arch", "resnet18"]
    assert not any(a.startswith("--sagemaker") for a in mine["args"])
    assert "train_loss" not in output and not (tmp_path / "ml" / "model" / "model.pt").exists()  # ours did not run


def test_a_job_without_a_program_of_its_own_runs_ours(tmp_path, tiny_data):
    code, output = run_job(tmp_path / "ml", channels_of(tiny_data), TINY)
    assert code == 0 and "epoch=1/1 train_loss=" in output, output[-3000:]


def test_a_named_program_that_is_not_there_fails_saying_so(tmp_path, tiny_data):
    code, output = run_job(tmp_path / "ml", channels_of(tiny_data), {**TINY, **sdk_hyperparameters({"sagemaker_program": "nope.py"})})
    assert code != 0, output[-3000:]
    assert failure_of(tmp_path / "ml").startswith(
        f"the job's program 'nope.py' (sagemaker_program) is not in {tmp_path}/ml/code, and the job names no "
        "sagemaker_submit_directory")


def test_code_on_s3_without_a_route_there_fails_with_the_cause_first(tmp_path, tiny_data):
    """Tests reach no network (conftest's proxy): as a job under network isolation."""
    uri = "s3://imgclf-test-code/job/source/sourcedir.tar.gz"
    hyperparameters = {**TINY, **sdk_hyperparameters({"sagemaker_program": "my_train.py", "sagemaker_submit_directory": uri})}
    code, output = run_job(tmp_path / "ml", channels_of(tiny_data), hyperparameters)
    assert code != 0, output[-3000:]
    first = failure_of(tmp_path / "ml").splitlines()[0]
    assert first.startswith(f"could not download the job's code from {uri} (sagemaker_submit_directory): ")
    assert first.endswith("or its code in an input channel with sagemaker_submit_directory set to the file there")
    assert len(first) < failure.FAILURE_REASON_LIMIT


@pytest.mark.parametrize("text", ["", "{not json"])
def test_an_invalid_hyperparameters_file_fails_with_the_cause_first(tmp_path, tiny_data, text):
    code, output = run_job(tmp_path / "ml", channels_of(tiny_data), TINY, config_files={"hyperparameters.json": text})
    assert code != 0, output[-3000:]
    first = failure_of(tmp_path / "ml").splitlines()[0]
    assert first.startswith(f"{tmp_path}/ml/input/config/hyperparameters.json is not valid JSON (Expecting "), first


def test_a_host_that_resolves_but_never_joins_is_named_within_the_wait(tmp_path, tiny_data):
    config = {"resourceconfig.json": json.dumps({"current_host": "localhost", "hosts": ["localhost", "127.0.0.1"],
                                                 "network_interface_name": "lo", "current_instance_type": "local"})}
    started = time.monotonic()
    code, output = run_job(tmp_path / "ml", channels_of(tiny_data), TINY, env={"IMGCLF_JOIN_WAIT_SECONDS": "5"},
                           config_files=config)
    assert code != 0, output[-3000:]
    assert failure_of(tmp_path / "ml").startswith(
        "host(s) 127.0.0.1 did not join the distributed job within 5 s (IMGCLF_JOIN_WAIT_SECONDS; hosts: localhost, 127.0.0.1)")
    assert time.monotonic() - started < 120


def test_an_oom_kill_is_read_from_the_cgroup_and_said(tmp_path):
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n")
    (tmp_path / "memory.max").write_text(f"{3 * 2**30}\n")
    assert failure.oom_kills(tmp_path) == 1 and failure.oom_kills(tmp_path / "none") == 0
    assert failure.describe_oom_kill(tmp_path).startswith(
        "out of memory: the kernel killed the training process (SIGKILL) when the job used all of its 3.0 GiB "
        "(the container's limit); use a smaller batch-size or image-size")


@pytest.mark.parametrize(("module", "name", "parameters"), [
    ("sagemaker_training.entry_point", "run", ["uri", "user_entry_point", "args", "env_vars", "wait", "capture_error",
                                               "runner_type", "extra_opts"]),
    ("sagemaker_training.entry_point", "_wait_hostname_resolution", []),
    ("sagemaker_training.files", "write_failure_file", ["failure_msg"]),
    ("sagemaker_training.environment", "read_hyperparameters", []),
    ("sagemaker_training.environment", "_read_json", ["path"]),
    ("sagemaker_training.files", "download_and_extract", ["uri", "path"]),
    ("sagemaker_training.files", "s3_download", ["url", "dst"]),
    ("sagemaker_training.torch_distributed.TorchDistributedRunner", "__init__",
     ["self", "user_entry_point", "args", "env_vars", "processes_per_host", "master_hostname", "hosts", "current_host",
      "network_interface_name", "instance_type"]),
    ("sagemaker_training.torch_distributed.TorchDistributedRunner", "run", ["self", "capture_error", "wait"]),
    ("sagemaker_training.torch_distributed.TorchDistributedRunner", "_create_command", ["self"]),
    ("sagemaker_training.torch_distributed.TorchDistributedRunner", "_setup", ["self"]),
    ("sagemaker_training.cli.train", "main", []),
])
def test_the_toolkit_internals_we_patch_or_call_are_still_there(module, name, parameters):
    """imgclf.toolkit replaces or subclasses these: an upgrade that renames or reorders them breaks
    `train` silently (a success reported for a failed job, a 15-minute wait), so it fails here."""
    import importlib

    pinned = "sagemaker-training==4.9.0 (container/requirements.txt)"
    path, _, owner = module.rpartition(".")
    try:
        target = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError:
        target = getattr(getattr(importlib.import_module(path), owner), name)
    except AttributeError:
        pytest.fail(f"{module}.{name} is gone: imgclf.toolkit was written against {pinned}")
    found = list(inspect.signature(target).parameters)
    assert found[:len(parameters)] == parameters, f"{module}.{name}{found} differs from {pinned}: update imgclf.toolkit"
    from sagemaker_training import environment, trainer

    assert "files.write_failure_file(" in inspect.getsource(trainer.train), f"trainer.train changed from {pinned}"
    assert "_wait_hostname_resolution()" in inspect.getsource(importlib.import_module("sagemaker_training.entry_point").run)
    assert environment.Environment.__init__ and hasattr(environment, "code_dir") and hasattr(environment, "output_dir")


def test_checkpoints_go_to_the_local_path_of_the_jobs_checkpoint_config(tmp_path, tiny_data):
    """SageMaker syncs CheckpointConfig.LocalPath with its S3Uri: a spot restart finds them there."""
    base, local_path = tmp_path / "ml", tmp_path / "spot-checkpoints"
    config = {"checkpointconfig.json": json.dumps({"LocalPath": str(local_path), "S3Uri": "s3://bucket/checkpoints"})}
    for epochs, expected in (("1", "no checkpoint of this run"), ("2", "resuming after epoch 1")):
        code, output = run_job(base, channels_of(tiny_data), {**TINY, "epochs": epochs}, config_files=config)
        assert code == 0 and expected in output, output[-3000:]
    assert len(list(local_path.glob("local-*/last.pt"))) == 1
    assert not list(base.glob("checkpoints/*/last.pt"))  # SageMaker's default folder stays unused
