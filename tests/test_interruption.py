"""Stopping a job (SIGTERM to `train`, as `docker stop` sends it to PID 1) and resuming it."""

from __future__ import annotations

import re
import signal
import subprocess

import torch

from conftest import FAST, channels_of, last_checkpoint, run_job
from imgclf_launch import local_train


def test_sigterm_stops_cleanly_and_the_next_job_resumes(tmp_path, sample_data):
    base, hyperparameters = tmp_path / "ml", {**FAST, "epochs": "6"}
    local_train.layout(base, channels_of(sample_data), hyperparameters)
    process = subprocess.Popen(local_train.train_command(), env=local_train.train_env(base),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if "epoch=2/6 valid_loss=" in line:
            process.send_signal(signal.SIGTERM)  # to the toolkit's process, not to our program
            break
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 143, output[-2000:]  # 128 + SIGTERM
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("stopped by SIGTERM: epochs 1-"), output[-2000:]
    checkpoint = torch.load(last_checkpoint(base), weights_only=True)
    done = checkpoint["epoch"]
    assert 1 <= done < 6 and not checkpoint["stopped_early"]
    assert f"epochs 1-{done} are in {last_checkpoint(base)}" in failure

    code, output = run_job(base, channels_of(sample_data), hyperparameters)  # the next job, same checkpoints
    assert code == 0, output[-3000:]
    assert f"resuming after epoch {done} from the checkpoint" in output
    assert re.findall(r"epoch=(\d)/6 train_loss=", output) == [str(e) for e in range(done + 1, 7)]
    assert {"model.pt", "classes.json", "model.json"} <= {p.name for p in (base / "model").iterdir()}
    summary = (base / "output" / "data" / "metrics.json").read_text()
    assert summary.count('"train"') == 6 and '"test"' in summary
