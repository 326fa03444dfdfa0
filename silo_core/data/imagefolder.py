"""Image trees on disk (ImageNet layout), read through a multi-worker DataLoader.

Layout: ``root/train/<class>/*`` and ``root/val/<class>/*``. The official ``val`` folder
serves as the test split; our validation split is carved from ``train``.

Reproducibility with persistent workers needs care: a worker's RNG lives on between epochs,
so augmentation drawn from it would depend on history. Instead every request sent to a
worker carries the epoch seed, and each image's crop and flip come from a private generator
seeded with (epoch seed, image position); the order is drawn in the main process from a
generator seeded with the epoch seed. The result is a pure function of the seed, whatever
the number of workers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder

from .base import (
    DatasetInfo,
    DatasetNotFoundError,
    Splits,
    missing_data_message,
    positive_int_option,
    resolve_options,
    resolve_root,
)
from .partition import stratified_split

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Resize-then-centre-crop ratio used for evaluation (the usual 256 -> 224).
EVAL_RESIZE_RATIO = 256 / 224
_CROP_SCALE = (0.08, 1.0)
_CROP_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))
_MASK64 = (1 << 64) - 1

Request = tuple[int, int, bool]  # (position in split, epoch seed, augment)


def default_options() -> dict[str, Any]:
    """Defaults for ``imagefolder``; a function because the worker count depends on the host."""
    return {"image_size": 224, "workers": min(8, os.cpu_count() or 1)}


def _mix_seed(seed: int, position: int) -> int:
    """Decorrelate per-image seeds (splitmix64 finaliser) so neighbouring images differ."""
    z = (seed * 0x9E3779B97F4A7C15 + position + 1) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def random_resized_box(
    width: int, height: int, generator: torch.Generator
) -> tuple[int, int, int, int]:
    """Pick a random-resized-crop box ``(top, left, height, width)`` from ``generator``.

    Same distribution as the usual Inception-style crop (8-100% of the area, aspect ratio
    3/4 to 4/3), but drawn from an explicit generator instead of the global RNG.
    """
    area = width * height
    for _ in range(10):
        target = area * _uniform(generator, *_CROP_SCALE)
        aspect = math.exp(_uniform(generator, *_CROP_LOG_RATIO))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            return top, left, h, w
    ratio = width / height
    if ratio < 3 / 4:
        w, h = width, round(width / (3 / 4))
    elif ratio > 4 / 3:
        w, h = round(height * (4 / 3)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class _ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """Decodes and transforms one image per request; requests carry their own seed."""

    def __init__(
        self, samples: list[tuple[str, int]], loader: Callable[[str], Any], image_size: int
    ) -> None:
        self.samples = samples
        self.loader = loader
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, request: Request) -> tuple[torch.Tensor, int]:
        position, seed, augment = request
        path, target = self.samples[position]
        image: Image.Image = self.loader(path)
        size = self.image_size
        if augment:
            generator = torch.Generator().manual_seed(_mix_seed(seed, position))
            top, left, h, w = random_resized_box(image.width, image.height, generator)
            image = TF.resized_crop(image, top, left, h, w, [size, size], antialias=True)
            if float(torch.rand((), generator=generator)) < 0.5:
                image = TF.hflip(image)
        else:
            image = TF.resize(image, round(size * EVAL_RESIZE_RATIO), antialias=True)
            image = TF.center_crop(image, [size, size])
        tensor = TF.to_tensor(image)
        return TF.normalize(tensor, IMAGENET_MEAN, IMAGENET_STD), target


class _EpochBatchSampler:
    """Yields the batches of requests planned for the current epoch.

    ``plan`` replaces the list rather than mutating it, so an iterator already handed out
    keeps the plan it started with.
    """

    def __init__(self) -> None:
        self._plan: list[list[Request]] = []

    def plan(self, order: list[int], batch_size: int, seed: int, augment: bool) -> None:
        self._plan = [
            [(position, seed, augment) for position in order[start : start + batch_size]]
            for start in range(0, len(order), batch_size)
        ]

    def __iter__(self) -> Iterator[list[Request]]:
        return iter(self._plan)

    def __len__(self) -> int:
        return len(self._plan)


class LoaderSource:
    """A split of an image tree, streamed from disk by a DataLoader and moved to ``device``.

    The loader (and its persistent workers) is created on first use, so splits that are
    never iterated cost no processes.
    """

    def __init__(
        self,
        samples: list[tuple[str, int]],
        loader: Callable[[str], Any],
        *,
        image_size: int,
        workers: int,
        device: torch.device,
    ) -> None:
        self.num_examples = len(samples)
        self.device = device
        self._dataset = _ImageDataset(samples, loader, image_size)
        self._workers = workers
        self._pin = device.type == "cuda"
        self._sampler = _EpochBatchSampler()
        self._loader: DataLoader[tuple[torch.Tensor, int]] | None = None

    def _data_loader(self) -> DataLoader[tuple[torch.Tensor, int]]:
        if self._loader is None:
            self._loader = DataLoader(
                self._dataset,
                batch_sampler=self._sampler,
                num_workers=self._workers,
                pin_memory=self._pin,
                persistent_workers=self._workers > 0,
            )
        return self._loader

    def batches(
        self, batch_size: int, *, shuffle: bool, augment: bool, seed: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield normalised batches on the device; order and crops depend only on ``seed``.

        One epoch at a time per split: the workers are shared, so starting a new epoch
        abandons any unfinished one.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if self.num_examples == 0:
            return iter(())
        return self._iterate(batch_size, shuffle=shuffle, augment=augment, seed=seed)

    def _iterate(
        self, batch_size: int, *, shuffle: bool, augment: bool, seed: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if shuffle:
            generator = torch.Generator().manual_seed(seed)
            order = torch.randperm(self.num_examples, generator=generator).tolist()
        else:
            order = list(range(self.num_examples))
        # Plan and start the epoch together, so generators created but not yet started
        # cannot overwrite each other's plan.
        self._sampler.plan(order, batch_size, seed, augment)
        for inputs, labels in iter(self._data_loader()):
            yield (
                inputs.to(self.device, non_blocking=self._pin),
                labels.to(self.device, torch.int64, non_blocking=self._pin),
            )


def _scan(name: str, folder: Path) -> ImageFolder:
    if not folder.is_dir():
        raise DatasetNotFoundError(missing_data_message(name, folder, can_download=False))
    try:
        return ImageFolder(str(folder))
    except FileNotFoundError as error:
        raise DatasetNotFoundError(
            f"{missing_data_message(name, folder, can_download=False)} ({error})"
        ) from error


def load_imagefolder_splits(
    *,
    device: torch.device,
    root: str | None,
    download: bool = False,
    val_fraction: float,
    split_seed: int,
    options: Mapping[str, Any] | None,
) -> Splits:
    """Index ``root/train`` and ``root/val``; validation is a stratified slice of train."""
    del download  # a tree on shared storage: there is nothing to fetch it from
    opts = resolve_options("imagefolder", options, default_options())
    image_size = positive_int_option("imagefolder", "image_size", opts["image_size"])
    workers = positive_int_option("imagefolder", "workers", opts["workers"], minimum=0)
    tree = resolve_root(root) if root is not None else resolve_root(None) / "imagefolder"

    train_tree = _scan("imagefolder", tree / "train")
    test_tree = _scan("imagefolder", tree / "val")
    unknown = sorted(set(test_tree.classes) - set(train_tree.classes))
    if unknown:
        raise ValueError(f"classes {unknown} appear in {tree / 'val'} but not in {tree / 'train'}")
    # Label ids come from the train tree so a val folder missing a class still lines up.
    remap = [train_tree.class_to_idx[name] for name in test_tree.classes]
    test_samples = [(path, remap[target]) for path, target in test_tree.samples]

    targets = np.asarray(train_tree.targets, dtype=np.int64)
    train_idx, val_idx = stratified_split(targets, val_fraction, split_seed)

    def source(samples: list[tuple[str, int]]) -> LoaderSource:
        return LoaderSource(
            samples, train_tree.loader, image_size=image_size, workers=workers, device=device
        )

    return Splits(
        info=DatasetInfo(in_channels=3, image_size=image_size, num_classes=len(train_tree.classes)),
        train=source([train_tree.samples[i] for i in train_idx]),
        val=source([train_tree.samples[i] for i in val_idx]),
        test=source(test_samples),
        augment_default=True,
    )
