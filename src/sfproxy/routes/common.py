"""What every route shares: the running services, the caller, and JSON responses."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

import pydantic_core
from fastapi import Depends, Request
from pydantic import BaseModel
from starlette.responses import Response

from ..auth import Client
from ..links import public_base_url
from ..observability import note_of
from ..protocol_responses import ErrorResponse
from ..render.images import UrlFor
from ..services import Services


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain `def` dependency in a thread, on every request.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def authenticate(request: Request, services: ServicesDep) -> Client:
    """The caller, by its proxy key, within its requests-per-minute limit."""
    client = await _caller(request, services)
    await services.limits.admit_request(client)
    return client


async def identify(request: Request, services: ServicesDep) -> Client:
    """The caller of a read that costs nothing upstream (a video job's state or files), or an
    admin key, which sees every client's jobs.

    Not held to the requests-per-minute limit: the SDKs' `create_and_poll` asks for a job's
    state every second (or as `openai-poll-after-ms` says) for as long as the video takes.
    """
    admin_keys = services.settings.admin_key_list
    if admin_keys and presents_admin_key(request, admin_keys):
        note_of(request).client = ADMIN
        return Client(label=ADMIN, admin=True)
    return await _caller(request, services)


async def _caller(request: Request, services: Services) -> Client:
    client = await services.keys.authenticate(request)
    if not services.keys.required and request.client is not None:
        # On a public API, limits apply per address rather than to everyone at once.
        client = Client(label=f"ip-{request.client.host}")
    note = note_of(request)
    note.client, note.client_name = client.label, client.name
    return client


def presents_admin_key(request: Request, admin_keys: tuple[str, ...]) -> bool:
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    # Every key compared, so the time taken does not say which one was nearly right.
    matches = [hmac.compare_digest(presented.encode(), key.encode()) for key in admin_keys]
    return scheme.lower() == "bearer" and any(matches)


ADMIN = "admin"
ClientDep = Annotated[Client, Depends(authenticate)]
ReaderDep = Annotated[Client, Depends(identify)]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Invalid request, or SiliconFlow rejected it",
        401: "Missing or wrong proxy key",
        403: "SiliconFlow refused access to the model",
        413: "Request body too large",
        429: "A client limit or SiliconFlow's rate limit; see Retry-After",
        502: "SiliconFlow failed or answered something unreadable",
        503: "SiliconFlow or the image store is unavailable",
        504: "SiliconFlow did not answer in time",
    }.items()
}


def json_response(
    model: BaseModel, *, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        content=pydantic_core.to_json(model),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


def url_maker(request: Request, services: Services) -> UrlFor:
    """How the answer links to each image: the store's CDN, this service, or SiliconFlow."""
    base_url = public_base_url(request, services.settings.public_base_url)
    generator = services.generator
    return lambda image: generator.url_for(image, base_url)
