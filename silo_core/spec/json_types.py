"""Numbers read as JSON Schema reads them, for every model that parses a request or a spec.

JSON Schema's ``integer`` is a number without a fraction, so ``3.0`` is one;
``true``, ``"3"`` and ``3.5`` are not, and none of them is a ``number``
either. Pydantic's lax mode takes ``true`` as 1 and ``"3"`` as 3; its strict
mode refuses ``3.0`` for an int. These markers sit between:

    Annotated[int, Strictly, Field(ge=0, le=9), Integral]
    Annotated[float, Strictly, Field(gt=0)]   (a strict float takes ints, as JSON does)

``Integral`` must come after the bounds: pydantic then keeps them in the
integer's schema (``minimum``/``maximum``) and turns ``3.0`` into 3 before it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Strict


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


Strictly = Strict()
Integral = BeforeValidator(_integral)
JsonInt = Annotated[int, Strictly, Integral]
JsonFloat = Annotated[float, Strictly]
