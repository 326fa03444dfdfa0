"""Model registry: every network a pruning job can name, built by one function.

``build_model(name, in_channels=..., num_classes=..., image_size=...)`` returns a
freshly initialised ``torch.nn.Module`` mapping ``(N, C, H, W)`` images with
``H == W == image_size`` to ``(N, num_classes)`` logits. Importing this package
imports the architecture modules, whose decorators fill the registry, so
``MODEL_NAMES`` is complete as soon as the package is imported.
"""

from __future__ import annotations

# Imported for their side effect: each module registers its builders.
from silo_core.models import cifar_resnet, cifar_vgg, small, torchvision_models  # noqa: F401
from silo_core.models.registry import (
    IncompatibleInputError,
    UnknownModelError,
    build_model,
    register_model,
    registered_names,
)

MODEL_NAMES: tuple[str, ...] = registered_names()

__all__ = [
    "MODEL_NAMES",
    "IncompatibleInputError",
    "UnknownModelError",
    "build_model",
    "register_model",
]
