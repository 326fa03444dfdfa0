"""Shared types of the data-set registry.

Every data set, however it is stored, reaches the training engine through the same small
surface: a :class:`Splits` holding a :class:`DatasetInfo` and three :class:`DataSource`
splits. Keeping that surface tiny lets the engine stay ignorant of where pixels come from.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

#: Environment variable naming the folder that holds downloaded or hand-copied data sets.
DATA_DIR_ENV = "SILO_DATA_DIR"


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know to be built for a data set."""

    in_channels: int
    image_size: int
    num_classes: int


@runtime_checkable
class DataSource(Protocol):
    """One split of a data set.

    ``batches`` must be a pure function of its arguments (``seed`` in particular), so an
    interrupted epoch can be replayed exactly after a restart.
    """

    num_examples: int

    def batches(
        self, batch_size: int, *, shuffle: bool, augment: bool, seed: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(inputs, labels)`` batches already on the split's device.

        Inputs are float32 NCHW and normalised, labels int64. The order and any
        augmentation are drawn from a generator seeded with ``seed`` (never the global
        RNG); ``shuffle=False`` keeps the stored order; the last partial batch is kept.
        """
        ...


@dataclass(frozen=True)
class Splits:
    """The three splits of a data set plus what the engine needs to know about them."""

    info: DatasetInfo
    train: DataSource
    val: DataSource
    test: DataSource
    augment_default: bool


class DatasetLoader(Protocol):
    """Signature of every data-set loader, built in or plug-in (``silo.datasets``).

    All of a spec's ``dataset`` settings are passed to every loader; one that stores
    nothing on disk ignores ``root`` and ``download``. ``options`` are the spec's
    data-set specific integers; a loader refuses keys it does not know
    (:func:`resolve_options`).
    """

    def __call__(
        self,
        *,
        device: torch.device,
        root: str | None,
        download: bool,
        val_fraction: float,
        split_seed: int,
        options: Mapping[str, Any] | None,
    ) -> Splits: ...


class DatasetNotFoundError(FileNotFoundError):
    """The files of a data set are not where they were expected.

    A subclass of ``FileNotFoundError`` so callers that already handle missing files keep
    working, while the message tells a user exactly which folder to provide.
    """


class UnknownDatasetError(ValueError):
    """A data-set name that the registry does not know."""


def default_data_root() -> Path:
    """The folder used when no ``root`` is given.

    ``$SILO_DATA_DIR`` wins so a deployment can point every worker at shared storage;
    otherwise a per-user cache folder keeps data out of the working directory.
    """
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "silo" / "data"


def resolve_root(root: str | os.PathLike[str] | None) -> Path:
    """Turn an optional user-given root into a concrete folder path."""
    return Path(root).expanduser() if root is not None else default_data_root()


def missing_data_message(dataset: str, folder: Path, *, can_download: bool) -> str:
    """Explain a missing data folder together with every way of providing it."""
    ways = [
        "pass `root` pointing at the folder that contains it",
        f"or place it under the SILO data folder (${DATA_DIR_ENV}, "
        f"currently {default_data_root()})",
    ]
    if can_download:
        ways.append("or set `download: true` to fetch it")
    return f"data set {dataset!r} not found: expected folder {folder}; " + ", ".join(ways) + "."


def resolve_options(
    dataset: str, options: Mapping[str, Any] | None, defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """Merge user options over a data set's defaults, rejecting keys it does not know.

    Silently ignoring a misspelt option would make a run quietly use a default, so any
    unknown key is an error that names the allowed keys.
    """
    given = dict(options or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        allowed = ", ".join(sorted(defaults)) or "none"
        raise ValueError(
            f"unknown option {unknown[0]!r} for data set {dataset!r}; allowed keys: {allowed}"
        )
    return {**defaults, **given}


def positive_int_option(dataset: str, key: str, value: Any, *, minimum: int = 1) -> int:
    """Validate an integer option early, so a bad value fails before any data is touched."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"option {key!r} for data set {dataset!r} must be an integer >= {minimum}, "
            f"got {value!r}"
        )
    return value
