"""The image's ``train`` command: sagemaker-training's ``train``, with SIGTERM passed on.

SageMaker stops a job (or reclaims a spot instance) with ``docker stop``: SIGTERM to PID 1,
SIGKILL 120 s later. The toolkit neither handles nor forwards SIGTERM
(aws/sagemaker-training-toolkit#125), and when PID 1 dies the kernel kills everything else at
once, so the training program would never hear of it. Here PID 1 passes the signal to every
process under it and waits for them to finish before the toolkit goes on.
"""

from __future__ import annotations

import contextlib
import signal
import time

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


def main() -> None:
    signal.signal(signal.SIGTERM, _forward)
    from sagemaker_training.cli.train import main as toolkit_train

    toolkit_train()


if __name__ == "__main__":
    main()
