"""Fast, in-process tests of training's failure handling: atomic writes, checkpoints, signals,
hyperparameters, channel scanning, the toolkit's exit status and host wait (issue 14)."""

from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing
import os
import signal
import subprocess
import unicodedata
from pathlib import Path

import pytest
import torch
from sagemaker_training import errors

from imgclf import atomic, stopping, toolkit
from imgclf.checkpoint import Checkpoints, open_run
from imgclf.config import ConfigError, TrainingEnv
from imgclf.data import IMAGE_EXTENSIONS, class_list, scan_channel
from imgclf.distributed import Ranks
from imgclf.failure import describe_os_error, write_failure
from imgclf.hyperparameters import Hyperparameters, parse_hyperparameters
from imgclf.model import load_imagenet_weights
from imgclf.train import check_batch, final_map_side


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "1m", read_only: bool = False):
    """A tmpfs of ``size`` mounted on ``folder`` (needs root); skips, saying why, where mounting fails."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_write_on_a_full_disk_names_the_file_and_leaves_no_temp(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        with pytest.raises(atomic.WriteError) as caught:
            atomic.write_bytes(disk / "model.pt", b"x" * 3_000_000)
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(disk / "model.pt")
        assert list(disk.iterdir()) == []
        assert describe_os_error(caught.value).startswith(f"could not write {disk / 'model.pt'}: No space left on device (ENOSPC)")


def test_failure_reason_is_written_on_a_full_disk_once_our_temp_files_are_gone(tmp_path):
    with small_disk(tmp_path / "output", "64k") as output:
        stale = output / ".checkpoint.tmp"
        fd = os.open(stale, os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            os.write(fd, b"x" * 200_000)  # fills the disk, as a half-written checkpoint does
        os.close(fd)
        atomic._pending.add(stale)  # ours: write_failure frees it first
        assert write_failure(output, "r" * 5000)
        assert (output / "failure").read_text() == "r" * 1024 and not stale.exists()
    with small_disk(tmp_path / "ro", read_only=True) as read_only:
        assert not write_failure(read_only, "reason")  # logged, never raised


def _write_many(target: str) -> None:
    for i in range(30):
        atomic.write_bytes(Path(target), str(i).encode() * 1000, durable=False)


@pytest.mark.slow  # starts processes
def test_temp_names_are_unique_per_process(tmp_path):
    """Two hosts without the distributed flag used to race on one model.pt.tmp."""
    target = tmp_path / "model.pt"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_write_many, [str(target)] * 2)
    assert target.read_bytes().startswith(b"29") and [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_json_reports_are_strict(tmp_path):
    atomic.write_json(tmp_path / "m.json", {"loss": float("nan"), "h": [float("inf"), 1.5]})
    text = (tmp_path / "m.json").read_text()

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    assert json.loads(text, parse_constant=refuse) == {"loss": None, "h": [None, 1.5]}


SETTINGS = {"lr": 0.001, "classes": ["a", "b"]}


def state(epoch: int) -> dict:
    return {"epoch": epoch, "stopped_early": False, "history": [], "best": {}, "model": {"w": torch.ones(2) * epoch},
            "optimizer": {}, "scheduler": {}}


@pytest.mark.parametrize("damage", ["random", "empty", "truncated", "not a checkpoint"])
def test_a_corrupt_checkpoint_is_set_aside_and_the_previous_one_used(tmp_path, damage, caplog):
    checkpoints = Checkpoints(tmp_path / "run", SETTINGS)
    checkpoints.save(state(1))
    checkpoints.save(state(2))
    last = tmp_path / "run" / "last.pt"
    data = last.read_bytes()
    last.write_bytes({"random": os.urandom(4096), "empty": b"", "truncated": data[: len(data) // 2]}.get(damage, b""))
    if damage == "not a checkpoint":
        torch.save({"weights": torch.zeros(1)}, last)
    loaded = Checkpoints(tmp_path / "run", SETTINGS).load()
    assert loaded["epoch"] == 1
    assert (tmp_path / "run" / "last.pt.corrupt").exists() and not last.exists()
    assert f"checkpoint {last} is unreadable" in caplog.text and "trying the previous one" in caplog.text

    (tmp_path / "run" / "previous.pt").write_bytes(b"garbage")
    assert Checkpoints(tmp_path / "run", SETTINGS).load() is None
    assert "starting from scratch" in caplog.text


def test_checkpoints_belong_to_a_job_and_its_settings(tmp_path):
    root = tmp_path / "checkpoints"
    own, saved = open_run(root, "job-a", SETTINGS, "")
    assert saved is None
    own.save(state(3))
    assert open_run(root, "job-a", SETTINGS, "")[1]["epoch"] == 3  # a spot restart of the same job
    assert open_run(root, "job-b", SETTINGS, "")[1] is None  # another job (a parallel tuner trial)
    assert open_run(root, "job-a", {**SETTINGS, "lr": 0.5}, "")[1] is None  # the same name, other settings
    other, continued = open_run(root, "job-c", SETTINGS, "job-a")  # explicit continuation
    assert continued["epoch"] == 3 and other.folder.name.startswith("job-c-")
    with pytest.raises(ConfigError, match=r"resume-from=job-a: no checkpoint .* its runs differ: lr=0.001 there, 0.5 here"):
        open_run(root, "job-d", {**SETTINGS, "lr": 0.5}, "job-a")
    assert json.loads((own.folder / "settings.json").read_text()) == SETTINGS


def test_a_stop_during_the_checkpoint_write_finishes_it_then_stops(tmp_path):
    stopping.install()
    written = []
    try:
        with pytest.raises(stopping.Interrupted):
            with stopping.finish_first():
                os.kill(os.getpid(), signal.SIGTERM)
                written.append(Checkpoints(tmp_path, SETTINGS).save(state(1)))
        assert written and (tmp_path / "last.pt").is_file()
        stopping.install()
        with pytest.raises(stopping.Interrupted):  # outside such a block, at once
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_a_second_sigterm_does_not_interrupt_the_stop(tmp_path):
    """Under torchrun the program hears SIGTERM twice: from `train` and from torchrun."""
    stopping.install()
    try:
        with pytest.raises(stopping.Interrupted):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()
        os.kill(os.getpid(), signal.SIGTERM)  # while the failure reason is being written
        atomic.write_text(tmp_path / "failure", "stopped by SIGTERM")
        assert (tmp_path / "failure").read_text() == "stopped by SIGTERM"
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_a_hyperparameter_given_twice_fails():
    with pytest.raises(ConfigError, match="'batch-size' is given twice, as 'batch-size' and 'batch_size'"):
        parse_hyperparameters(["--batch-size", "8", "--batch_size", "16"])
    assert parse_hyperparameters(["--resume-from", "job-1"]).resume_from == "job-1"
    with pytest.raises(ConfigError, match="'resume-from' = '../x' is invalid"):
        parse_hyperparameters(["--resume-from", "../x"])


def test_channel_scan_skips_metadata_and_takes_every_image_name(tmp_path):
    name = "Café"
    for form, root in (("NFC", tmp_path / "train"), ("NFD", tmp_path / "valid")):
        folder = root / unicodedata.normalize(form, name)
        (folder / ".ipynb_checkpoints").mkdir(parents=True)
        (folder / ".ipynb_checkpoints" / "a-checkpoint.jpg").write_bytes(b"x")
        (folder / "._a.jpg").write_bytes(b"x")
        for image in ("a.jpg", "b.jfif", "c", "d.JPG"):
            (folder / image).write_bytes(b"x")
        (folder / "notes.txt").write_text("x")
        (root / "__MACOSX" / name).mkdir(parents=True)
        (root / "other").mkdir()
    train, valid = scan_channel("train", tmp_path / "train"), scan_channel("valid", tmp_path / "valid")
    assert set(train) == set(valid) == {unicodedata.normalize("NFC", name), "other"}
    assert [p.name for p in train[unicodedata.normalize("NFC", name)]] == ["a.jpg", "b.jfif", "c", "d.JPG"]
    assert "" in IMAGE_EXTENSIONS


def test_one_class_is_refused():
    with pytest.raises(ConfigError, match="needs at least 2 classes; the train channel has 1"):
        class_list({"a": []})


def test_batches_of_one_image_on_a_1x1_feature_map_are_refused():
    assert final_map_side(32) == 1 and final_map_side(33) == 2 and final_map_side(224) == 7
    with pytest.raises(ConfigError, match="batches of one image"):
        check_batch(Hyperparameters(batch_size=1, image_size=32), 100, Ranks())
    with pytest.raises(ConfigError, match="batches of one image"):
        check_batch(Hyperparameters(batch_size=4, image_size=32), 2, Ranks(0, 2))  # one image per process
    assert check_batch(Hyperparameters(batch_size=1, image_size=64), 100, Ranks()) == 1


def test_a_corrupt_pretrained_file_is_named(tmp_path):
    weights = tmp_path / "resnet18-f37072fd.pth"
    weights.write_bytes(os.urandom(1000))
    with pytest.raises(ConfigError, match=f"the ImageNet weights file {weights} is unreadable"):
        load_imagenet_weights(torch.nn.Linear(1, 1), "resnet18", tmp_path)


def test_pipe_mode_is_read_from_the_toolkit(tmp_path):
    env = TrainingEnv.from_environ({"SAGEMAKER_BASE_DIR": str(tmp_path), "TRAINING_JOB_NAME": "j-1",
                                    "SM_INPUT_DATA_CONFIG": json.dumps({"train": {"TrainingInputMode": "Pipe"}})})
    assert env.input_modes == {"train": "Pipe"} and env.job_name == "j-1"
    assert TrainingEnv.from_environ({"SAGEMAKER_BASE_DIR": str(tmp_path)}).job_name == "local"


def test_exit_status_is_zero_only_for_a_finished_job(tmp_path):
    assert toolkit.exit_status(2, tmp_path, True) == 2
    assert toolkit.exit_status(1, tmp_path, False, stopped=True) == 143  # docker stop: SIGTERM
    assert toolkit.exit_status(0, tmp_path, False) == 1  # the toolkit's finally exits 0 after a failed failure write
    assert "did not finish" in (tmp_path / "failure").read_text()
    (tmp_path / "failure").unlink()
    assert toolkit.exit_status(0, tmp_path, True) == 1  # no success file
    (tmp_path / "success").touch()
    assert toolkit.exit_status(0, tmp_path, True) == 0


def test_host_wait_skips_one_host_and_bounds_several(monkeypatch):
    toolkit.wait_for_hosts(["algo-1"], timeout=0)  # one host: nobody to wait for, even unresolvable
    toolkit.wait_for_hosts(["localhost", "127.0.0.1"], timeout=0)
    with pytest.raises(errors.ClientError, match="host name.s. algo-2 of resourceconfig.json did not resolve within 1 s"):
        toolkit.wait_for_hosts(["localhost", "algo-2"], timeout=1)
    monkeypatch.setattr(toolkit, "_stop_requested", True)
    with pytest.raises(errors.ClientError, match="stopped by SIGTERM while waiting for host name.s. algo-2"):
        toolkit.wait_for_hosts(["localhost", "algo-2"], timeout=60)


def test_a_stop_lands_between_loader_batches_not_inside_a_fetch():
    """A DataLoader batch is handed over by its worker; a stop in mid hand-over makes the worker print
    a traceback, so the stop waits for the fetch to finish."""
    def batches():
        yield 1
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the second batch is being fetched
        yield 2
        yield 3

    stopping.install()
    seen = []
    try:
        with pytest.raises(stopping.Interrupted):
            for batch in stopping.between_items(batches()):
                seen.append(batch)
        assert seen == [1]  # the second fetch finished, then the stop, before anyone used it
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
