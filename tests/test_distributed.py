"""Two hosts on one machine, as SageMaker runs a 2-instance job with torch_distributed: each host is
its own /opt/ml with its own resourceconfig.json, and the toolkit's `train` on each starts torchrun,
which joins the two over gloo on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess

import torch

import local_train
from conftest import FAST, channels_of, run_job

HOSTS = ["localhost", "127.0.0.1"]  # two names for this machine: the toolkit resolves them


def test_two_hosts_train_one_model_as_well_as_one_host(tmp_path, sample_data, capsys):
    hyperparameters = {**FAST, "epochs": "3", "sagemaker_torch_distributed_enabled": "true"}
    bases = [tmp_path / f"host{i}" for i in (1, 2)]
    processes = []
    for base, host in zip(bases, HOSTS):
        local_train.layout(base, channels_of(sample_data), hyperparameters)
        (base / "input/config/resourceconfig.json").write_text(json.dumps({
            "current_host": host, "hosts": HOSTS, "network_interface_name": "lo", "current_instance_type": "local"}))
        processes.append(subprocess.Popen(
            local_train.train_command(), env=local_train.train_env(base, {"OMP_NUM_THREADS": "1"}),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
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
