"""Building a model by name: the built-in architectures and plug-in builders alike.

Jobs name their model with a plain string (it travels through YAML presets, HTTP
requests and worker queues); ``silo_core.plugins.MODELS`` maps those strings to
builder functions, imported only when a job builds one. Every builder, built in
or plug-in, has the keyword signature of :class:`ModelBuilder`.
"""

from __future__ import annotations

from typing import Protocol

from torch import nn

from silo_core.plugins import MODELS, UnknownNameError

__all__ = [
    "IncompatibleInputError",
    "ModelBuilder",
    "UnknownModelError",
    "build_model",
    "check_image_size",
]


class UnknownModelError(ValueError):
    """Raised for a model name that neither a built-in nor a plug-in provides."""


class IncompatibleInputError(ValueError):
    """Raised when a known model cannot take the requested input shape."""


class ModelBuilder(Protocol):
    """Signature of every builder, built in or plug-in: keyword-only input description."""

    def __call__(self, *, in_channels: int, num_classes: int, image_size: int) -> nn.Module: ...


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
        UnknownModelError: no built-in or plug-in is called ``name``; the
            message lists the available names.
        silo_core.plugins.PluginError: a plug-in builder failed to import or
            to build; the message names the plug-in and its distribution.
        IncompatibleInputError: the model cannot take this input shape.
        ValueError: ``num_classes`` is below 1.
        TypeError: a size argument is not an int.
    """
    try:
        entry = MODELS.get(name)
    except UnknownNameError as exc:
        raise UnknownModelError(str(exc)) from None
    _check_positive_int(name, "in_channels", in_channels, IncompatibleInputError)
    _check_positive_int(name, "image_size", image_size, IncompatibleInputError)
    _check_positive_int(name, "num_classes", num_classes, ValueError)
    builder: ModelBuilder = entry.load()
    with entry.blamed("build"):
        model = builder(in_channels=in_channels, num_classes=num_classes, image_size=image_size)
        if not isinstance(model, nn.Module):
            raise TypeError(f"it returned a {type(model).__name__}, not a torch.nn.Module")
    return model
