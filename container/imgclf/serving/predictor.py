"""The loaded model and the batcher that feeds it requests from many threads at once."""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import gpu, precision
from ..data import ClassInfo
from ..model import ModelSpec
from ..preprocess import ImageError, decode_for_eval
from . import engines

log = logging.getLogger(__name__)


class Abandoned(Exception):
    """The request's deadline passed, or its client left: its work is dropped."""


@dataclass(frozen=True)
class Ticket:
    """One request's deadline (time.monotonic()) and a way to tell whether its client is still there."""

    deadline: float = math.inf
    client_gone: Callable[[], bool] = field(default=lambda: False)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check(self) -> None:
        if self.remaining() <= 0:
            raise Abandoned("the request's deadline passed before its work was done")
        if self.client_gone():
            raise Abandoned("the client closed the connection")


@dataclass(eq=False)
class Submission:
    """One request's images waiting for (or in) the model."""

    images: list[torch.Tensor]  # uint8 CHW each
    ticket: Ticket
    future: Future = field(default_factory=Future)


class BadImage(Exception):
    def __init__(self, index: int, error: ImageError):
        super().__init__(str(error))
        self.index = index
        self.error = error


class Batcher:
    """Runs ``infer`` on one thread, batching images from concurrent requests.

    Requests queue up; the thread takes the first, then, while more requests are known to
    be on their way (``expect`` was called for them), whatever arrives within ``max_wait_ms``,
    up to ``max_batch`` images. A lone request never waits; one larger than ``max_batch`` runs in
    chunks of it. Each request gets back exactly its own rows, in order. All torch work happens on
    this one thread. A request whose deadline passes or whose client leaves is answered with
    Abandoned and its remaining images never run, checked before every chunk.
    """

    def __init__(self, infer: Callable[[torch.Tensor], torch.Tensor], max_batch: int, max_wait_ms: int):
        self._infer = infer
        self._max_batch = max_batch
        self._max_wait = max_wait_ms / 1000
        self._queue: queue.Queue[Submission] = queue.Queue()
        self._held: Submission | None = None
        self._expected = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._loop, name="batcher", daemon=True).start()

    def expect(self) -> None:
        """A request has started (it is decoding its images) and will submit soon."""
        with self._lock:
            self._expected += 1

    def cancel(self) -> None:
        """An expected request will not submit after all."""
        with self._lock:
            self._expected -= 1

    def submit(self, images: list[torch.Tensor], ticket: Ticket = Ticket(), expected: bool = True) -> Future:
        job = Submission(images, ticket)
        if expected:
            with self._lock:
                self._expected -= 1
        self._queue.put(job)
        return job.future

    def _more_coming(self) -> bool:
        with self._lock:
            return self._expected > 0 or not self._queue.empty()

    def _next_batch(self) -> list[Submission]:
        first = self._held or self._queue.get()
        self._held = None
        jobs, size = [first], len(first.images)
        deadline = time.monotonic() + self._max_wait
        while size < self._max_batch and self._more_coming():
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if size + len(job.images) > self._max_batch:
                self._held = job  # starts the next batch
                break
            jobs.append(job)
            size += len(job.images)
        return jobs

    @staticmethod
    def _abandoned(job: Submission) -> bool:
        """Answers Abandoned to a job nobody waits for any more."""
        try:
            job.ticket.check()
        except Abandoned as e:
            job.future.set_exception(e)
            return True
        return False

    def _run(self, jobs: list[Submission]) -> None:
        rows: dict[Submission, list[torch.Tensor]] = {job: [] for job in jobs}
        waiting = [(job, image) for job in jobs for image in job.images]
        while waiting:
            live = {job for job in jobs if not job.future.done() and not self._abandoned(job)}
            waiting = [(job, image) for job, image in waiting if job in live]
            chunk, waiting = waiting[: self._max_batch], waiting[self._max_batch :]
            if chunk:
                outputs = self._infer(torch.stack([image for _, image in chunk]))
                for (job, _), row in zip(chunk, outputs):
                    rows[job].append(row)
        for job in jobs:
            if not job.future.done():
                job.future.set_result(torch.stack(rows[job]))

    def _loop(self) -> None:
        while True:
            jobs = [job for job in self._next_batch() if job.future.set_running_or_notify_cancel()]
            try:
                self._run(jobs)
            except Exception as e:  # hand the error to every waiting request
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(e)


