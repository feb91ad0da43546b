"""tensorboardX's ``SummaryWriter`` writing in the caller's thread (imported only when used: it loads boto3)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from tensorboardX import SummaryWriter
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event

log = logging.getLogger(__name__)
# tensorboardX warns once per NaN value it is given; a NaN loss is the training loop's to report, once
logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)


class EventFile(EventsWriter):
    """An event file written in the caller's thread; the first failed write (a full disk) turns it off."""

    def __init__(self, directory: str):
        self.directory, self.error = directory, None
        super().__init__(os.path.join(directory, "events"), f".{os.getpid()}")

    def add_summary(self, summary, global_step: int | None = None, walltime: float | None = None) -> None:
        self.write_event(Event(summary=summary, step=global_step or 0, wall_time=walltime or time.time()))

    def write_event(self, event: Event) -> None:
        self._guard(super().write_event, event)

    def flush(self) -> None:
        self._guard(super().flush)

    def close(self) -> None:
        self._guard(super().close)

    def _guard(self, write: Callable, *args) -> None:
        if self.error is not None:
            return
        try:
            write(*args)
        except OSError as e:
            if self.error is None:  # close() writes through flush(): one failure, one warning
                log.warning("TensorBoard output stopped, training goes on: cannot write to %s (%s)", self.directory, e)
            self.error = e


class SyncSummaryWriter(SummaryWriter):
    """tensorboardX's SummaryWriter writing through an :class:`EventFile` instead of its writer thread."""

    file_writer: EventFile

    def _get_file_writer(self) -> EventFile:
        if self.file_writer is None:
            self.file_writer = EventFile(self.logdir)
            self.all_writers = {self.logdir: self.file_writer}
        return self.file_writer
