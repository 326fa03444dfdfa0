"""Models: every network a pruning job can name, built by one function.

``build_model(name, in_channels=..., num_classes=..., image_size=...)`` returns a
freshly initialised ``torch.nn.Module`` mapping ``(N, C, H, W)`` images with
``H == W == image_size`` to ``(N, num_classes)`` logits. The names, built in and
plug-in, are ``silo_core.plugins.MODELS``; an architecture module is imported
only when a job builds one of its networks.
"""

from __future__ import annotations

from silo_core.models.registry import (
    IncompatibleInputError,
    ModelBuilder,
    UnknownModelError,
    build_model,
)

__all__ = ["IncompatibleInputError", "ModelBuilder", "UnknownModelError", "build_model"]
