"""What a deployment can run, as ``GET /v1/catalog`` answers it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field


class BuiltinOrigin(BaseModel):
    """A name this project ships."""

    source: Literal["builtin"]


class PluginOrigin(BaseModel):
    """A name an installed plug-in package declares (an entry point)."""

    source: Literal["plugin"]
    distribution: str = Field(description="The plug-in's package")
    version: str = Field(description="The plug-in package's version")


class CatalogItem(BaseModel):
    name: str
    origin: Annotated[BuiltinOrigin | PluginOrigin, Field(discriminator="source")]


class CatalogOut(BaseModel):
    """What this deployment can run: the names a spec may use, and where each comes from."""

    models: list[CatalogItem]
    datasets: list[CatalogItem]
    pruning_methods: list[CatalogItem]
    schedules: list[CatalogItem]
    presets: list[CatalogItem]
