"""Batched augmentation on the device (augment-on=device): the same crops torchvision's
RandomResizedCrop draws, resampled like its antialiased resize."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from conftest import FAST, channels_of, run_job
from imgclf.augment import augment_batch, crop_boxes, pad_collate
from imgclf.preprocess import ImageSpec, normalize

CPU = torch.device("cpu")


def smooth_image(height: int, width: int) -> torch.Tensor:
    y, x = torch.linspace(0, 6, height).view(-1, 1), torch.linspace(0, 9, width).view(1, -1)
    image = torch.stack([y.sin() * x.cos(), (0.7 * x + y).sin(), (y * x / 10).cos()]) * 100 + 128
    return image.clamp(0, 255).to(torch.uint8)


def test_pad_collate_repeats_the_edges():
    images = [(smooth_image(5, 7), 3), (smooth_image(6, 4), 8)]
    batch, sizes, targets = pad_collate(images)
    assert batch.shape == (2, 3, 6, 7) and sizes.tolist() == [[5, 7], [6, 4]] and targets.tolist() == [3, 8]
    assert torch.equal(batch[0, :, :5, :], images[0][0]) and torch.equal(batch[0, :, 5], batch[0, :, 4])
    assert torch.equal(batch[1, :, :, 4:], batch[1, :, :, 3:4].expand(-1, -1, 3))


@pytest.mark.parametrize("min_scale", [0.08, 0.6])
def test_boxes_follow_random_resized_crop(min_scale):
    torch.manual_seed(0)
    sizes = torch.tensor([[256, 341], [256, 256], [384, 256]]).repeat(200, 1)
    x1, y1, x2, y2 = crop_boxes(sizes, min_scale).unbind(1)
    height, width = sizes[:, 0], sizes[:, 1]
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= width).all() and (y2 <= height).all()
    area = (x2 - x1) * (y2 - y1) / (height * width)
    ratio = (x2 - x1) / (y2 - y1)
    drawn = (area >= min_scale - 0.02) & (ratio > 0.74) & (ratio < 1.34)  # rounding to whole pixels
    assert drawn.float().mean() > 0.95  # the rest fell back to a central crop
    assert area.max() <= 1.0 and torch.equal(x1, x1.floor())


def test_crops_that_cannot_fit_fall_back_to_the_central_crop():
    boxes = crop_boxes(torch.tensor([[10, 200], [200, 10], [384, 256]]), 1.0)
    # no 3/4..4/3 box of the whole area fits: the widest (tallest) one in the middle, as torchvision does
    assert boxes.tolist() == [[93.0, 0.0, 106.0, 10.0], [0.0, 93.0, 10.0, 106.0], [0.0, 21.0, 256.0, 362.0]]


def test_crops_match_torchvisions_antialiased_resize():
    spec = ImageSpec(64)
    images = [(smooth_image(73, 97), 0), (smooth_image(80, 60), 1), (smooth_image(73, 150), 2)]
    batch, sizes, _ = pad_collate(images)
    for min_scale in (0.08, 1.0):
        torch.manual_seed(1)
        out = augment_batch(batch, sizes, spec, min_scale, False, CPU)
        torch.manual_seed(1)
        boxes = crop_boxes(sizes, min_scale).int().tolist()
        assert out.shape == (3, 3, 64, 64) and out.is_contiguous(memory_format=torch.channels_last)
        for (image, _), (x1, y1, x2, y2), got in zip(images, boxes, out):
            expected = normalize(F.resized_crop(image, y1, x1, y2 - y1, x2 - x1, [64, 64], antialias=True)[None], spec, CPU)
            assert (got - expected[0]).abs().mean() < 0.02


def test_flips_about_half():
    spec = ImageSpec(32)
    batch, sizes, _ = pad_collate([(smooth_image(40, 40), 0)] * 200)
    torch.manual_seed(2)
    plain = augment_batch(batch, sizes, spec, 1.0, False, CPU)
    torch.manual_seed(2)
    maybe_flipped = augment_batch(batch, sizes, spec, 1.0, True, CPU)
    flipped = [torch.allclose(m, p.flip(-1)) and not torch.allclose(m, p) for m, p in zip(maybe_flipped, plain)]
    assert 70 < sum(flipped) < 130


def test_training_with_augmentation_on_the_device(tmp_path, sample_data):
    code, output = run_job(tmp_path / "ml", channels_of(sample_data),
                           {**FAST, "epochs": "3", "augment-on": "device", "horizontal-flip": "true"})
    assert code == 0, output[-3000:]
    assert "augmentation on the device" in output
    accuracy = json.loads((tmp_path / "ml/output/data/metrics.json").read_text())["test"]["accuracy"]
    assert accuracy > 0.8
