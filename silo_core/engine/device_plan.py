"""How a job drives its device: mixed precision, memory format, compilation.

On a GPU the defaults are what makes retraining fast: bf16 autocast (half the
bytes per activation, the tensor cores) and channels_last for convolutional
networks (the layout cuDNN's fastest kernels want). On the CPU the default is
plain fp32 in eager mode, so CPU runs stay bit-for-bit deterministic for a
seed. ``training.compile`` adds torch.compile; a model it cannot compile (no
C compiler, an unsupported operator, an unknown backend) trains eagerly after
one warning instead of failing the job.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from silo_core.spec import TrainingSpec

log = logging.getLogger("silo.engine")


class CompiledForward:
    """``torch.compile(model)``'s forward, or the model's own once compiling failed.

    A backend is looked up when compiling is asked for, and the model is traced
    and compiled at the first call: failures at either point give one warning
    and eager training. (A failure compiling the backward graph would surface
    in ``backward()``; torch's own backends compile both at the first call.)"""

    def __init__(self, model: nn.Module, backend: str) -> None:
        self.model = model
        self.backend = backend
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        try:
            self._compiled = torch.compile(model, backend=backend)
        except Exception as exc:  # an unknown backend, a torch without dynamo
            self._give_up(exc)

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if self._compiled is not None:
            try:
                return self._compiled(inputs)
            except Exception as exc:  # dynamo, inductor and backend errors alike
                self._give_up(exc)
        outputs: torch.Tensor = self.model(inputs)
        return outputs

    def _give_up(self, exc: Exception) -> None:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        log.warning(
            "torch.compile (backend %s) failed, training eagerly: %s: %s",
            self.backend,
            type(exc).__name__,
            first_line,
        )
        self._compiled = None


@dataclass
class DevicePlan:
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    compiled: CompiledForward | None = None

    def forward(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """The model's logits for ``inputs`` under this plan (call inside ``precision()``)."""
        if self.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return (self.compiled or model)(inputs)

    @contextlib.contextmanager
    def precision(self, device: torch.device) -> Iterator[None]:
        if self.autocast_dtype is None:
            yield
            return
        with torch.autocast(device.type, dtype=self.autocast_dtype):
            yield


def plan_for(training: TrainingSpec, device: torch.device, model: nn.Module) -> DevicePlan:
    """The plan for ``model`` on ``device``; puts conv nets in channels_last on a GPU."""
    on_gpu = device.type == "cuda"
    precision = training.precision
    bf16 = precision == "bf16" or (precision == "auto" and on_gpu)
    channels_last = on_gpu and any(isinstance(m, nn.Conv2d) for m in model.modules())
    if channels_last:
        model.to(memory_format=torch.channels_last)
    backend = "inductor" if training.compile is True else training.compile or None
    return DevicePlan(
        autocast_dtype=torch.bfloat16 if bf16 else None,
        channels_last=channels_last,
        compiled=CompiledForward(model, backend) if backend else None,
    )
