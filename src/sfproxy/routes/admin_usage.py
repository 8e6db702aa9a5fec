"""`GET /admin/usage`: the usage report (`sfproxy usage`'s) for operators, behind ADMIN_KEYS.

The query parameters are the CLI's options: `since`, `until`, `by`, `client`, `model`, and
`format` (json, the default; csv; table, as the CLI prints it). `GET /admin/usage/daily?days=N`
is the playground's chart: each client's totals per UTC day over the last N days (30 unless
given, at most 400).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import JSONResponse, PlainTextResponse, Response

from ..errors import DatabaseUnavailableError, InvalidRequestError
from ..usage import UsageFilter, daily_series, parse_series_days, usage_report
from ..usage_format import FORMATS, render_report, series_document
from .admin import require_admin
from .common import ServicesDep

logger = logging.getLogger(__name__)

router = APIRouter(tags=["admin"], include_in_schema=False)

_MEDIA_TYPES = {"json": "application/json", "csv": "text/csv", "table": "text/plain"}


@router.get("/admin/usage")
async def usage(request: Request, services: ServicesDep) -> Response:
    require_admin(request, services.settings.admin_key_list)
    params = request.query_params
    query = UsageFilter.parse(
        since=params.get("since"),
        until=params.get("until"),
        by=params.get("by"),
        client=params.get("client"),
        model=params.get("model"),
    )
    output = params.get("format") or "json"
    if output not in FORMATS:
        raise InvalidRequestError(
            f"format must be one of json, csv, table, not {output[:40]!r}.", param="format"
        )
    try:
        report = await usage_report(services.database.engine, query)
    except (OSError, SQLAlchemyError) as exc:
        logger.warning("usage report failed: %s", exc)
        raise DatabaseUnavailableError("The database did not answer; try again.") from None
    return PlainTextResponse(
        render_report(report, output),
        media_type=_MEDIA_TYPES[output],
    )


@router.get("/admin/usage/daily")
async def daily(request: Request, services: ServicesDep) -> JSONResponse:
    require_admin(request, services.settings.admin_key_list)
    days = parse_series_days(request.query_params.get("days"))
    try:
        series = await daily_series(services.database.engine, days)
    except (OSError, SQLAlchemyError) as exc:
        logger.warning("daily usage failed: %s", exc)
        raise DatabaseUnavailableError("The database did not answer; try again.") from None
    return JSONResponse(series_document(series))
