"""The scikit-learn digits set: 1797 8x8 grey images that ship inside scikit-learn.

Because nothing needs downloading it is the embedded default, usable offline and in tests,
and small enough that a whole pruning schedule runs in seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from sklearn.datasets import load_digits

from .base import DatasetInfo, Splits, resolve_options
from .memory import InMemorySource, channel_stats
from .partition import stratified_split

#: Share of all images held out as the test split, before validation is carved out.
TEST_FRACTION = 0.2
_MAX_PIXEL = 16.0


def load_digits_splits(
    *,
    device: torch.device,
    root: str | None = None,
    download: bool = False,
    val_fraction: float,
    split_seed: int,
    options: Mapping[str, Any] | None,
) -> Splits:
    """Split digits into stratified test (20%), validation and train splits.

    The test split is drawn first and from ``split_seed`` alone, so it stays identical when
    ``val_fraction`` or any training setting changes. Pixels are scaled to [0, 1] and then
    standardised with the train split's statistics, the only split a model may learn from.
    """
    del root, download  # digits ship with scikit-learn: nothing to find on disk or fetch
    resolve_options("digits", options, {})
    bunch = load_digits()
    images = torch.from_numpy(bunch.images).to(torch.float32).div_(_MAX_PIXEL).unsqueeze(1)
    labels = torch.from_numpy(bunch.target).to(torch.int64)

    rest, test = stratified_split(bunch.target, TEST_FRACTION, split_seed, stream=0)
    train_pos, val_pos = stratified_split(bunch.target[rest], val_fraction, split_seed, stream=1)
    train, val = rest[train_pos], rest[val_pos]

    images = images.to(device)
    labels = labels.to(device)
    mean, std = channel_stats(images[torch.from_numpy(train).to(device)])

    def source(index: Any) -> InMemorySource:
        picked = torch.from_numpy(index).to(device)
        # Digits are not mirror-symmetric, so augmentation (if asked for) only shifts.
        return InMemorySource(
            images[picked], labels[picked], mean=mean, std=std, crop_padding=1, flip=False
        )

    return Splits(
        info=DatasetInfo(in_channels=1, image_size=8, num_classes=10),
        train=source(train),
        val=source(val),
        test=source(test),
        augment_default=False,
    )
