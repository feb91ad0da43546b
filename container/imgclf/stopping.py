"""SIGTERM in the training program: raised where the program is, except inside ``finish_first()``
blocks, which complete first (docs/design.md#a-stop-lets-the-checkpoint-write-finish)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class Interrupted(BaseException):
    """SIGTERM; a BaseException, like KeyboardInterrupt, so no library's ``except Exception`` swallows it."""


_depth = 0
_pending: str | None = None
_raised = False


def _raise_pending() -> None:
    global _pending, _raised
    name, _pending, _raised = _pending, None, True
    raise Interrupted(name)


def _handler(signum: int, _frame) -> None:
    global _pending
    if not _raised:
        _pending = signal.Signals(signum).name
        if not _depth:
            _raise_pending()


def install() -> None:
    global _depth, _pending, _raised
    _depth, _pending, _raised = 0, None, False
    signal.signal(signal.SIGTERM, _handler)


@contextlib.contextmanager
def finish_first() -> Iterator[None]:
    """Let the block finish when SIGTERM arrives inside it; raise Interrupted right after."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
    if _pending and not _depth:
        _raise_pending()


def between_items(items: Iterable[T]) -> Iterator[T]:
    """``items`` with a stop landing between two, never inside a DataLoader worker's hand-over of one."""
    iterator = iter(items)
    while True:
        with finish_first():
            item = next(iterator, _END)
        if item is _END:
            return
        yield item


_END = object()


def ignore_in_worker(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the main process handles the stop and shuts the workers down."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
