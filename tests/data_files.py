"""Data sets on disk for tests, written to a temporary folder: nothing is downloaded."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets.cifar as tv_cifar
from PIL import Image


def accept_fake_cifar(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let torchvision read fake CIFAR files: they cannot match the official MD5 sums,
    so only their existence is checked."""
    # The replacement keeps check_integrity's signature, md5 included.
    monkeypatch.setattr(
        tv_cifar,
        "check_integrity",
        lambda path, md5=None: os.path.isfile(path),  # noqa: ARG005
    )


def write_fake_cifar10(root: Path, per_batch: int = 20, test_size: int = 20) -> np.ndarray:
    """Write a tiny CIFAR-10 folder in torchvision's pickle format; return the test labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def dump(name: str, count: int) -> np.ndarray:
        labels = np.arange(count) % 10
        data = rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8)
        with open(folder / name, "wb") as handle:
            pickle.dump({"batch_label": name, "data": data, "labels": labels.tolist()}, handle)
        return labels

    for i in range(1, 6):
        dump(f"data_batch_{i}", per_batch)
    test_labels = dump("test_batch", test_size)
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch}, handle)
    return test_labels


def write_image_tree(root: Path, train_per_class: int = 10, val_per_class: int = 3) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for label, (name, colour) in enumerate((("cat", (200, 30, 30)), ("dog", (30, 30, 200)))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(colour, 20, size=(12 + i % 3, 16, 3)), 0, 255)
                ext = "png" if (i + label) % 2 == 0 else "jpg"
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.{ext}")
