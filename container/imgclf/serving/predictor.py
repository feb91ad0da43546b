"""The loaded model and the batcher that feeds it requests from many threads at once."""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import gpu, precision
from ..model import load_artifacts
from ..preprocess import ImageError, decode_image, eval_preprocess, normalize

log = logging.getLogger(__name__)


@dataclass
class _Job:
    images: list[torch.Tensor]  # uint8 CHW each
    future: Future


class BadImage(Exception):
    def __init__(self, index: int, error: ImageError):
        super().__init__(str(error))
        self.index = index
        self.error = error


class Batcher:
    """Runs ``infer`` on one thread, batching images from concurrent requests.

    Requests queue up; the thread takes the first, then, while more requests are known to
    be on their way (``expect`` was called for them), whatever arrives within ``max_wait_ms``,
    up to ``max_batch`` images. A lone request never waits. Each request gets back exactly
    its own rows, in order. All torch work happens on this one thread.
    """

    def __init__(self, infer, max_batch: int, max_wait_ms: int):
        self._infer = infer
        self._max_batch = max_batch
        self._max_wait = max_wait_ms / 1000
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._held: _Job | None = None
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

    def submit(self, images: list[torch.Tensor], expected: bool = True) -> Future:
        job = _Job(images, Future())
        if expected:
            with self._lock:
                self._expected -= 1
        self._queue.put(job)
        return job.future

    def _more_coming(self) -> bool:
        with self._lock:
            return self._expected > 0 or not self._queue.empty()

    def _next_batch(self) -> list[_Job]:
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

    def _loop(self) -> None:
        while True:
            jobs = self._next_batch()
            try:
                outputs = self._infer(torch.stack([image for job in jobs for image in job.images]))
            except Exception as e:  # hand the error to every waiting request
                for job in jobs:
                    job.future.set_exception(e)
                continue
            start = 0
            for job in jobs:
                job.future.set_result(outputs[start : start + len(job.images)])
                start += len(job.images)


class Predictor:
    """Model artifacts -> top-k predictions, on the GPU when there is one."""

    def __init__(self, model_dir: Path, max_batch: int, max_wait_ms: int, max_image_pixels: int, precision_setting: str,
                 allow_cpu: bool = False):
        self.device = gpu.select_device(0, allow_cpu)  # each worker sees only its own GPU
        model, self.spec, self.classes = load_artifacts(model_dir)
        self.dtype = precision.for_device(precision_setting, "serve", self.device)
        self.model = model.to(self.device, dtype=self.dtype, memory_format=torch.channels_last).eval()
        self.max_batch = max_batch
        self.max_image_pixels = max_image_pixels
        self._batcher = Batcher(self._infer, max_batch, max_wait_ms)

    @torch.inference_mode()
    def _infer(self, images: torch.Tensor) -> torch.Tensor:
        outputs = []
        for chunk in images.split(self.max_batch):  # one request may hold more than a batch
            logits = self.model(normalize(chunk, self.spec.image, self.device, self.dtype))
            outputs.append(logits.float().softmax(1).cpu())
        return torch.cat(outputs)

    def warm_up(self) -> None:
        """Run the model once at batch size 1 and at the largest batch, through the batcher."""
        side = self.spec.image_size
        for n in sorted({1, self.max_batch}):
            self._batcher.submit([torch.zeros(3, side, side, dtype=torch.uint8)] * n, expected=False).result()

    def preprocess(self, payload: bytes) -> torch.Tensor:
        """Image bytes -> uint8 CHW, the same evaluation transform training used."""
        image = decode_image(payload, self.spec.image.resize_size, self.max_image_pixels)
        return eval_preprocess(image, self.spec.image)

    def classify(self, payloads: list[bytes], top_k: int, timeout: float) -> list[list[dict]]:
        """Raw image bytes -> ranked labels per image; BadImage names the first unusable one."""
        self._batcher.expect()  # while this request decodes, the batcher may wait for it
        try:
            images = []
            for i, payload in enumerate(payloads):
                try:
                    images.append(self.preprocess(payload))
                except ImageError as e:
                    raise BadImage(i, e) from None
        except BaseException:
            self._batcher.cancel()
            raise
        probabilities = self._batcher.submit(images).result(timeout=timeout)
        values, indices = probabilities.topk(min(top_k, len(self.classes)), dim=1)
        return [
            [
                {"label": self.classes[i].label, "index": i, "probability": round(p, 6)}
                for p, i in zip(row_p.tolist(), row_i.tolist())
            ]
            for row_p, row_i in zip(values, indices)
        ]
