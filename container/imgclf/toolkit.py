"""The image's ``train`` command: sagemaker-training's ``train``, with SIGTERM passed on.

SageMaker stops a job (or reclaims a spot instance) with ``docker stop``: SIGTERM to PID 1,
SIGKILL 120 s later. The toolkit neither handles nor forwards SIGTERM
(aws/sagemaker-training-toolkit#125), and when PID 1 dies the kernel kills everything else at
once, so the training program would never hear of it. Here PID 1 passes the signal to every
process under it and waits for them to finish before the toolkit goes on.

The toolkit's generic ``train`` only runs the program as one process (or through MPI); torchrun is
wired up by the framework images. ``run_program`` (the toolkit's SAGEMAKER_TRAINING_MODULE hook)
does that here: with ``sagemaker_torch_distributed_enabled`` (the SDK's
``distribution={"torch_distributed": {"enabled": True}}``), or on one instance with several GPUs,
the program runs under torchrun with one process per GPU (one per instance on CPUs) on every host.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import psutil

STOP_GRACE_SECONDS = 110  # SIGKILL follows SIGTERM after 120 s


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _forward(signum: int, _frame) -> None:
    """Signal every descendant, then wait for them without reaping: the toolkit must still
    collect the program's exit status itself."""
    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.send_signal(signum)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline and any(_running(child) for child in children):
        time.sleep(0.1)


def _enabled(value: object) -> bool:
    return str(value).strip().lower() in ("true", "1")


def run_program() -> None:
    from sagemaker_training import entry_point, environment, runner
    from sagemaker_training.torch_distributed import TorchDistributedRunner

    class TorchrunRunner(TorchDistributedRunner):
        def _setup(self) -> None:
            super()._setup()
            os.environ["GLOO_SOCKET_IFNAME"] = str(self._network_interface_name)  # CPU jobs use gloo

        def _create_command(self) -> list[str]:
            command = super()._create_command()
            command[0] = str(Path(sys.executable).with_name("torchrun"))  # ours, wherever PATH points
            return command

        def run(self, wait: bool = True, capture_error: bool = False):
            # entry_point.run calls run(wait, capture_error) like every ProcessRunner, but 4.9's
            # TorchDistributedRunner.run takes (capture_error, wait): wait=False skips the exit-code
            # check, and a failed distributed job would report SUCCESS.
            return super().run(capture_error=capture_error, wait=wait)

    env = environment.Environment()
    args, env_vars = env.to_cmd_args(), env.to_env_vars()
    process_runner = runner.ProcessRunnerType
    if _enabled(env.additional_framework_parameters.get("sagemaker_torch_distributed_enabled")) or env.num_gpus > 1:
        hosts = env.distribution_hosts or env.hosts  # empty on SageMaker when the flag is off
        process_runner = TorchrunRunner(env.user_entry_point, args, env_vars, max(1, env.num_gpus), hosts[0], hosts,
                                        env.current_host, env.network_interface_name, env.current_instance_type)
    entry_point.run(env.module_dir, env.user_entry_point, args, env_vars, runner_type=process_runner)


def main() -> None:
    signal.signal(signal.SIGTERM, _forward)
    os.environ.setdefault("SAGEMAKER_TRAINING_MODULE", "imgclf.toolkit:run_program")
    from sagemaker_training.cli.train import main as toolkit_train

    toolkit_train()


if __name__ == "__main__":
    main()
