"""Model registry: every network a pruning job can name, built by one function.

``build_model(name, in_channels=..., num_classes=..., image_size=...)`` returns a
freshly initialised ``torch.nn.Module`` mapping ``(N, C, H, W)`` images with
``H == W == image_size`` to ``(N, num_classes)`` logits. Importing this package
imports the architecture modules, whose decorators fill the registry; the
registry must hold exactly ``silo_core.names.MODEL_NAMES``.
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
from silo_core.names import MODEL_NAMES, require_names

require_names("model", MODEL_NAMES, registered_names())

__all__ = [
    "MODEL_NAMES",
    "IncompatibleInputError",
    "UnknownModelError",
    "build_model",
    "register_model",
]
