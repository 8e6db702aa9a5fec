"""`GET /v1/usage`: the calling key's own use today and this month (UTC), and its budgets.

Only for a service with client keys: on a public one every caller is the same "anonymous"
in the ledger, so there is no "own" usage to show, and the route answers 404. It is not
counted against the key's requests per minute: the playground reads it after every
generation, and looking at an allowance must not use it up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import JSONResponse

from ..errors import DatabaseUnavailableError, NotFoundError
from ..observability import note_of
from ..protocol_responses import ErrorResponse
from ..usage import client_usage
from ..usage_format import client_usage_document
from .common import ERROR_RESPONSES, ServicesDep

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["usage"])

# Two small grouped queries on an indexed table; a database that takes longer is in trouble,
# and the caller is better told so than kept waiting.
USAGE_TIMEOUT = 5.0


class _Exact(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PeriodUsage(_Exact):
    """A UTC day or month so far: amounts are decimal strings in the document's currency."""

    since: str
    requests: int
    images_delivered: int
    charged: str
    unknown_price: int


class BudgetState(_Exact):
    period: Literal["daily", "monthly"]
    budget: str
    spent: str
    left: str
    currency: str
    resets_at: str


class KeyUsage(_Exact):
    """The document /v1/usage answers (built by `usage_format.client_usage_document`); here
    for the OpenAPI document."""

    object: Literal["usage"]
    client: str
    name: str | None
    currency: str
    today: PeriodUsage
    month: PeriodUsage
    budgets: list[BudgetState]


@router.get(
    "/usage",
    response_model=KeyUsage,
    responses={
        **ERROR_RESPONSES,
        404: {"model": ErrorResponse, "description": "A public service: there is no key"},
        503: {"model": ErrorResponse, "description": "The database did not answer"},
    },
    summary="This key's usage today and this month, and its budgets",
)
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
