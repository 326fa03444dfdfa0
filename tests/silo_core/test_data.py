"""Behavioural tests of the data-set registry (all offline: fake data is written to tmp)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from data_files import accept_fake_cifar, write_fake_cifar10, write_image_tree
from sklearn.datasets import load_digits

from silo_core.data import (
    DatasetInfo,
    DatasetNotFoundError,
    DataSource,
    Splits,
    UnknownDatasetError,
    load_dataset,
)
from silo_core.data.memory import random_crop_flip
from silo_core.plugins import DATASETS

CPU = torch.device("cpu")


def collect(source: DataSource, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate a whole epoch of a split."""
    options = {"shuffle": False, "augment": False, "seed": 0, **kwargs}
    batch_size = options.pop("batch_size", 10_000)
    pairs = list(source.batches(batch_size, **options))
    return torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs])


def digits_pixels(splits: Splits) -> dict[str, torch.Tensor]:
    """Recover the raw 0..16 pixel values of every digits split.

    Normalisation is one increasing affine map shared by all splits, so the k-th distinct
    normalised value is raw pixel value k; this identifies images without internals.
    """
    parts = {name: collect(getattr(splits, name))[0] for name in ("train", "val", "test")}
    values, codes = torch.unique(torch.cat(list(parts.values())), return_inverse=True)
    assert values.numel() == 17
    out, start = {}, 0
    for name, tensor in parts.items():
        out[name] = codes[start : start + tensor.shape[0]].reshape(-1, 8, 8)
        start += tensor.shape[0]
    return out


def as_multiset(images: torch.Tensor) -> Counter:
    return Counter(bytes(row) for row in images.to(torch.uint8).reshape(len(images), -1).numpy())


# --------------------------------------------------------------------------- digits


def test_digits_sizes_disjoint_and_cover_all_images():
    splits = load_dataset("digits", device=CPU, val_fraction=0.1, split_seed=0)
    assert splits.info == DatasetInfo(in_channels=1, image_size=8, num_classes=10)
    assert splits.augment_default is False
    sizes = [splits.train.num_examples, splits.val.num_examples, splits.test.num_examples]
    assert sizes == [1294, 144, 359]  # 20% of 1797 to test, then 10% of the rest to val
    assert sum(sizes) == 1797

    pixels = digits_pixels(splits)
    assert [len(pixels[n]) for n in ("train", "val", "test")] == sizes
    union = as_multiset(pixels["train"]) + as_multiset(pixels["val"]) + as_multiset(pixels["test"])
    assert union == as_multiset(torch.from_numpy(load_digits().images.astype(np.int64)))


def test_digits_test_split_is_stratified():
    splits = load_dataset("digits", device=CPU)
    _, labels = collect(splits.test)
    counts = torch.bincount(labels, minlength=10)
    full = np.bincount(load_digits().target, minlength=10)
    assert torch.all((counts - torch.from_numpy(full) * 0.2).abs() <= 1)


def test_digits_split_reproducible_from_split_seed_and_differs_for_another():
    first = digits_pixels(load_dataset("digits", device=CPU, split_seed=3))
    again = digits_pixels(load_dataset("digits", device=CPU, split_seed=3))
    other = digits_pixels(load_dataset("digits", device=CPU, split_seed=4))
    for name in ("train", "val", "test"):
        assert torch.equal(first[name], again[name])
    assert not torch.equal(first["test"], other["test"])
    assert not torch.equal(first["train"], other["train"])


def test_digits_test_split_identical_whatever_else_changes():
    base = load_dataset("digits", device=CPU, val_fraction=0.1, split_seed=5)
    changed = load_dataset("digits", device=CPU, val_fraction=0.3, split_seed=5)
    assert changed.val.num_examples > base.val.num_examples
    assert torch.equal(digits_pixels(base)["test"], digits_pixels(changed)["test"])
    # The stored order of the test split ignores the (training) seed of batches().
    _, labels_a = collect(base.test, seed=1)
    _, labels_b = collect(base.test, seed=99)
    assert torch.equal(labels_a, labels_b)


def test_batches_order_is_a_pure_function_of_seed():
    train = load_dataset("digits", device=CPU).train
    assert isinstance(train, DataSource)
    run = lambda seed: list(train.batches(100, shuffle=True, augment=True, seed=seed))  # noqa: E731
    first, again, other = run(7), run(7), run(8)
    assert len(first) == len(again)
    for (xa, ya), (xb, yb) in zip(first, again, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in other]))
    # Shuffling permutes the stored examples: same label multiset as the stored order.
    _, stored = collect(train)
    assert torch.equal(torch.cat([y for _, y in first]).sort().values, stored.sort().values)


