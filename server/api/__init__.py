"""The REST API (/v1): one router per resource."""

from __future__ import annotations

from fastapi import APIRouter


def routers() -> list[APIRouter]:
    from server.api.admin import router as admin
    from server.api.catalog import router as catalog
    from server.api.cluster import router as cluster
    from server.api.files import router as files
    from server.api.intake import router as intake
    from server.api.jobs import router as jobs
    from server.api.logs import router as logs
    from server.api.studies import router as studies

    return [jobs, logs, studies, files, intake, admin, catalog, cluster]
