"""The names a job spec may use for its model, data set and pruning method.

Kept apart from the registries and free of torch, so that reading and checking a
spec (the ``silo`` CLI, the API server) never loads torch. Each registry checks
when it is imported that it provides exactly these names (``require_names``), so
the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable

MODEL_NAMES: tuple[str, ...] = (
    "lenet5", "mlp", "resnet18", "resnet20", "resnet32", "resnet50", "resnet56",
    "vgg11", "vgg16", "vgg19", "vit_b_16",
)  # fmt: skip
DATASET_NAMES: tuple[str, ...] = ("cifar10", "cifar100", "digits", "imagefolder", "synthetic")
PRUNING_METHODS: tuple[str, ...] = ("global_magnitude", "layerwise_magnitude", "random")


def require_names(what: str, declared: Iterable[str], provided: Iterable[str]) -> None:
    """Fail loudly at import when a registry and the declared names differ."""
    missing, extra = set(declared) - set(provided), set(provided) - set(declared)
    if missing or extra:
        raise ImportError(
            f"{what} names out of step with silo_core.names: declared but not provided "
            f"{sorted(missing)}, provided but not declared {sorted(extra)}"
        )
