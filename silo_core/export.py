"""Portable outputs: a job's weights and masks in safetensors, what they take on
disk dense and sparse, and the pruned network rebuilt from them.

``model.pt`` and ``masks.pt`` are pickles, which only PyTorch reads and which a
careful reader must load with ``weights_only=True``. ``model.safetensors`` and
``masks.safetensors`` hold the same tensors in a format any language reads
without running code, and their header carries what :func:`load_pruned` needs to
build the network again (model name, input shape, classes), so a folder of
outputs, written by ``silo run`` or downloaded from the service, is enough.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from silo_core.data.base import DatasetInfo
from silo_core.models import build_model
from silo_core.spec import JobSpec

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MASKS_FILE",
    "MODEL_FILE",
    "SIZES_FILE",
    "ExportError",
    "load_pruned",
    "metadata_for",
    "read_metadata",
    "save_tensors",
    "weight_sizes",
]

MODEL_FILE = "model.safetensors"
MASKS_FILE = "masks.safetensors"
SIZES_FILE = "sizes.json"
FORMAT = "silo-pruned"
FORMAT_VERSION = "1"  # raise when the metadata's keys or meaning change

# Index dtypes of the sparse figures: int64 is what torch's to_sparse_csr
# produces; int32 is what scipy.sparse and most sparse kernels use while the
# counts fit, the compact case a user can choose.
_INDEX_BYTES = {"int64": 8, "int32": 4}


class ExportError(ValueError):
    """A folder that does not hold a job's portable outputs, or holds them damaged."""


def save_tensors(tensors: Mapping[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write ``tensors`` to a safetensors file, every name kept.

    safetensors refuses non-contiguous tensors (a channels_last conv weight
    trained on a GPU is one) and tensors sharing memory (tied weights, views of
    one buffer). ``safetensors.torch.save_model`` would drop the duplicate names
    of tied weights, but then the file alone, read without this project, would
    lack keys that ``load_state_dict`` expects. So each tensor is packed, and a
    tensor whose storage another one already uses is copied: a tied weight is
    written twice, which keeps the file equal to ``model.pt`` name for name.
    """
    seen: set[int] = set()
    packed: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != tensor.nbytes:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        packed[name] = tensor
    # safetensors writes a private temporary file (mode 0600) and renames it;
    # the file gets the mode the process's umask gives every other output, so
    # an API running as another user of the group can still serve it.
    path.touch()
    mode = stat.S_IMODE(path.stat().st_mode)
    save_file(packed, str(path), metadata=metadata)
    path.chmod(mode)


def _csr_bytes(mask: torch.Tensor, value_bytes: int, index_bytes: int) -> int:
    rows = mask.shape[0] if mask.dim() else 1
    return int(mask.sum()) * (value_bytes + index_bytes) + (rows + 1) * index_bytes


def weight_sizes(
    model_state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """Bytes of the weights stored dense, and in CSR with the pruned weights left out.

    Each masked weight is read as the 2-D matrix ``(shape[0], rest)`` (a conv's
    output channels by its fan-in): CSR keeps its alive values, one column
    index per value and ``rows + 1`` row pointers. Tensors without a mask
    (biases, norms, layers kept dense) count at their dense size in both.
    """
    dense = sum(t.numel() * t.element_size() for t in model_state.values())
    unmasked = sum(
        t.numel() * t.element_size() for name, t in model_state.items() if name not in masks
    )
    alive = sum(int(m.sum()) for m in masks.values())
    csr = {
        dtype: unmasked
        + sum(_csr_bytes(m, model_state[n].element_size(), index) for n, m in masks.items())
        for dtype, index in _INDEX_BYTES.items()
    }
    return {
        "dense_bytes": dense,
        "prunable_weights": sum(m.numel() for m in masks.values()),
        "alive_weights": alive,
        "sparse_csr_bytes": csr,
        "ratio": {dtype: round(size / dense, 4) if dense else None for dtype, size in csr.items()},
    }


def metadata_for(spec: JobSpec, info: DatasetInfo, sparsity: float) -> dict[str, str]:
    """What the safetensors headers carry: enough to rebuild the network, and
    which job spec made it (string to string, as safetensors requires)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": spec.model.name,
        "dataset": spec.dataset.name,
        "in_channels": str(info.in_channels),
        "num_classes": str(info.num_classes),
        "image_size": str(info.image_size),
        "sparsity": repr(sparsity),
        "spec_identity": spec.identity(),
    }


def read_metadata(folder: str | Path) -> dict[str, str]:
    """The header metadata of a folder's ``model.safetensors``, checked for this format."""
    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise ExportError(f"{path} is missing: the folder holds no job outputs in safetensors")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise ExportError(f"{path} is not a readable safetensors file: {exc}") from None
    if metadata.get("format") != FORMAT:
        raise ExportError(f"{path} was not written by a pruning job (no {FORMAT!r} metadata)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"{path} has format version {metadata.get('format_version')!r}; "
            f"this version reads {FORMAT_VERSION!r}"
        )
    return metadata


def load_pruned(folder: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The pruned network of a job's output folder, in eval mode, on ``device``.

    The folder is what ``silo run --out`` writes or what ``silo download``
    fetches; only ``model.safetensors`` is read.
    """
    metadata = read_metadata(folder)
    try:
        shape = {k: int(metadata[k]) for k in ("in_channels", "num_classes", "image_size")}
    except (KeyError, ValueError) as exc:
        raise ExportError(f"{Path(folder) / MODEL_FILE}: bad input metadata ({exc})") from None
    model = build_model(metadata["model"], **shape)
    model.load_state_dict(load_file(str(Path(folder) / MODEL_FILE)))
    return model.to(device).eval()
