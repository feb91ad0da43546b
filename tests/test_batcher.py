"""serve's Batcher directly (the only concurrency code): batching, ordering, errors, expect/cancel.
No timing assertions: a blocked model call or a long batch wait makes each case deterministic."""

from __future__ import annotations

import threading
from concurrent.futures import TimeoutError as FutureTimeout

import pytest
import torch

from imgclf.serving.predictor import Abandoned, Batcher, Ticket

WAIT = 10  # seconds: far above any scheduling delay, far below pytest's patience


def images(*values: int) -> list[torch.Tensor]:
    return [torch.full((3, 2, 2), v, dtype=torch.uint8) for v in values]


def rows(future) -> list[float]:
    return [row[0] for row in future.result(timeout=WAIT).tolist()]


class Model:
    """Records each batch's values; the first call blocks until ``release`` (so later requests queue up)."""

    def __init__(self, fail_on: int | None = None):
        self.batches: list[list[int]] = []
        self.entered, self.release = threading.Event(), threading.Event()
        self.fail_on = fail_on

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        values = batch[:, 0, 0, 0].tolist()
        self.batches.append(values)
        if len(self.batches) == 1:
            self.entered.set()
            assert self.release.wait(WAIT)
        if self.fail_on in values:
            raise RuntimeError(f"model failed on {self.fail_on}")
        return batch.float().flatten(1)[:, :2]


def test_queued_requests_are_batched_up_to_the_limit_each_getting_its_own_rows_in_order():
    model = Model()
    batcher = Batcher(model, max_batch=8, max_wait_ms=5)
    first = batcher.submit(images(1), expected=False)
    assert model.entered.wait(WAIT)  # a lone request runs at once, and now holds the model
    b, c, d = (batcher.submit(images(*values), expected=False) for values in ((2, 3), (4, 5, 6), (7, 8, 9, 10)))
    model.release.set()
    assert (rows(first), rows(b), rows(c), rows(d)) == ([1], [2, 3], [4, 5, 6], [7, 8, 9, 10])
    # b and c fit in 8 images together; d would make 9, so it starts the next batch
    assert model.batches == [[1], [2, 3, 4, 5, 6], [7, 8, 9, 10]]


def test_an_expected_request_joins_the_batch_and_a_cancelled_one_is_not_waited_for():
    model = Model()
    model.release.set()
    batcher = Batcher(model, max_batch=8, max_wait_ms=WAIT * 1000)
    batcher.expect()  # a request is decoding its images
    early = batcher.submit(images(1), expected=False)
    late = batcher.submit(images(2))  # the expected one: the batcher waited for it
    assert (rows(early), rows(late)) == ([1], [2]) and model.batches == [[1, 2]]

    batcher.expect()
    batcher.cancel()  # it failed to decode: nobody is on the way any more
    lone = batcher.submit(images(3), expected=False)
    assert lone.result(timeout=WAIT / 2)[0].tolist() == [3.0, 3.0]  # not held for the WAIT-long batch wait
    assert model.batches[-1] == [3]


def test_a_forgotten_cancel_would_hold_a_lone_request_for_the_whole_wait():
    """The other side of the case above: without cancel the batcher waits (so the test above can fail)."""
    model = Model()
    model.release.set()
    batcher = Batcher(model, max_batch=8, max_wait_ms=WAIT * 1000)
    batcher.expect()
    held = batcher.submit(images(1), expected=False)
    with pytest.raises(FutureTimeout):
        held.result(timeout=0.5)
    batcher.submit(images(2))  # the expected request arrives: both run
    assert rows(held) == [1] and model.batches == [[1, 2]]


def test_a_model_error_reaches_every_request_of_its_batch_and_the_next_batch_runs():
    model = Model(fail_on=3)
    batcher = Batcher(model, max_batch=8, max_wait_ms=5)
    first = batcher.submit(images(1), expected=False)
    assert model.entered.wait(WAIT)
    failing = [batcher.submit(images(*values), expected=False) for values in ((2,), (3, 4))]
    model.release.set()
    assert rows(first) == [1]
    for future in failing:
        with pytest.raises(RuntimeError, match="model failed on 3"):
            future.result(timeout=WAIT)
    assert rows(batcher.submit(images(5), expected=False)) == [5]


def test_a_request_larger_than_a_batch_runs_in_chunks_and_stops_when_abandoned():
    """The deadline is checked before every chunk: a dropped request frees the model at once."""
    model = Model()
    batcher = Batcher(model, max_batch=2, max_wait_ms=5)
    gone = threading.Event()
    big = batcher.submit(images(*range(1, 11)), Ticket(client_gone=gone.is_set), expected=False)
    assert model.entered.wait(WAIT)  # the first chunk holds the model
    gone.set()
    model.release.set()
    with pytest.raises(Abandoned, match="client closed"):
        big.result(timeout=WAIT)
    assert rows(batcher.submit(images(20, 21, 22), expected=False)) == [20, 21, 22]
    assert model.batches == [[1, 2], [20, 21], [22]]
