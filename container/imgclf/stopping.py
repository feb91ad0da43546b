"""SIGTERM (SageMaker's stop, a spot reclaim) in the training program: an exception raised where
the program is, except inside ``finish_first()`` blocks (the checkpoint write), which complete and
then stop. SageMaker waits 120 s before SIGKILL; a checkpoint takes about a second."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


class Interrupted(BaseException):
    """SIGTERM: the job is being stopped or its spot instance reclaimed.

    A BaseException, like KeyboardInterrupt, so no library's ``except Exception`` swallows it.
    """


_depth = 0
_pending: str | None = None


def _handler(signum: int, _frame) -> None:
    global _pending
    name = signal.Signals(signum).name
    if _depth:
        _pending = name
    else:
        raise Interrupted(name)


def install() -> None:
    signal.signal(signal.SIGTERM, _handler)


@contextlib.contextmanager
def finish_first() -> Iterator[None]:
    """Let the block finish when SIGTERM arrives inside it; raise Interrupted right after."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
    if _pending and not _depth:
        name, _pending = _pending, None
        raise Interrupted(name)


def ignore_in_worker(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the main process handles the stop and shuts workers down;
    a worker raising Interrupted itself would only print an "Exception ignored" traceback."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
