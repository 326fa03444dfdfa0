"""A device-resident data source shared by every data set small enough to sit in memory.

Keeping the raw images on the training device and doing shuffling, augmentation and
normalisation there, one vectorised batch at a time, removes the host-side data loader from
the hot loop entirely: for CIFAR-sized data this is what keeps a GPU busy.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

_STATS_CHUNK = 4096


def channel_stats(images: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std of NCHW ``images``, in their raw units.

    Computed in chunks and two passes so a large uint8 set never has to exist as one float
    copy, and the variance avoids the cancellation of the one-pass formula.
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError("channel statistics need a non-empty NCHW tensor")
    channels = images.shape[1]
    count = images.shape[0] * images.shape[2] * images.shape[3]
    total = torch.zeros(channels, dtype=torch.float64, device=images.device)
    for chunk in images.split(_STATS_CHUNK):
        total += chunk.float().sum(dim=(0, 2, 3)).double()
    mean = total / count
    squares = torch.zeros(channels, dtype=torch.float64, device=images.device)
    centre = mean.float().view(1, channels, 1, 1)
    for chunk in images.split(_STATS_CHUNK):
        squares += (chunk.float() - centre).square().sum(dim=(0, 2, 3)).double()
    std = (squares / count).sqrt().clamp_min(eps)
    return mean.float(), std.float()


def random_crop_flip(
    images: torch.Tensor, generator: torch.Generator, *, padding: int, flip: bool
) -> torch.Tensor:
    """Randomly crop (after zero padding) and horizontally flip a whole batch at once.

    Each image gets its own offsets and flip, drawn from ``generator``; the crop and the
    flip are a single pair of ``gather`` calls with per-image row and column indices, so
    the cost does not grow with Python-level work per image.
    """
    b, c, h, w = images.shape
    device = images.device
    if padding > 0:
        images = F.pad(images, (padding, padding, padding, padding))
        span = 2 * padding + 1
        top = torch.randint(0, span, (b,), generator=generator, device=device)
        left = torch.randint(0, span, (b,), generator=generator, device=device)
    else:
        top = torch.zeros(b, dtype=torch.int64, device=device)
        left = torch.zeros(b, dtype=torch.int64, device=device)
    rows = top[:, None] + torch.arange(h, device=device)
    cols = left[:, None] + torch.arange(w, device=device)
    if flip:
        flipped = torch.rand(b, generator=generator, device=device) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    padded_w = images.shape[3]
    images = images.gather(2, rows[:, None, :, None].expand(b, c, h, padded_w))
    return images.gather(3, cols[:, None, None, :].expand(b, c, h, w))


class InMemorySource:
    """One split held as raw NCHW tensors on a device, normalised per batch.

    ``images`` may be any numeric dtype (uint8 for CIFAR keeps the set four times smaller);
    ``mean`` and ``std`` are per-channel and in the same raw units, normally the train
    split's statistics so every split is normalised identically. Augmentation is a random
    crop with ``crop_padding`` zero pixels each side and, if ``flip``, a random horizontal
    flip; it is only applied when ``batches(augment=True)`` asks for it.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        mean: torch.Tensor,
        std: torch.Tensor,
        crop_padding: int = 0,
        flip: bool = False,
    ) -> None:
        if images.ndim != 4:
            raise ValueError(f"images must be NCHW, got shape {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError("labels must be one per image")
        if labels.device != images.device:
            raise ValueError("images and labels must be on the same device")
        channels = images.shape[1]
        self.device = images.device
        self.num_examples = int(images.shape[0])
        self._images = images
        self._labels = labels.to(torch.int64)
        self._mean = mean.to(self.device, torch.float32).reshape(1, channels, 1, 1)
        self._std = std.to(self.device, torch.float32).reshape(1, channels, 1, 1)
        self._crop_padding = crop_padding
        self._flip = flip

    @property
    def stored_dtype(self) -> torch.dtype:
        """The dtype the split is kept in on its device (uint8 for CIFAR's raw pixels)."""
        return self._images.dtype

    def batches(
        self, batch_size: int, *, shuffle: bool, augment: bool, seed: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield normalised float32 batches; order and augmentation depend only on ``seed``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return self._iterate(batch_size, shuffle=shuffle, augment=augment, seed=seed)

    def _iterate(
        self, batch_size: int, *, shuffle: bool, augment: bool, seed: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed)
        order = (
            torch.randperm(self.num_examples, generator=generator, device=self.device)
            if shuffle
            else None
        )
        do_augment = augment and (self._crop_padding > 0 or self._flip)
        for start in range(0, self.num_examples, batch_size):
            if order is None:
                images = self._images[start : start + batch_size]
                labels = self._labels[start : start + batch_size]
            else:
                index = order[start : start + batch_size]
                images = self._images[index]
                labels = self._labels[index]
            inputs = images.float()
            if do_augment:
                inputs = random_crop_flip(
                    inputs, generator, padding=self._crop_padding, flip=self._flip
                )
            yield (inputs - self._mean) / self._std, labels
