"""Training augmentation a batch at a time on the training device (docs/training.md#how-it-trains-fast)."""

from __future__ import annotations

import math

import torch
from torchvision.ops import roi_align

from .preprocess import ImageSpec, normalize

RATIO = (3 / 4, 4 / 3)
TRIES = 10


def pad_collate(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 CHW images -> (one batch edge-padded, so a crop's border samples only the image, their sizes, targets)."""
    sizes = torch.tensor([image.shape[1:] for image, _ in batch])
    height, width = sizes.max(0).values.tolist()
    out = torch.empty(len(batch), 3, height, width, dtype=torch.uint8)
    for i, (image, _) in enumerate(batch):
        h, w = image.shape[1:]
        out[i, :, :h, :w] = image
        out[i, :, :h, w:] = image[:, :, w - 1 :]
        out[i, :, h:, :] = out[i, :, h - 1 : h, :]
    return out, sizes, torch.tensor([target for _, target in batch])


def crop_boxes(sizes: torch.Tensor, min_scale: float) -> torch.Tensor:
    """torchvision's RandomResizedCrop boxes (x1 y1 x2 y2) for images of (height, width) ``sizes``."""
    n = len(sizes)
    height, width = sizes[:, 0].double(), sizes[:, 1].double()
    area = (height * width).unsqueeze(1) * torch.empty(n, TRIES, dtype=torch.float64).uniform_(min_scale, 1.0)
    ratio = torch.empty(n, TRIES, dtype=torch.float64).uniform_(math.log(RATIO[0]), math.log(RATIO[1])).exp()
    w, h = (area * ratio).sqrt().round(), (area / ratio).sqrt().round()
    fits = (w > 0) & (h > 0) & (w <= width.unsqueeze(1)) & (h <= height.unsqueeze(1))
    first = fits.double().argmax(1)  # the first draw that fits (0 when none does)
    w, h = w.gather(1, first[:, None]).squeeze(1), h.gather(1, first[:, None]).squeeze(1)
    top = (torch.rand(n, dtype=torch.float64) * (height - h + 1)).floor()
    left = (torch.rand(n, dtype=torch.float64) * (width - w + 1)).floor()

    found = fits.any(1)
    in_ratio = width / height
    fallback_w = torch.where(in_ratio > RATIO[1], (height * RATIO[1]).round(), width)
    fallback_h = torch.where(in_ratio < RATIO[0], (width / RATIO[0]).round(), height)
    w, h = torch.where(found, w, fallback_w), torch.where(found, h, fallback_h)
    top = torch.where(found, top, ((height - h) / 2).floor())
    left = torch.where(found, left, ((width - w) / 2).floor())
    return torch.stack([left, top, left + w, top + h], 1).float()


def augment_batch(
    images: torch.Tensor, sizes: torch.Tensor, spec: ImageSpec, min_scale: float, flip: bool, device: torch.device
) -> torch.Tensor:
    """Padded uint8 batch -> normalized, cropped, resized (and flipped) float batch on ``device``."""
    batch = normalize(images, spec, device)
    boxes = crop_boxes(sizes, min_scale)
    rois = torch.cat([torch.arange(len(boxes), dtype=torch.float32).unsqueeze(1), boxes], 1).to(device, non_blocking=True)
    out = roi_align(batch, rois, output_size=spec.image_size, spatial_scale=1.0, sampling_ratio=0, aligned=True)
    if flip:
        flipped = (torch.rand(len(boxes)) < 0.5).to(device, non_blocking=True).view(-1, 1, 1, 1)
        out = torch.where(flipped, out.flip(-1), out)
    return out.contiguous(memory_format=torch.channels_last)
