"""SIGTERM (SageMaker's stop, a spot reclaim) in the training program: an exception raised where
the program is, except inside ``finish_first()`` blocks (the checkpoint write), which complete and
then stop. The stop is raised once: under torchrun each process hears SIGTERM twice."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class Interrupted(BaseException):
    """SIGTERM: the job is being stopped or its spot instance reclaimed.

    A BaseException, like KeyboardInterrupt, so no library's ``except Exception`` swallows it.
    """


_depth = 0
_pending: str | None = None
_raised = False


def _raise(name: str) -> None:
    global _raised
    _raised = True
    raise Interrupted(name)


def _handler(signum: int, _frame) -> None:
    global _pending
    name = signal.Signals(signum).name
    if _raised:
        return
    if _depth:
        _pending = name
    else:
        _raise(name)


def install() -> None:
    global _depth, _pending, _raised
    _depth, _pending, _raised = 0, None, False
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
        _raise(name)


def between_items(items: Iterable[T]) -> Iterator[T]:
    """``items`` with a stop landing between two of them, never inside one's fetch: a DataLoader
    batch arrives as a file descriptor its worker hands over, and a stop in mid hand-over leaves the
    worker printing a traceback."""
    iterator = iter(items)
    while True:
        with finish_first():
            item = next(iterator, _END)
        if item is _END:
            return
        yield item


_END = object()


def ignore_in_worker(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the main process handles the stop and shuts workers down;
    a worker raising Interrupted itself would only print an "Exception ignored" traceback."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
