"""`/admin/keys`: client keys created, listed, changed and revoked at run time (ADMIN_KEYS).

The same operations as `sfproxy keys`. A key is returned once, by the POST that creates it;
no answer ever holds its hash. A change made here is in this instance's key map at once, and
in the others' within KEYS_REFRESH_SECONDS.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from ..bodies import read_json_request
from ..db.keys import KeyChange, KeyStore, NewKey
from ..services import Services
from .admin import require_admin
from .common import ServicesDep

router = APIRouter(tags=["admin"], include_in_schema=False)

# An admin body is a few hundred bytes; no string in it needs more.
MAX_STRING = 4096


def _store(request: Request, services: Services) -> KeyStore:
    require_admin(request, services.settings.admin_key_list)
    assert services.keys.cache is not None
    return services.keys.cache.store


async def _changed(services: Services, body: dict[str, Any], status: int = 200) -> JSONResponse:
    # This instance refuses a revoked key from now on, not at its next refresh.
    assert services.keys.cache is not None
    await services.keys.cache.reload()
    return JSONResponse(body, status_code=status)


@router.get("/admin/keys")
async def list_keys(request: Request, services: ServicesDep) -> JSONResponse:
    store = _store(request, services)
    return JSONResponse({"data": [record.to_json() for record in await store.list()]})


@router.post("/admin/keys")
async def create_key(request: Request, services: ServicesDep) -> JSONResponse:
    store = _store(request, services)
    new = await read_json_request(request, NewKey, max_string=MAX_STRING)
    record, key = await store.create(new)
    return await _changed(services, {**record.to_json(), "key": key}, status=201)


@router.get("/admin/keys/{ident}")
async def show_key(ident: str, request: Request, services: ServicesDep) -> JSONResponse:
    store = _store(request, services)
    return JSONResponse((await store.get(ident)).to_json())


@router.patch("/admin/keys/{ident}")
async def update_key(ident: str, request: Request, services: ServicesDep) -> JSONResponse:
    store = _store(request, services)
    change = await read_json_request(request, KeyChange, max_string=MAX_STRING)
    return await _changed(services, (await store.update(ident, change)).to_json())


@router.delete("/admin/keys/{ident}")
async def revoke_key(ident: str, request: Request, services: ServicesDep) -> JSONResponse:
    store = _store(request, services)
    return await _changed(services, (await store.revoke(ident)).to_json())
