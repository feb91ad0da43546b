"""Two hosts on one machine, as SageMaker runs a 2-instance job with torch_distributed: each host is
its own /opt/ml with its own resourceconfig.json, and the toolkit's `train` on each starts torchrun,
which joins the two over gloo on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import torch

from conftest import FAST, channels_of, last_checkpoint, run_job
from imgclf_launch import local_train

HOSTS = ["localhost", "127.0.0.1"]  # two names for this machine: the toolkit resolves them
DISTRIBUTED = {"sagemaker_torch_distributed_enabled": "true"}


def start_hosts(root: Path, data: Path, hyperparameters: dict, hosts: list[str] = HOSTS, fresh: bool = True):
    """One toolkit `train` per host, each on its own /opt/ml under ``root``; returns (bases, processes)."""
    bases, processes = [root / f"host{i}" for i in range(1, len(hosts) + 1)], []
    for base, host in zip(bases, hosts):
        if fresh:
            local_train.layout(base, channels_of(data), hyperparameters)
        (base / "input/config/resourceconfig.json").write_text(json.dumps({
            "current_host": host, "hosts": hosts, "network_interface_name": "lo", "current_instance_type": "local"}))
        processes.append(subprocess.Popen(
            local_train.train_command(), env=local_train.train_env(base, {"OMP_NUM_THREADS": "1"}),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return bases, processes


def test_two_hosts_train_one_model_as_well_as_one_host(tmp_path, sample_data, capsys):
    bases, processes = start_hosts(tmp_path, sample_data, {**FAST, "epochs": "3", **DISTRIBUTED})
    outputs = [p.communicate(timeout=900)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-4000:]
    with capsys.disabled():  # the two-host run, shown in the CI log
        for name, output in zip(("host 1", "host 2"), outputs):
            shown = [line for line in output.splitlines() if "torchrun" in line or "backend" in line
                     or "_accuracy=" in line or "Reporting training" in line]
            print(f"\n--- {name}:\n" + "\n".join(shown))

    first, second = outputs
    assert "torchrun --nnodes 2 --nproc_per_node 1 --master_addr localhost --master_port 7777 --node_rank 0" in first
    assert "--node_rank 1" in second
    assert "process 0 of 2 (local 0 of 1), gloo backend" in first
    assert "valid_accuracy=" in first and "valid_accuracy=" not in second  # one process reports
    assert (bases[0] / "model/model.pt").is_file() and not (bases[1] / "model/model.pt").exists()
    state = torch.load(bases[0] / "model/model.pt", weights_only=True)
    assert state["fc.weight"].shape == (10, 512)

    code, single = run_job(tmp_path / "single", channels_of(sample_data), {**FAST, "epochs": "3"})
    assert code == 0, single[-3000:]
    two = json.loads((bases[0] / "output/data/metrics.json").read_text())["test"]["accuracy"]
    one = json.loads((tmp_path / "single/output/data/metrics.json").read_text())["test"]["accuracy"]
    with capsys.disabled():
        print(f"test accuracy: two hosts {two:.4f}, one host {one:.4f}")
    assert two > 0.8 and abs(two - one) < 0.05


def test_a_failure_under_torchrun_fails_the_job(tmp_path, sample_data):
    """sagemaker-training 4.9's torchrun runner would report SUCCESS for any exit code (toolkit.py)."""
    bases, processes = start_hosts(tmp_path, sample_data, {**FAST, "batch-size": "0", **DISTRIBUTED}, hosts=["localhost"])
    output = processes[0].communicate(timeout=300)[0]
    assert processes[0].returncode != 0, output[-3000:]
    assert "Reporting training FAILURE" in output and "Reporting training SUCCESS" not in output
    assert "'batch-size' = '0' is invalid" in (bases[0] / "output/failure").read_text()


def test_stopped_two_host_job_resumes_from_its_checkpoint(tmp_path, sample_data):
    hyperparameters = {**FAST, "epochs": "4", **DISTRIBUTED}
    bases, processes = start_hosts(tmp_path, sample_data, hyperparameters)
    deadline = time.monotonic() + 300
    while last_checkpoint(bases[0]) is None and time.monotonic() < deadline and processes[0].poll() is None:
        time.sleep(0.2)
    checkpoint = last_checkpoint(bases[0])
    assert checkpoint is not None, processes[0].communicate()[0][-3000:]
    for process in processes:  # what `docker stop` does to each instance
        process.send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=200)[0] for p in processes]
    for base, process, output in zip(bases, processes, outputs):
        assert process.returncode != 0 and "Reporting training FAILURE" in output, output[-3000:]
        assert (base / "output/failure").read_text().startswith("stopped by SIGTERM"), output[-6000:]
    stopped_after = torch.load(checkpoint, weights_only=True)["epoch"]
    assert stopped_after < 4

    # SageMaker restores the job's checkpoint S3 location onto every host of the next job.
    shutil.copytree(bases[0] / "checkpoints", bases[1] / "checkpoints")
    for base in bases:
        (base / "output/failure").unlink()
    _, processes = start_hosts(tmp_path, sample_data, hyperparameters, fresh=False)
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs[0][-3000:]
    assert f"resuming after epoch {stopped_after}" in outputs[0]
    assert f"epoch={stopped_after}/4 train_loss" not in outputs[0] and "epoch=4/4 train_loss" in outputs[0]
    assert (bases[0] / "model/model.pt").is_file()
