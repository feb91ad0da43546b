"""Metric log lines (docs/training.md: metrics) and the regexes SageMaker reads them back with."""

from __future__ import annotations

SPLITS = ("train", "valid", "test")
FIELDS = ("loss", "accuracy", "seconds", "images_per_sec")
NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

METRIC_DEFINITIONS = [
    {"Name": f"{split}:{field}", "Regex": f"{split}_{field}={NUMBER}"} for split in SPLITS for field in FIELDS
]
OBJECTIVE_METRIC = "valid:accuracy"
OBJECTIVE_TYPE = "Maximize"


def metric_line(prefix: str, split: str, values: dict[str, float]) -> str:
    return prefix + " " + " ".join(f"{split}_{field}={values[field]:.6g}" for field in FIELDS)
