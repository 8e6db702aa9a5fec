"""`GET /v1/usage`: the calling key's own use today and this month (UTC), and its budgets.

Only for a service with client keys: on a public one every caller is the same "anonymous"
in the ledger, so there is no "own" usage to show, and the route answers 404. It is not
counted against the key's requests per minute: the playground reads it after every
generation, and looking at an allowance must not use it up.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import JSONResponse

from ..errors import DatabaseUnavailableError, NotFoundError
from ..observability import note_of
from ..usage import client_usage
from ..usage_format import client_usage_document
from .common import ServicesDep

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["usage"])

# Two small grouped queries on an indexed table; a database that takes longer is in trouble,
# and the caller is better told so than kept waiting.
USAGE_TIMEOUT = 5.0


@router.get("/usage", summary="This key's usage today and this month, and its budgets")
async def usage(request: Request, services: ServicesDep) -> JSONResponse:
    if not services.keys.required:
        raise NotFoundError(
            "This service has no client keys, so there is no usage of a key to show "
            f"({request.method} {request.url.path})."
        )
    client = await services.keys.authenticate(request)
    note = note_of(request)
    note.client, note.client_name = client.label, client.name
    try:
        async with asyncio.timeout(USAGE_TIMEOUT):
            totals = await client_usage(services.database.engine, client.label)
            budgets = await services.budgets.status(client)
    except (OSError, SQLAlchemyError, RedisError, TimeoutError) as exc:
        logger.warning("usage of %s failed: %s", client.label, exc)
        raise DatabaseUnavailableError("The database did not answer; try again.") from None
    return JSONResponse(
        client_usage_document(
            totals,
            budgets,
            client=client.label,
            name=client.name,
            currency=services.settings.prices.currency,
        )
    )
