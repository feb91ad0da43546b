"""The network, its ImageNet starting point, and the artifacts that carry it to the server."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from . import atomic
from .archs import ARCHS
from .config import ConfigError
from .data import ClassInfo
from .preprocess import ImageSpec

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.pt"
CLASSES_FILE = "classes.json"
SPEC_FILE = "model.json"
FORMAT_VERSION = 1


def imagenet_weights(arch: str) -> models.WeightsEnum:
    return models.get_weight(ARCHS[arch].weights)


def imagenet_weights_filename(arch: str) -> str:
    """The file torchvision downloads for the arch's ImageNet weights, e.g. resnet50-11ad3fa6.pth."""
    return os.path.basename(imagenet_weights(arch).url)


def eval_image_spec(arch: str, image_size: int) -> ImageSpec:
    """The evaluation resize (as a ratio to the crop) and interpolation the arch's ImageNet weights declare."""
    transform = imagenet_weights(arch).transforms()
    resize = round(image_size * transform.resize_size[0] / transform.crop_size[0])
    return ImageSpec(image_size, resize_size=resize, interpolation=transform.interpolation.value)


def _channel_weights(arch: str, pretrained_dir: Path) -> Path:
    filename = imagenet_weights_filename(arch)
    candidates = sorted(p for p in pretrained_dir.rglob("*") if p.suffix in (".pth", ".pt") and p.is_file())
    exact = [p for p in candidates if p.name == filename]
    if exact or len(candidates) == 1:
        return (exact or candidates)[0]
    raise ConfigError(f"channel 'pretrained' at {pretrained_dir} should hold {filename} (or exactly one .pth/.pt "
                      f"file); found {[p.name for p in candidates] or 'none'}")


def load_imagenet_weights(model: nn.Module, arch: str, pretrained_dir: Path | None) -> None:
    """Load ImageNet weights into all but the head: the 'pretrained' channel, else torch's hub cache or a download."""
    path = None if pretrained_dir is None else _channel_weights(arch, pretrained_dir)
    if path is not None:
        log.info("loading ImageNet weights for %s from %s", arch, path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # corrupt or truncated files raise many types
            raise ConfigError(f"the ImageNet weights file {path} is unreadable ({type(e).__name__}: {str(e)[:200]}); "
                              "replace it or set pretrained=false") from None
    else:
        weights = imagenet_weights(arch)
        filename = imagenet_weights_filename(arch)
        log.info("ImageNet weights for %s from torch's hub cache or %s", arch, weights.url)
        try:
            state = weights.get_state_dict(progress=False)
        except Exception as e:
            raise ConfigError(
                f"could not get ImageNet weights for {arch}: no 'pretrained' channel, no "
                f"{Path(torch.hub.get_dir()) / 'checkpoints' / filename}, and the download failed "
                f"({type(e).__name__}: {e}). Add a 'pretrained' channel holding {filename} or set pretrained=false."
            ) from None
    head = ARCHS[arch].head + "."
    try:  # the model keeps its own head, sized for the job's classes
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith(head)}
                              | {k: v for k, v in model.state_dict().items() if k.startswith(head)})
    except (RuntimeError, AttributeError) as e:
        raise ConfigError(f"the ImageNet weights in {path} do not fit {arch}: {str(e)[:300]}") from None


def build_model(arch: str, num_classes: int) -> nn.Module:
    """A torchvision classifier with a fresh head of ``num_classes`` outputs."""
    return models.get_model(arch, weights=None, num_classes=num_classes)


def create_model(
    arch: str, num_classes: int, pretrained: bool, pretrained_dir: Path | None, freeze_backbone: bool
) -> nn.Module:
    if freeze_backbone and not pretrained:
        raise ConfigError("freeze-backbone=true needs pretrained=true: a frozen random backbone cannot learn")
    model = build_model(arch, num_classes)
    if pretrained:
        load_imagenet_weights(model, arch, pretrained_dir)
    if freeze_backbone:
        for name, parameter in model.named_parameters():
            parameter.requires_grad = name.startswith(ARCHS[arch].head + ".")
    return model


@dataclass(frozen=True)
class ModelSpec:
    """Everything the server needs to rebuild and feed the model."""

    arch: str
    num_classes: int
    image: ImageSpec

    def to_json(self) -> dict:
        return {"arch": self.arch, "num_classes": self.num_classes, "format_version": FORMAT_VERSION,
                **asdict(self.image)}

    @classmethod
    def from_json(cls, raw: dict) -> ModelSpec:
        image = ImageSpec(raw["image_size"], tuple(raw["mean"]), tuple(raw["std"]), raw.get("resize_size", 0),
                          raw.get("interpolation", "bilinear"))
        return cls(raw["arch"], raw["num_classes"], image)


def save_artifacts(
    model_dir: Path, state_dict: dict[str, torch.Tensor], model_spec: ModelSpec, classes: list[ClassInfo], extra: dict
) -> None:
    cpu_state = {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}
    atomic.save_torch(model_dir / WEIGHTS_FILE, cpu_state)
    atomic.write_json(model_dir / CLASSES_FILE, [asdict(c) for c in classes])
    atomic.write_json(model_dir / SPEC_FILE, {**model_spec.to_json(), **extra})


def load_artifacts(model_dir: Path) -> tuple[nn.Module, ModelSpec, list[ClassInfo]]:
    """Rebuild the trained model on the CPU from ``save_artifacts``'s files (no pickle)."""
    missing = [f for f in (WEIGHTS_FILE, CLASSES_FILE, SPEC_FILE) if not (model_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{model_dir} lacks {', '.join(missing)}: is it the output of this image's train?")
    raw = json.loads((model_dir / SPEC_FILE).read_text())
    if raw.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{model_dir / SPEC_FILE} has format_version {raw.get('format_version')}, expected {FORMAT_VERSION}")
    model_spec = ModelSpec.from_json(raw)
    classes = [ClassInfo(**c) for c in json.loads((model_dir / CLASSES_FILE).read_text())]
    model = build_model(model_spec.arch, model_spec.num_classes)
    model.load_state_dict(torch.load(model_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return model, model_spec, classes
