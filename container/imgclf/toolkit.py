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
Several hosts without the flag are one distributed job too: the SDK's generic Estimator ignores a
``distribution=`` argument, and N independent copies of one job would race on the same files.

The exit status is the truth SageMaker sees. The toolkit's ``finally: _exit_processes(exit_code)``
exits 0 when writing its own failure file fails (a full or read-only /opt/ml/output, or no such
folder), so ``main`` exits 0 only when the program finished and the toolkit's ``success`` file exists.

Nothing here lives under /opt/ml, which a ``docker run -v $PWD/test_dir:/opt/ml`` hides: the entry
point is copied from IMGCLF_PROGRAM_DIR into the code folder when the job brings no code. The
toolkit waits up to 15 min for every host name to resolve, silently and deaf to SIGTERM; here one
host waits for nobody and several get a bounded, logged wait.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from .failure import FAILURE_FILE, write_failure
from .gpu import host_gpu_count
from .hyperparameters import to_bool

log = logging.getLogger("imgclf.toolkit")

STOP_GRACE_SECONDS = 110  # SIGKILL follows SIGTERM after 120 s
HOST_WAIT_SECONDS = 600  # for the other hosts' names to resolve (IMGCLF_HOST_WAIT_SECONDS)
PROGRAM_DIR_ENV = "IMGCLF_PROGRAM_DIR"  # where the image keeps train_program.py
OUR_MODULE = "imgclf.toolkit:run_program"

_stop_requested = False
_program_finished = False


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _forward(signum: int, _frame) -> None:
    """Signal every descendant, then wait for them without reaping: the toolkit must still
    collect the program's exit status itself."""
    global _stop_requested
    _stop_requested = True
    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.send_signal(signum)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline and any(_running(child) for child in children):
        time.sleep(0.1)


def _resolves(host: str) -> bool:
    try:
        socket.gethostbyname(host)
        return True
    except OSError:
        return False


def wait_for_hosts(hosts: Sequence[str], timeout: float) -> None:
    """Wait until every host name resolves (SageMaker's cluster may still be booting): a logged,
    bounded wait that a stop ends. One host has nobody to wait for."""
    from sagemaker_training import errors

    if len(hosts) <= 1:
        return
    deadline, next_log = time.monotonic() + timeout, 0.0
    while pending := [h for h in hosts if not _resolves(h)]:
        if _stop_requested:
            raise errors.ClientError(f"stopped by SIGTERM while waiting for host name(s) {', '.join(pending)} to resolve")
        if time.monotonic() >= deadline:
            raise errors.ClientError(
                f"host name(s) {', '.join(pending)} of resourceconfig.json did not resolve within {timeout:g} s "
                f"(hosts: {', '.join(hosts)}); check the network of the job's instances")
        if time.monotonic() >= next_log:
            log.info("waiting up to %.0f s more for host name(s) %s to resolve", deadline - time.monotonic(), ", ".join(pending))
            next_log = time.monotonic() + 10
        time.sleep(0.5)


def _program_source(env, code_dir: str) -> str:
    """The job's own code (sagemaker_submit_directory) if it brings any, else the image's program."""
    if env.module_dir != code_dir or os.path.isfile(os.path.join(code_dir, env.user_entry_point)):
        return env.module_dir
    return os.environ.get(PROGRAM_DIR_ENV, env.module_dir)


def run_program() -> None:
    global _program_finished
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
    timeout = float(os.environ.get("IMGCLF_HOST_WAIT_SECONDS", HOST_WAIT_SECONDS))
    entry_point._wait_hostname_resolution = lambda: wait_for_hosts(env.hosts, timeout)  # the toolkit's waits forever
    args, env_vars = env.to_cmd_args(), env.to_env_vars()
    process_runner = runner.ProcessRunnerType
    flag = to_bool(env.additional_framework_parameters.get("sagemaker_torch_distributed_enabled", False))
    gpus = host_gpu_count()
    if flag or gpus > 1 or len(env.hosts) > 1:
        if len(env.hosts) > 1 and not flag:
            log.info("%d hosts without sagemaker_torch_distributed_enabled: training one distributed job on all of them",
                     len(env.hosts))
        hosts = env.distribution_hosts or env.hosts  # empty on SageMaker when the flag is off
        process_runner = TorchrunRunner(env.user_entry_point, args, env_vars, max(1, gpus), hosts[0], hosts,
                                        env.current_host, env.network_interface_name, env.current_instance_type)
    source = _program_source(env, environment.code_dir)
    entry_point.run(source, env.user_entry_point, args, env_vars, runner_type=process_runner)
    _program_finished = True


def _write_toolkit_failure(message: str) -> None:
    """The toolkit's failure writer, made safe: the program's own reason wins, the folder is created,
    a full or read-only disk is logged instead of raised (which would make the toolkit exit 0)."""
    from sagemaker_training import environment

    if not (Path(environment.output_dir) / FAILURE_FILE).exists():
        write_failure(Path(environment.output_dir), message)


def exit_status(toolkit_code: int, output_dir: Path, finished: bool) -> int:
    """The toolkit's exit code, except that 0 needs a finished program and a ``success`` file."""
    if toolkit_code != 0:
        return toolkit_code
    if finished and (output_dir / "success").is_file():
        return 0
    reason = "the training program did not finish" if not finished else f"could not write {output_dir / 'success'}"
    log.error("train failed: %s, although the toolkit reported success", reason)
    if not (output_dir / FAILURE_FILE).exists():
        write_failure(output_dir, f"train failed: {reason}; see the log")
    return 1


def main() -> None:
    signal.signal(signal.SIGTERM, _forward)
    os.environ.setdefault("SAGEMAKER_TRAINING_MODULE", OUR_MODULE)
    from sagemaker_training import environment, files
    from sagemaker_training.cli.train import main as toolkit_train

    files.write_failure_file = _write_toolkit_failure  # trainer.train calls it through the module
    try:
        toolkit_train()
        code = 0
    except SystemExit as e:  # the toolkit always ends with sys.exit
        code = e.code if isinstance(e.code, int) else 1
    finished = _program_finished or os.environ["SAGEMAKER_TRAINING_MODULE"] != OUR_MODULE
    sys.exit(exit_status(code, Path(environment.output_dir), finished))


if __name__ == "__main__":
    main()
