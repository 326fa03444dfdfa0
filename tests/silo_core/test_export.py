"""Portable outputs of `silo run`: safetensors read alone, the pruned network
rebuilt from the folder, sizes.json; and folders that are not such outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from outputs_check import check_portable_outputs
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_cli import SMALL
from typer.testing import CliRunner

from silo_core.cli import app
from silo_core.export import ExportError, load_pruned, save_tensors


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> tuple[Path, str]:
    """A `silo run` output folder and what the command printed."""
    root = tmp_path_factory.mktemp("run")
    (root / "job.yaml").write_text(SMALL)
    result = CliRunner().invoke(
        app, ["run", str(root / "job.yaml"), "--out", str(root / "out")], terminal_width=120
    )
    assert result.exit_code == 0, result.output
    return root / "out", result.output


def test_silo_run_writes_portable_outputs_that_rebuild_the_pruned_network(run_folder):
    folder, _ = run_folder
    check_portable_outputs(folder)


def test_silo_run_prints_the_sizes_dense_and_sparse(run_folder):
    folder, printed = run_folder
    sizes = json.loads((folder / "sizes.json").read_text())
    assert "sizes on disk" in printed
    for name in ("model.safetensors", "masks.safetensors", "weights CSR, int64 indices"):
        assert name in printed
    alive, prunable = sizes["weights"]["alive_weights"], sizes["weights"]["prunable_weights"]
    assert f"{alive} of {prunable} prunable weights alive" in printed
    # At 75% sparsity CSR with int32 indices takes about half the dense bytes.
    assert f"{sizes['weights']['ratio']['int32']:.0%}" in printed
    assert sizes["weights"]["ratio"]["int32"] < 0.6


def test_tied_and_non_contiguous_tensors_are_written_name_for_name(tmp_path):
    shared = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    tensors = {
        "encoder.weight": shared,
        "decoder.weight": shared,  # tied: the same tensor under two names
        "half": shared[0],  # a view into the same storage
        "channels_last": torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last),
    }
    with pytest.raises(RuntimeError, match="share memory"):  # what save_tensors avoids
        save_file(tensors, str(tmp_path / "plain.safetensors"))
    save_tensors(tensors, tmp_path / "ours.safetensors", {"k": "v"})
    loaded = load_file(str(tmp_path / "ours.safetensors"))
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor), name


def test_a_folder_without_outputs_is_named(tmp_path):
    with pytest.raises(ExportError, match=r"model\.safetensors is missing"):
        load_pruned(tmp_path)


def test_safetensors_of_something_else_are_refused(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ExportError, match="not written by a pruning job"):
        load_pruned(tmp_path)


def test_a_damaged_or_newer_file_is_refused(run_folder, tmp_path):
    folder, _ = run_folder
    data = (folder / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError, match="not a readable safetensors file"):
        load_pruned(tmp_path)

    weights = load_file(str(folder / "model.safetensors"))
    newer = tmp_path / "newer"
    newer.mkdir()
    save_file(
        weights, str(newer / "model.safetensors"), {"format": "silo-pruned", "format_version": "2"}
    )
    with pytest.raises(ExportError, match="format version '2'; this version reads '1'"):
        load_pruned(newer)


def test_weights_that_do_not_fit_the_named_network_fail_naming_the_mismatch(run_folder, tmp_path):
    folder, _ = run_folder
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("checkpoints"))
    with safe_open(str(copy / "model.safetensors"), framework="pt") as handle:
        metadata = dict(handle.metadata())
    metadata["num_classes"] = "3"
    save_file(load_file(str(copy / "model.safetensors")), str(copy / "model.safetensors"), metadata)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_pruned(copy)
