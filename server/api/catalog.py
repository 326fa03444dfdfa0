"""``GET /v1/catalog``: the models, data sets, pruning methods, schedules and
presets this deployment can run, each with its origin (built in, or a plug-in
package and its version). Read from metadata: no plug-in code, no torch."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from server.api.deps import current_user
from server.api.errors import documented
from server.api.routing import ApiRoute
from silo_contract.catalog import CatalogOut
from silo_core.catalog import catalog

router = APIRouter(
    prefix="/v1",
    tags=["catalog"],
    route_class=ApiRoute,
    responses=documented(401),
    dependencies=[Depends(current_user)],
)


@router.get("/catalog", response_model=CatalogOut)
def read_catalog() -> CatalogOut:
    """What a spec may name, as installed on this API's image (the workers run the
    same image, so the same plug-ins)."""
    return CatalogOut.model_validate(catalog())