def test_batches_keep_last_partial_batch_and_types():
    train = load_dataset("digits", device=CPU).train
    batches = list(train.batches(100, shuffle=False, augment=False, seed=0))
    assert [len(y) for _, y in batches] == [100] * 12 + [94]
    x, y = batches[-1]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (94, 1, 8, 8)
    inputs, _ = collect(train)
    assert abs(float(inputs.mean())) < 1e-4
    assert abs(float(inputs.std()) - 1.0) < 1e-2


def test_batch_size_must_be_positive():
    train = load_dataset("digits", device=CPU).train
    with pytest.raises(ValueError, match="batch_size"):
        train.batches(0, shuffle=False, augment=False, seed=0)  # raises before iterating


def test_val_fraction_zero_gives_empty_val_split():
    splits = load_dataset("digits", device=CPU, val_fraction=0.0)
    assert splits.val.num_examples == 0
    assert list(splits.val.batches(8, shuffle=True, augment=False, seed=0)) == []
    assert splits.train.num_examples == 1797 - 359


# --------------------------------------------------------------------------- augmentation


def test_random_crop_flip_is_a_window_of_the_padded_image_or_its_mirror():
    generator = torch.Generator().manual_seed(0)
    images = torch.arange(6 * 2 * 5 * 5, dtype=torch.float32).reshape(6, 2, 5, 5) + 1
    out = random_crop_flip(images, generator, padding=2, flip=True)
    assert out.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(len(images)):
        windows = [
            padded[i, :, top : top + 5, left : left + 5] for top in range(5) for left in range(5)
        ]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)


