"""Numbers read as JSON Schema reads them, for every model that parses a request or a spec.

JSON Schema's ``integer`` is a number without a fraction, so ``3.0`` is one;
``true``, ``"3"`` and ``3.5`` are not, and none of them is a ``number`` either.
Pydantic's lax mode takes ``true`` as 1 and ``"3"`` as 3, its strict mode
refuses ``3.0`` for an int: these types sit between, so what the schema
allows is taken and what it does not is refused.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Strict


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInt = Annotated[int, BeforeValidator(_integral), Strict()]
JsonFloat = Annotated[float, Strict()]  # strict floats take ints, as JSON numbers are
