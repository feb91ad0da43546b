"""Channels in ImageFolder layout -> datasets of uint8 images, each decoded once up front."""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .config import CHANNEL_ALIASES, ConfigError
from .preprocess import ImageError, ImageSpec, decode_image, eval_preprocess, resize_shorter_side

log = logging.getLogger(__name__)

# "" too: extensionless files are tried (and counted when they do not decode), like cameras' .jfif.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ""}
MAC_METADATA = "__MACOSX"  # every zip made on a Mac has it, full of ._name resource forks
MAX_TRAINING_PIXELS = 178_956_970  # Pillow's own decompression-bomb limit
CACHE_MEMORY_FRACTION = 0.5  # at most this share of available RAM goes to the image cache
_NUMERIC_PREFIX = re.compile(r"^\d+[._\-\s]+")


@dataclass(frozen=True)
class ClassInfo:
    index: int
    folder: str
    label: str


def display_label(folder: str) -> str:
    """``001.Affenpinscher`` -> ``Affenpinscher``; ``American_water_spaniel`` -> ``American water spaniel``."""
    return _NUMERIC_PREFIX.sub("", folder).replace("_", " ").strip() or folder


def _hidden(part: str) -> bool:
    """Hidden files and folders (.ipynb_checkpoints, macOS's ._name) and Mac zip metadata."""
    return part.startswith(".") or part == MAC_METADATA


