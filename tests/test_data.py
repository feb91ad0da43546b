"""Training's data in process: the decode-once image cache and its memory budget, skipped files,
and the dataset reading cached and uncached images alike."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from imgclf import data
from imgclf.config import ConfigError
from imgclf.data import ImageDataset, class_list, load_split, scan_channel, should_cache
from imgclf.preprocess import ImageSpec

SPEC = ImageSpec(32)  # resize to 37, crop 32


def channel(root: Path, sizes: dict[str, list[tuple[int, int]]]) -> Path:
    rng = np.random.default_rng(0)
    for folder, shapes in sizes.items():
        (root / folder).mkdir(parents=True)
        for i, (width, height) in enumerate(shapes):
            pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / folder / f"{i}.png")
    return root


def split(tmp_path: Path, name: str, cache: bool) -> data.Split:
    scan = scan_channel(name, tmp_path / name)
    return load_split(name, scan, class_list(scan), SPEC, cache, threads=2)


@pytest.fixture
def channels(tmp_path) -> Path:
    for name in ("train", "valid"):
        channel(tmp_path / name, {"001.a": [(80, 60), (50, 90)], "002.b": [(64, 64)]})
    (tmp_path / "train" / "002.b" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return tmp_path


def test_the_cache_keeps_each_split_in_the_shape_it_is_used(channels):
    train, valid = split(channels, "train", cache=True), split(channels, "valid", cache=True)
    # train keeps the whole picture (shorter side 37) for its random crops; valid keeps the centre crop
    assert [tuple(i.shape) for i in train.images] == [(3, 37, 49), (3, 66, 37), (3, 37, 37)]
    assert [tuple(i.shape) for i in valid.images] == [(3, 32, 32)] * 3
    assert all(i.dtype == torch.uint8 for i in train.images + valid.images)
    assert (train.targets, train.skipped, valid.skipped) == ([0, 0, 1], 1, 0)  # the broken file is counted


@pytest.mark.parametrize("name", ["train", "valid"])
def test_uncached_images_are_decoded_each_time_to_the_same_pixels(channels, name):
    cached, uncached = split(channels, name, cache=True), split(channels, name, cache=False)
    assert uncached.images is None and uncached.paths == cached.paths
    for (a, target_a), (b, target_b) in zip(ImageDataset(cached, SPEC), ImageDataset(uncached, SPEC)):
        assert torch.equal(a, b) and target_a == target_b


def test_a_class_left_without_readable_images_fails_naming_it(tmp_path):
    channel(tmp_path / "train", {"001.a": [(40, 40)], "002.b": []})
    (tmp_path / "train" / "002.b" / "x.png").write_bytes(b"truncated")
    with pytest.raises(ConfigError, match="class folder\\(s\\) with no readable images: 002.b"):
        split(tmp_path, "train", cache=True)


@pytest.mark.parametrize(("available", "processes", "expected"), [
    # estimated: 4 train files at 37x49 and 3 valid at 37x37, 3 bytes a pixel: 34,077 bytes
    (10**9, 1, True),
    (2 * 34_077, 1, True),
    (2 * 34_077 - 2, 1, False),
    (2 * 34_077, 4, False),  # four processes on the host split the budget
])
def test_auto_caching_fits_half_the_free_memory(monkeypatch, channels, available, processes, expected):
    monkeypatch.setattr(data.psutil, "virtual_memory", lambda: SimpleNamespace(available=available))
    scans = {name: scan_channel(name, channels / name) for name in ("train", "valid")}
    assert should_cache("auto", scans, SPEC, processes) is expected
    assert should_cache("true", scans, SPEC, processes) is True and should_cache("false", scans, SPEC) is False


@pytest.mark.parametrize("layout", [
    {"train/001.a": 1, "valid/001.a": 1},  # split names as classes
    {"part1/001.a": 1, "part1/002.b": 1, "part2/001.a": 1, "part2/002.b": 1},  # the classes one level down
])
def test_a_channel_holding_a_whole_dataset_is_refused(tmp_path, layout):
    for folder in layout:
        channel(tmp_path / "train" / folder, {"x": [(8, 8)]})
    with pytest.raises(ConfigError, match="looks like a whole dataset, not one folder per class"):
        scan_channel("train", tmp_path / "train")


def test_class_folders_grouping_their_images_in_sub_folders_are_classes(tmp_path):
    """cat/{indoor,outdoor}: only folders, but not the same two or more in each class."""
    for folder in ("cat/indoor", "cat/outdoor", "dog/indoor", "dog/park"):
        channel(tmp_path / "train" / folder, {"x": [(8, 8)]})
    assert sorted(scan_channel("train", tmp_path / "train")) == ["cat", "dog"]