def test_flip_only_mirrors_some_images_and_keeps_others():
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(64, 3, 4, 4)
    out = random_crop_flip(images, generator, padding=0, flip=True)
    same = [torch.equal(out[i], images[i]) for i in range(64)]
    mirrored = [torch.equal(out[i], images[i].flip(-1)) for i in range(64)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 10 < sum(mirrored) < 54


# --------------------------------------------------------------------------- CIFAR


@pytest.fixture
def fake_cifar_root(tmp_path, monkeypatch) -> tuple[Path, np.ndarray]:
    accept_fake_cifar(monkeypatch)
    return tmp_path, write_fake_cifar10(tmp_path)


def test_fake_cifar10_folder_loads_with_right_shapes_and_classes(fake_cifar_root):
    root, test_labels = fake_cifar_root
    splits = load_dataset("cifar10", device=CPU, root=str(root), val_fraction=0.1)
    assert splits.info == DatasetInfo(in_channels=3, image_size=32, num_classes=10)
    assert splits.augment_default is True
    assert (splits.train.num_examples, splits.val.num_examples) == (90, 10)
    assert splits.test.num_examples == 20

    _, val_labels = collect(splits.val)
    assert sorted(val_labels.tolist()) == list(range(10))  # stratified: one per class
    test_inputs, labels = collect(splits.test)
    assert test_inputs.shape == (20, 3, 32, 32) and test_inputs.dtype == torch.float32
    assert labels.tolist() == test_labels.tolist()  # official test set, stored order
    train_inputs, _ = collect(splits.train)
    assert train_inputs.mean(dim=(0, 2, 3)).abs().max() < 1e-4  # per-channel normalised


def test_augmentation_changes_cifar_pixels_but_keeps_shapes(fake_cifar_root):
    root, _ = fake_cifar_root
    train = load_dataset("cifar10", device=CPU, root=str(root)).train
    plain_x, plain_y = collect(train, batch_size=32, seed=3)
    aug_x, aug_y = collect(train, batch_size=32, seed=3, augment=True)
    again_x, _ = collect(train, batch_size=32, seed=3, augment=True)
    assert aug_x.shape == plain_x.shape and aug_x.dtype == torch.float32
    assert torch.equal(aug_y, plain_y)
    changed = (aug_x != plain_x).flatten(1).any(dim=1)
    assert changed.float().mean() > 0.8  # 1/50 of crops are identity and unflipped
    assert torch.equal(aug_x, again_x)


def test_missing_cifar_folder_error_names_the_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", device=CPU, root=str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "download" in message and "root" in message
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(DatasetNotFoundError, match="cifar-100-python"):
        load_dataset("cifar100", device=CPU, root=str(tmp_path))


def test_incomplete_cifar_folder_is_reported_as_not_found(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DatasetNotFoundError, match="incomplete or corrupt"):
        load_dataset("cifar10", device=CPU, root=str(tmp_path))


# --------------------------------------------------------------------------- imagefolder


def test_imagefolder_tiny_tree_loads(tmp_path):
    write_image_tree(tmp_path)
    options = {"image_size": 8, "workers": 0}
    splits = load_dataset(
        "imagefolder", device=CPU, root=str(tmp_path), val_fraction=0.2, options=options
    )
    assert splits.info == DatasetInfo(in_channels=3, image_size=8, num_classes=2)
    assert splits.augment_default is True
    sizes = (splits.train.num_examples, splits.val.num_examples, splits.test.num_examples)
    assert sizes == (16, 4, 6)

    batches = list(splits.train.batches(5, shuffle=True, augment=True, seed=1))
    assert [len(y) for _, y in batches] == [5, 5, 5, 1]
    x, y = batches[0]
    assert x.shape == (5, 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    again = list(splits.train.batches(5, shuffle=True, augment=True, seed=1))
    for (xa, ya), (xb, yb) in zip(batches, again, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    _, other = collect(splits.train, batch_size=16, shuffle=True, seed=2)
    _, plain = collect(splits.train, batch_size=16)
    assert not torch.equal(torch.cat([y for _, y in batches]), other)
    assert plain.tolist() == sorted(plain.tolist())  # stored order: class folders in order

    test_x, test_y = collect(splits.test, batch_size=4)
    assert test_x.shape == (6, 3, 8, 8)
    assert test_y.tolist() == [0, 0, 0, 1, 1, 1]
    # Red cats vs blue dogs: the ImageNet-normalised red channel separates them.
    assert float(test_x[:3, 0].mean()) > float(test_x[3:, 0].mean())


def test_imagefolder_with_persistent_workers_replays_epochs(tmp_path):
    write_image_tree(tmp_path, train_per_class=4, val_per_class=1)
    splits = load_dataset(
        "imagefolder", device=CPU, root=str(tmp_path), options={"image_size": 8, "workers": 2}
    )
    first = collect(splits.train, batch_size=3, shuffle=True, augment=True, seed=4)
    _ = collect(splits.train, batch_size=3, shuffle=True, augment=True, seed=5)
    replay = collect(splits.train, batch_size=3, shuffle=True, augment=True, seed=4)
    assert torch.equal(first[0], replay[0]) and torch.equal(first[1], replay[1])
    # Augmentation is seeded per image, so the worker count does not change the batches.
    in_process = load_dataset(
        "imagefolder", device=CPU, root=str(tmp_path), options={"image_size": 8, "workers": 0}
    )
    single = collect(in_process.train, batch_size=3, shuffle=True, augment=True, seed=4)
    assert torch.equal(first[0], single[0]) and torch.equal(first[1], single[1])


def test_missing_imagefolder_error_names_the_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("imagefolder", device=CPU, root=str(tmp_path))
    assert str(tmp_path / "train") in str(info.value)


# --------------------------------------------------------------------------- registry


def test_unknown_dataset_error_lists_allowed_names():
    with pytest.raises(UnknownDatasetError) as info:
        load_dataset("mnist", device=CPU)
    assert "mnist" in str(info.value)
    for name in DATASETS.names():
        assert name in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_option_error_names_key_and_allowed_keys():
    with pytest.raises(ValueError) as info:
        load_dataset("synthetic", device=CPU, options={"num_trian": 10})
    message = str(info.value)
    assert "num_trian" in message
    for key in ("num_train", "num_test", "channels", "image_size", "num_classes"):
        assert key in message
    with pytest.raises(ValueError, match=r"'workerz'.*image_size, workers"):
        load_dataset("imagefolder", device=CPU, options={"workerz": 1})
    with pytest.raises(ValueError, match="'anything'"):
        load_dataset("digits", device=CPU, options={"anything": 1})


def test_bad_val_fraction_is_rejected():
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("digits", device=CPU, val_fraction=1.0)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_shapes_and_reproducibility():
    options = {"num_train": 200, "num_test": 50, "channels": 2, "image_size": 12, "num_classes": 5}
    splits = load_dataset("synthetic", device=CPU, split_seed=1, options=options)
    assert splits.info == DatasetInfo(in_channels=2, image_size=12, num_classes=5)
    assert (splits.train.num_examples, splits.val.num_examples) == (180, 20)
    assert splits.test.num_examples == 50
    again = load_dataset("synthetic", device=CPU, split_seed=1, options=options)
    other = load_dataset("synthetic", device=CPU, split_seed=2, options=options)
    assert torch.equal(collect(splits.test)[0], collect(again.test)[0])
    assert not torch.equal(collect(splits.test)[0], collect(other.test)[0])


def test_synthetic_is_learnable_by_nearest_class_mean():
    options = {"num_train": 1000, "num_test": 500, "image_size": 16}
    splits = load_dataset("synthetic", device=CPU, options=options)
    train_x, train_y = collect(splits.train)
    test_x, test_y = collect(splits.test)
    means = torch.stack([train_x[train_y == c].mean(dim=0) for c in range(10)]).flatten(1)
    predicted = torch.cdist(test_x.flatten(1), means).argmin(dim=1)
    accuracy = float((predicted == test_y).float().mean())
    assert accuracy > 0.9  # chance is 0.1
    # Not trivially separable per pixel: single images are noisy around their template.
    assert float((test_x.flatten(1) - means[test_y]).std()) > 0.3
