"""The serving stages after the body is split: decode, batch, predict, unbatch (the model and its batcher)."""

from __future__ import annotations

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
from ..config import ServingConfig
from ..data import ClassInfo
from ..model import ModelSpec
from ..preprocess import ImageError, decode_for_eval
from . import engines


class Abandoned(Exception):
    """The request's deadline passed, or its client left: its work is dropped."""


@dataclass(frozen=True)
class Ticket:
    """One request's deadline (time.monotonic()) and a way to tell whether its client is still there."""

    deadline: float = math.inf
    client_gone: Callable[[], bool] = field(default=lambda: False)

    def remaining(self) -> float:
        """Seconds left, as a timeout threading accepts."""
        return max(0.0, min(self.deadline - time.monotonic(), threading.TIMEOUT_MAX))

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


class NotANumber(Exception):
    """The network answered NaN or infinite probabilities: never sent as JSON (which has no NaN)."""


class BadImage(Exception):
    def __init__(self, index: int, error: ImageError):
        super().__init__(str(error))
        self.index = index
        self.error = error


class Batcher:
    """Batches concurrent requests' images, runs ``predict`` on one thread, and unbatches each request's rows."""

    def __init__(self, predict: Callable[[torch.Tensor], torch.Tensor], max_batch: int, max_wait_ms: int):
        self._predict = predict
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
        submission = Submission(images, ticket)
        if expected:
            self.cancel()  # it is no longer on its way
        self._queue.put(submission)
        return submission.future

    def _more_coming(self) -> bool:
        with self._lock:
            return self._expected > 0 or not self._queue.empty()

    def _next_batch(self) -> list[Submission]:
        """The first queued submission, and what arrives within max_wait while more are on their way."""
        first = self._held or self._queue.get()
        self._held = None
        batch, size = [first], len(first.images)
        deadline = time.monotonic() + self._max_wait
        while size < self._max_batch and self._more_coming():
            try:
                submission = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if size + len(submission.images) > self._max_batch:
                self._held = submission  # starts the next batch
                break
            batch.append(submission)
            size += len(submission.images)
        return batch

    @staticmethod
    def _abandoned(submission: Submission) -> bool:
        """Answers Abandoned to a submission nobody waits for any more."""
        try:
            submission.ticket.check()
        except Abandoned as e:
            submission.future.set_exception(e)
            return True
        return False

    def _run(self, batch: list[Submission]) -> None:
        """Predict in chunks of max_batch, checking every ticket before each, then unbatch: each its own rows."""
        rows: dict[Submission, list[torch.Tensor]] = {submission: [] for submission in batch}
        waiting = [(submission, image) for submission in batch for image in submission.images]
        while waiting:
            live = {s for s in batch if not s.future.done() and not self._abandoned(s)}
            waiting = [(submission, image) for submission, image in waiting if submission in live]
            chunk, waiting = waiting[: self._max_batch], waiting[self._max_batch :]
            if chunk:
                outputs = self._predict(torch.stack([image for _, image in chunk]))
                for (submission, _), row in zip(chunk, outputs):
                    rows[submission].append(row)
        for submission in batch:
            if not submission.future.done():
                submission.future.set_result(torch.stack(rows[submission]))

    def _loop(self) -> None:
        while True:
            batch = [s for s in self._next_batch() if s.future.set_running_or_notify_cancel()]
            try:
                self._run(batch)
            except Exception as e:  # hand the error to every waiting request
                for submission in batch:
                    if not submission.future.done():
                        submission.future.set_exception(e)


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
    """Model artifacts -> top-k predictions, on the GPU when there is one, at most ``decode_slots`` decodes at once."""

    def __init__(self, artifacts: tuple[nn.Module, ModelSpec, list[ClassInfo]], config: ServingConfig):
        model, self.model_spec, self.classes = artifacts
        self.config = config
        self.device = gpu.select_device(0, config.allow_cpu)  # each worker sees only its own GPU
        self.dtype = precision.for_device(config.precision, "serve", self.device)
        self.engine, self._engine = engines.start(config.engine, model, self.model_spec.image, self.device, self.dtype,
                                                  torch.get_num_threads())
        self._decode_slots = threading.BoundedSemaphore(config.decode_slots)
        self._batcher = Batcher(self.predict, config.max_batch_size, config.max_batch_wait_ms)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW -> class probabilities, by the chosen engine (on the batcher's thread)."""
        return self._engine(images)

    def warm_up(self) -> None:
        """Run the model through the batcher at batch size 1 and the largest, and check its width against the labels."""
        side = self.model_spec.image.image_size
        for n in sorted({1, self.config.max_batch_size}):
            output = self._batcher.submit([torch.zeros(3, side, side, dtype=torch.uint8)] * n, expected=False).result()
        check_artifacts(self.model_spec, self.classes, output.shape[1])
        if not output.isfinite().all():
            raise NotANumber("the network's probabilities for a blank image are NaN or infinite: its weights "
                             "hold NaN or infinity (a training run that diverged?)")

    def decode(self, payload: bytes, ticket: Ticket, formats: tuple[str, ...] | None = None) -> torch.Tensor:
        """Image bytes -> uint8 CHW, the same evaluation transform training used, in a decode slot."""
        if not self._decode_slots.acquire(timeout=ticket.remaining()):
            raise Abandoned("the request's deadline passed while it waited to decode")
        try:
            ticket.check()
            return decode_for_eval(payload, self.model_spec.image, self.config.max_image_pixels, formats)
        finally:
            self._decode_slots.release()

    def _decode_all(self, payloads: list[bytes], ticket: Ticket, formats: tuple[str, ...] | None) -> list[torch.Tensor]:
        images = []
        for i, payload in enumerate(payloads):
            try:
                images.append(self.decode(payload, ticket, formats))
            except ImageError as e:
                raise BadImage(i, e) from None
        return images

    def classify(self, payloads: list[bytes], top_k: int, ticket: Ticket,
                 formats: tuple[str, ...] | None = None) -> list[list[dict]]:
        """Image bytes (Pillow ``formats``; None: any accepted) -> ranked labels: decode, batch, predict, unbatch."""
        self._batcher.expect()  # while this request decodes, the batcher may wait for it
        try:
            images = self._decode_all(payloads, ticket, formats)
        except BaseException:
            self._batcher.cancel()
            raise
        future = self._batcher.submit(images, ticket)
        try:
            probabilities = future.result(timeout=ticket.remaining())
        except FutureTimeout:
            future.cancel()  # still queued: the batcher skips it
            raise Abandoned("the request's deadline passed while it waited for the model") from None
        bad = int((~probabilities.isfinite()).any(1).sum())
        if bad:
            raise NotANumber(f"the network's probabilities are NaN or infinite for {bad} of {len(images)} image(s) in "
                             f"{self.dtype} (fp16 overflows above 65504; IMGCLF_PRECISION=bf16 or fp32 does not)")
        values, indices = probabilities.topk(min(top_k, len(self.classes)), dim=1)
        return [[{"label": self.classes[i].label, "index": i, "probability": round(p, 6)} for p, i in zip(ps, ids)]
                for ps, ids in zip(values.tolist(), indices.tolist())]
