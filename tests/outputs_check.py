"""What every finished job's output folder must hold, checked the way a user reads
it: `silo run`'s folder and a folder downloaded from the service alike.

Importable as ``outputs_check`` from any test (tests/ is on sys.path).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file as load_numpy

from silo_core.data import load_dataset
from silo_core.export import load_pruned
from silo_core.spec import load_spec


def check_portable_outputs(folder: Path) -> None:
    """The safetensors files read alone equal model.pt and masks.pt; the rebuilt
    network scores the job's recorded final test accuracy; sizes.json adds up."""
    spec = load_spec(folder / "spec.yaml")
    weights = torch.load(folder / "model.pt", weights_only=True)
    masks = torch.load(folder / "masks.pt", weights_only=True)

    # The safetensors library alone, no model built, no torch needed for the tensors.
    plain = load_numpy(str(folder / "model.safetensors"))
    assert plain.keys() == weights.keys()
    for name, tensor in weights.items():
        assert np.array_equal(plain[name], tensor.numpy()), name
    plain_masks = load_numpy(str(folder / "masks.safetensors"))
    assert plain_masks.keys() == masks.keys()
    for name, mask in masks.items():
        assert plain_masks[name].dtype == np.bool_, name
        assert np.array_equal(plain_masks[name], mask.numpy()), name
        assert not plain[name][~plain_masks[name]].any(), name  # pruned weights are zero
    with safe_open(str(folder / "model.safetensors"), framework="numpy") as handle:
        metadata = handle.metadata()
    cycles = json.loads((folder / "cycles.json").read_text())
    assert metadata["model"] == spec.model.name
    assert metadata["spec_identity"] == spec.identity()
    assert float(metadata["sparsity"]) == cycles[-1]["sparsity"]

    # The rebuilt network's predictions on the job's own test split.
    model = load_pruned(folder)
    assert not model.training
    data = load_dataset(
        spec.dataset.name,
        device=torch.device("cpu"),
        val_fraction=spec.dataset.val_fraction,
        split_seed=spec.dataset.split_seed,
    )
    correct = seen = 0
    with torch.no_grad():
        for inputs, labels in data.test.batches(512, shuffle=False, augment=False, seed=0):
            correct += int((model(inputs).argmax(dim=1) == labels).sum())
            seen += labels.numel()
    assert correct / seen == cycles[-1]["final_test_accuracy"]

    # sizes.json: the files as they are, and CSR bytes from the alive count,
    # cross-checked against torch's own CSR layout (int64 indices).
    sizes = json.loads((folder / "sizes.json").read_text())
    for name, count in sizes["files"].items():
        assert (folder / name).stat().st_size == count, name
    assert {"model.safetensors", "masks.safetensors", "model.pt"} <= sizes["files"].keys()
    figures = sizes["weights"]
    alive = sum(int(m.sum()) for m in masks.values())
    assert figures["alive_weights"] == alive == cycles[-1]["alive_weights"]
    assert 1 - alive / figures["prunable_weights"] == cycles[-1]["sparsity"]
    dense = sum(t.numel() * t.element_size() for t in weights.values())
    assert figures["dense_bytes"] == dense
    unmasked = dense - sum(weights[n].numel() * weights[n].element_size() for n in masks)
    rows = sum(m.shape[0] + 1 for m in masks.values())
    assert figures["sparse_csr_bytes"]["int32"] == unmasked + alive * (4 + 4) + rows * 4
    csr = unmasked
    for name in masks:
        with warnings.catch_warnings():  # torch calls its sparse CSR support beta
            warnings.simplefilter("ignore", UserWarning)
            matrix = weights[name].reshape(weights[name].shape[0], -1).to_sparse_csr()
        parts = (matrix.values(), matrix.col_indices(), matrix.crow_indices())
        csr += sum(p.numel() * p.element_size() for p in parts)
    assert figures["sparse_csr_bytes"]["int64"] == csr
    assert figures["ratio"]["int64"] == round(csr / dense, 4)
