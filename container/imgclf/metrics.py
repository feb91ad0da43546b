"""Metric log lines and the regexes SageMaker uses to read them back.

One line per split per epoch, then the kept model's valid and test lines last (a tuner ranks a
trial by the last value of its objective), e.g.::

    epoch=2/3 train_loss=0.8123 train_accuracy=0.7542 train_seconds=41.2 train_images_per_sec=162.1
    epoch=2/3 valid_loss=0.6633 valid_accuracy=0.8012 valid_seconds=3.9 valid_images_per_sec=214.0
    final epoch=2 valid_loss=0.6633 valid_accuracy=0.8012 valid_seconds=3.9 valid_images_per_sec=214.0
    final epoch=2 test_loss=0.679 test_accuracy=0.7981 test_seconds=4.0 test_images_per_sec=209.0

``METRIC_DEFINITIONS`` is what an Estimator's ``metric_definitions`` takes, and the tuner's
objective is ``OBJECTIVE_METRIC``.
"""

from __future__ import annotations

import math

SPLITS = ("train", "valid", "test")
FIELDS = ("loss", "accuracy", "seconds", "images_per_sec")
NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

METRIC_DEFINITIONS = [
    {"Name": f"{split}:{field}", "Regex": f"{split}_{field}={NUMBER}"} for split in SPLITS for field in FIELDS
]
OBJECTIVE_METRIC = "valid:accuracy"
OBJECTIVE_TYPE = "Maximize"


def metric_line(prefix: str, split: str, values: dict[str, float]) -> str:
    def number(value: float) -> str:
        return f"{value:.6g}" if math.isfinite(value) else str(value)

    return prefix + " " + " ".join(f"{split}_{field}={number(values[field])}" for field in FIELDS)
