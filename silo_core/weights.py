"""Starting weights (``model.weights``): read a file, and fit it to the model or say why not.

Two formats are read, and nothing that could run code: safetensors (by its
header, no pickle at all) and PyTorch state dicts through
``torch.load(weights_only=True)``, whose unpickler builds tensors and plain
containers only and refuses any other global, so a pickle whose ``__reduce__``
calls a function fails before the call. A file that is neither is refused with
one message naming both formats.

A state dict saved by this project (a job's ``model.pt`` or
``model.safetensors``: pruned weights as zeros) loads like any other; the
engine then takes its zeros as pruned (``MaskSet.mask_zeros_``), so a pruned
network is pruned further from the sparsity it has.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from silo_core.spec.model import weights_reference

MISMATCHES_SHOWN = 5
SAFETENSORS_MAGIC_OFFSET = 8  # a u64 header length, then a JSON header starting with "{"


class WeightsError(ValueError):
    """The starting weights cannot be read, or do not fit the model."""


def _is_safetensors(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(SAFETENSORS_MAGIC_OFFSET + 1)
    return len(head) == SAFETENSORS_MAGIC_OFFSET + 1 and head[-1:] == b"{"


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file or of a PyTorch state dict, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"model.weights: no file at {path}")
    if _is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except SafetensorError as exc:
            raise WeightsError(f"model.weights: not a readable safetensors file: {exc}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            "model.weights: refused: neither a safetensors file nor a PyTorch state dict "
            f"that loads with weights_only=True (it would need code to unpickle: {first_line})"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise WeightsError(
            "model.weights: a PyTorch file must hold a state dict (names to tensors), "
            f"not a {type(state).__name__}"
        )
    return dict(state)


def mismatches(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """What keeps ``state`` from loading into ``model``: missing and unexpected
    keys, and shapes that differ; empty when it fits."""
    expected = model.state_dict()
    problems = [f"missing key {key!r}" for key in expected if key not in state]
    problems += [f"unexpected key {key!r}" for key in state if key not in expected]
    problems += [
        f"{key!r}: shape {tuple(state[key].shape)} in the file vs {tuple(value.shape)} in the model"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    return problems


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load the starting weights at ``path`` into ``model``, or raise WeightsError
    naming the first mismatches."""
    state = read_weights(path)
    problems = mismatches(model, state)
    if problems:
        shown = "; ".join(problems[:MISMATCHES_SHOWN])
        more = len(problems) - MISMATCHES_SHOWN
        raise WeightsError(
            f"model.weights do not fit the model: {shown}"
            + (f"; and {more} more" if more > 0 else "")
        )
    model.load_state_dict(state)


def local_weights(reference: str | None) -> Path | None:
    """The path ``silo run`` reads for ``model.weights``; a service reference
    (``file:``, ``job:``) means nothing without the service."""
    if reference is None:
        return None
    if weights_reference(reference) is not None:
        raise WeightsError(
            f"model.weights: {reference!r} names a file of the service; `silo run` reads a "
            "local path (fetch it first, e.g. silo download), or submit the job to the service"
        )
    return Path(reference).expanduser()
