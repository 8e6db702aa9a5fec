"""`/admin/...`: what operators see, behind ADMIN_KEYS (never a client key).

With no admin key configured the routes answer 404, as an unknown URL does, so a deployment
that never asked for them does not show they exist.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from ..errors import AuthenticationError, NotFoundError
from ..upstream_report import pool_snapshot
from .common import ServicesDep, presents_admin_key

router = APIRouter(tags=["admin"], include_in_schema=False)


def require_admin(request: Request, admin_keys: tuple[str, ...]) -> None:
    if not admin_keys:
        raise NotFoundError(f"Invalid URL ({request.method} {request.url.path}).")
    if not presents_admin_key(request, admin_keys):
        raise AuthenticationError("/admin needs one of ADMIN_KEYS as a Bearer token.")


@router.get("/admin/upstream")
async def upstream(request: Request, services: ServicesDep) -> JSONResponse:
    """The SiliconFlow accounts and keys the service uses (labels, states, balances), and the
    models: where the list came from, what is listed, and what the account offered."""
    require_admin(request, services.settings.admin_key_list)
    catalogue = services.catalogue
    models = [spec.id for spec in catalogue.listed]
    snapshot = await pool_snapshot(services.client.keys, models)
    snapshot["models"] = {
        "source": catalogue.source,
        "status": services.models.status,
        "listed": models,
        "account": services.models.account_models,
    }
    return JSONResponse(snapshot)