def check_artifacts(model_spec: ModelSpec, classes: list[ClassInfo], output_width: int) -> None:
    """model.json, classes.json and the network must agree, or every answer would be wrong or a 500."""
    if [c.index for c in classes] != list(range(len(classes))):
        raise ValueError("classes.json must list indices 0, 1, 2, ... in order")
    if not len(classes) == model_spec.num_classes == output_width:
        raise ValueError(
            f"the model disagrees with itself: classes.json lists {len(classes)} classes, model.json says "
            f"{model_spec.num_classes}, the network outputs {output_width}"
        )


class Predictor:
    """Model artifacts -> top-k predictions, on the GPU when there is one.

    ``decode_slots`` bounds how many images decode at once in this process, so decoding memory
    is at most decode_slots x the per-image maximum, however many requests arrive.
    """

    def __init__(self, artifacts: tuple[nn.Module, ModelSpec, list[ClassInfo]], max_batch: int, max_wait_ms: int,
                 max_image_pixels: int, precision_setting: str, decode_slots: int, allow_cpu: bool = False,
                 engine_setting: str = "auto"):
        model, self.model_spec, self.classes = artifacts
        self.device = gpu.select_device(0, allow_cpu)  # each worker sees only its own GPU
        self.dtype = precision.for_device(precision_setting, "serve", self.device)
        self.engine = engines.choose(engine_setting, self.device)
        self._engine = engines.build(self.engine, model, self.model_spec.image, self.device, self.dtype,
                                     torch.get_num_threads())
        self.max_batch = max_batch
        self.max_image_pixels = max_image_pixels
        self._decode_slots = threading.BoundedSemaphore(decode_slots)
        self._batcher = Batcher(self._infer, max_batch, max_wait_ms)

    def _infer(self, images: torch.Tensor) -> torch.Tensor:
        return self._engine(images)

    def warm_up(self) -> None:
        """Run the model once at batch size 1 and at the largest batch, through the batcher, and
        check that its output width matches the labels."""
        side = self.model_spec.image.image_size
        for n in sorted({1, self.max_batch}):
            output = self._batcher.submit([torch.zeros(3, side, side, dtype=torch.uint8)] * n, expected=False).result()
        check_artifacts(self.model_spec, self.classes, output.shape[1])

    def preprocess(self, payload: bytes, ticket: Ticket, formats: tuple[str, ...] | None = None) -> torch.Tensor:
        """Image bytes -> uint8 CHW, the same evaluation transform training used, in a decode slot."""
        if not self._decode_slots.acquire(timeout=max(0.0, min(ticket.remaining(), threading.TIMEOUT_MAX))):
            raise Abandoned("the request's deadline passed while it waited to decode")
        try:
            ticket.check()
            chosen = {"formats": formats} if formats else {}  # none named: every format the decoder accepts
            return decode_for_eval(payload, self.model_spec.image, self.max_image_pixels, **chosen)
        finally:
            self._decode_slots.release()

    def _decode_all(self, payloads: list[bytes], ticket: Ticket, formats: tuple[str, ...] | None) -> list[torch.Tensor]:
        images = []
        for i, payload in enumerate(payloads):
            try:
                images.append(self.preprocess(payload, ticket, formats))
            except ImageError as e:
                raise BadImage(i, e) from None
        return images

    def classify(self, payloads: list[bytes], top_k: int, ticket: Ticket,
                 formats: tuple[str, ...] | None = None) -> list[list[dict]]:
        """Raw image bytes (of these Pillow ``formats``; None: any accepted) -> ranked labels per image:
        decode, batch, predict, unbatch. BadImage names the first unusable image, Abandoned says the
        deadline passed or the client left (the work is dropped)."""
        self._batcher.expect()  # while this request decodes, the batcher may wait for it
        try:
            images = self._decode_all(payloads, ticket, formats)
        except BaseException:
            self._batcher.cancel()
            raise
        future = self._batcher.submit(images, ticket)
        try:
            probabilities = future.result(timeout=max(0.0, min(ticket.remaining(), threading.TIMEOUT_MAX)))
        except FutureTimeout:
            future.cancel()  # still queued: the batcher skips it
            raise Abandoned("the request's deadline passed while it waited for the model") from None
        values, indices = probabilities.topk(min(top_k, len(self.classes)), dim=1)
        return [
            [
                {"label": self.classes[i].label, "index": i, "probability": round(p, 6)}
                for p, i in zip(row_p.tolist(), row_i.tolist())
            ]
            for row_p, row_i in zip(values, indices)
        ]