def scan_channel(name: str, root: Path) -> dict[str, list[Path]]:
    """Class folder (its name in Unicode NFC, which channels made on other systems may not use) -> its images."""
    if not root.is_dir():
        raise ConfigError(f"channel {name!r}: {root} is not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not _hidden(p.name))
    if not folders:
        raise ConfigError(
            f"channel {name!r} at {root} has no class folders; expected one folder per class "
            f"(e.g. {name}/001.Affenpinscher/image.jpg)"
        )
    check_not_dataset_root(name, root, folders)
    files, ignored = {}, 0
    for folder in folders:
        found = [p for p in folder.rglob("*") if p.is_file() and not any(map(_hidden, p.relative_to(folder).parts))]
        images = sorted(p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS)
        ignored += len(found) - len(images)
        files[unicodedata.normalize("NFC", folder.name)] = images
    if ignored:
        log.info("channel %r: %d files without an image extension ignored", name, ignored)
    return files


SPLIT_NAMES = {alias.lower() for split in ("train", "valid", "test") for alias in CHANNEL_ALIASES[split]}


def check_not_dataset_root(name: str, root: Path, folders: list[Path]) -> None:
    """Refuse a channel that holds a whole dataset (docs/training.md#channels-that-hold-a-whole-dataset)."""
    splits = sorted(p.name for p in folders if p.name.lower() in SPLIT_NAMES)
    children = {p.name: [k for k in p.iterdir() if not _hidden(k.name)] for p in folders}
    only_folders = all(kids and all(k.is_dir() for k in kids) for kids in children.values())
    inner = [{k.name for k in kids} for kids in children.values()]
    shared = sorted(set.intersection(*inner)) if only_folders and len(inner) > 1 else []
    if not splits and len(shared) < 2:
        return
    found = f"class folders named like splits ({', '.join(splits)})" if splits else (
        f"class folders that hold only folders, the same in each ({', '.join(shared[:5])}{', ...' if len(shared) > 5 else ''})")
    raise ConfigError(
        f"channel {name!r} at {root} looks like a whole dataset, not one folder per class: it has {found}; "
        f"pass each split as its own channel (train -> s3://.../train/, valid -> s3://.../valid/), "
        f"each holding the class folders (e.g. {name}/001.Affenpinscher/image.jpg)"
    )


def check_same_classes(scans: dict[str, dict[str, list[Path]]]) -> None:
    """Every channel must hold the same class folders as 'train'."""
    reference = set(scans["train"])
    problems = []
    for name, scan in scans.items():
        missing, extra = sorted(reference - set(scan)), sorted(set(scan) - reference)
        if missing or extra:
            parts = ([f"missing {missing}"] if missing else []) + ([f"not in train {extra}"] if extra else [])
            problems.append(f"channel {name!r}: " + "; ".join(parts))
    if problems:
        raise ConfigError("channels have different classes: " + " | ".join(problems))


def class_list(scan: dict[str, list[Path]]) -> list[ClassInfo]:
    if len(scan) < 2:
        raise ConfigError(f"a classifier needs at least 2 classes; the train channel has {len(scan)}: {sorted(scan)}")
    return [ClassInfo(i, folder, display_label(folder)) for i, folder in enumerate(sorted(scan))]


@dataclass
class Split:
    """One channel's usable images: paths, targets and, when cached, the decoded images."""

    name: str
    paths: list[Path]
    targets: list[int]
    images: list[torch.Tensor] | None
    skipped: int


def _estimated_bytes(count: int, side: int, square: bool) -> int:
    return count * 3 * side * (side if square else side * 4 // 3)


def should_cache(mode: str, scans: dict[str, dict[str, list[Path]]], spec: ImageSpec, processes: int = 1) -> bool:
    """Whether the decoded images fit in memory; ``processes`` on this machine each hold a copy."""
    if mode != "auto":
        return mode == "true"
    needed = sum(
        _estimated_bytes(sum(map(len, scan.values())), spec.resize_size, square=name != "train")
        for name, scan in scans.items()
    )
    budget = int(psutil.virtual_memory().available * CACHE_MEMORY_FRACTION) // processes
    log.info("image cache needs about %.2f GB of a %.2f GB budget", needed / 1e9, budget / 1e9)
    return needed <= budget


def loader_for(split_name: str, spec: ImageSpec) -> Callable[[Path], torch.Tensor]:
    """Path -> the uint8 image a split stores: train keeps the whole picture for random crops."""

    def load(path: Path) -> torch.Tensor:
        image = decode_image(path, spec.resize_size, MAX_TRAINING_PIXELS)
        if split_name == "train":
            return resize_shorter_side(image, spec.resize_size)
        return eval_preprocess(image, spec)

    return load


def load_split(
    name: str,
    scan: dict[str, list[Path]],
    classes: list[ClassInfo],
    spec: ImageSpec,
    cache: bool,
    threads: int,
) -> Split:
    """Decode every image once; skip and count the ones that fail; fail on an empty class."""
    load = loader_for(name, spec)
    files = [(path, c.index) for c in classes for path in scan[c.folder]]

    def decode(file: tuple[Path, int]) -> torch.Tensor | None:
        try:
            image = load(file[0])
        except ImageError as e:
            log.warning("channel %r: skipping %s: %s", name, file[0], e)
            return None
        return image if cache else torch.empty(0)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        decoded = list(pool.map(decode, files))

    kept = [(path, target, image) for (path, target), image in zip(files, decoded) if image is not None]
    counts = Counter(target for _, target, _ in kept)
    empty = [c.folder for c in classes if not counts[c.index]]
    if empty:
        raise ConfigError(f"channel {name!r}: class folder(s) with no readable images: {', '.join(empty)}")
    skipped = len(files) - len(kept)
    log.info(
        "channel %r: %d images in %d classes, %d unreadable skipped, %s",
        name, len(kept), len(classes), skipped, "cached in memory" if cache else "decoded each epoch",
    )
    paths, targets, images = (list(column) for column in zip(*kept))  # not empty: every class has an image
    return Split(name, paths, targets, images if cache else None, skipped)


def train_augmentation(spec: ImageSpec, min_scale: float, flip: bool) -> v2.Transform:
    steps: list[v2.Transform] = [v2.RandomResizedCrop(spec.image_size, scale=(min_scale, 1.0), antialias=True)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


class ImageDataset(Dataset):
    """(uint8 CHW image, class index) pairs from a Split, decoding from disk when not cached."""

    def __init__(self, split: Split, spec: ImageSpec, transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.split = split
        self.load = loader_for(split.name, spec)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        images = self.split.images
        image = images[index] if images is not None else self.load(self.split.paths[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.split.targets[index]
