"""Name-to-builder registry for every network the pruning service can train.

Jobs name their model with a plain string (it travels through YAML presets, HTTP
requests and worker queues), so one table maps those strings to builder
functions. Keeping the table here, apart from the architectures, lets each
architecture module register itself on import and lets callers validate a name
or an input shape before a job is queued, instead of failing inside a worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from torch import nn

__all__ = [
    "IncompatibleInputError",
    "ModelBuilder",
    "UnknownModelError",
    "build_model",
    "check_image_size",
    "register_model",
    "registered_names",
]


class UnknownModelError(ValueError):
    """Raised for a model name that no module has registered."""


class IncompatibleInputError(ValueError):
    """Raised when a known model cannot take the requested input shape."""


class ModelBuilder(Protocol):
    """Signature every registered builder has: keyword-only input description."""

    def __call__(self, *, in_channels: int, num_classes: int, image_size: int) -> nn.Module: ...


_BUILDERS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Return a decorator that files a builder under ``name``.

    A second registration of the same name is an error rather than a silent
    override, because two modules fighting over one name would make the model a
    job gets depend on import order.
    """
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"model name must be a non-empty string without padding, got {name!r}")

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = builder
        return builder

    return decorator


def registered_names() -> tuple[str, ...]:
    """Sorted names of all builders registered so far."""
    return tuple(sorted(_BUILDERS))


def _check_positive_int(model: str, label: str, value: object, error: type[ValueError]) -> None:
    # bool is an int subclass; True as a channel count is always a caller bug.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"model {model!r}: {label} must be an int, got {type(value).__name__}")
    if value < 1:
        raise error(f"model {model!r} needs {label} of at least 1, got {value}")


def check_image_size(
    model: str, image_size: int, *, minimum: int = 1, multiple_of: int = 1
) -> None:
    """Raise :class:`IncompatibleInputError` unless ``image_size`` suits ``model``.

    Builders call this first so the caller gets one readable sentence instead of
    a shape error from deep inside a forward pass.
    """
    if image_size < minimum:
        raise IncompatibleInputError(
            f"model {model!r} needs image_size of at least {minimum}, got {image_size}"
        )
    if image_size % multiple_of != 0:
        raise IncompatibleInputError(
            f"model {model!r} needs image_size divisible by {multiple_of}, got {image_size}"
        )


def build_model(name: str, *, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Build a freshly initialised model for square inputs.

    The returned module maps a tensor of shape
    ``(N, in_channels, image_size, image_size)`` to logits ``(N, num_classes)``.
    Initial weights come from torch's global RNG, so the same
    ``torch.manual_seed`` gives the same weights; nothing is ever downloaded.

    Raises:
        UnknownModelError: ``name`` is not registered; the message lists the
            registered names.
        IncompatibleInputError: the model cannot take this input shape.
        ValueError: ``num_classes`` is below 1.
        TypeError: a size argument is not an int.
    """
    builder = _BUILDERS.get(name)
    if builder is None:
        allowed = ", ".join(registered_names())
        raise UnknownModelError(f"unknown model {name!r}; allowed models are: {allowed}")
    _check_positive_int(name, "in_channels", in_channels, IncompatibleInputError)
    _check_positive_int(name, "image_size", image_size, IncompatibleInputError)
    _check_positive_int(name, "num_classes", num_classes, ValueError)
    return builder(in_channels=in_channels, num_classes=num_classes, image_size=image_size)
