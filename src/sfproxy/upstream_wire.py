"""SiliconFlow's answers as this service reads them: images, errors, model lists.

Parsed defensively (siliconflow-api.md: any field can be missing, bodies can be text); an
answer that cannot be read is an `UpstreamBadResponseError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import (
    UpstreamAuthError,
    UpstreamBadResponseError,
    UpstreamError,
    UpstreamPermissionError,
    UpstreamRateLimitError,
    UpstreamRejectedError,
    UpstreamServerError,
    UpstreamUnavailableError,
)
from .retries import retry_after_seconds

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UpstreamImages:
    urls: list[str]
    seed: int | None
    inference_seconds: float | None
    trace_id: str | None
    # The label ("acct-…") of the SiliconFlow account that made (and billed) them.
    account: str | None = None


def parse_images(raw: bytes, trace_id: str | None) -> UpstreamImages:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamBadResponseError(
            "SiliconFlow's answer was not valid JSON.", trace_id=trace_id
        ) from None
    if not isinstance(body, dict):
        body = {}
    items = body.get("images") or body.get("data")
    urls: list[str] = []
    for item in items if isinstance(items, list) else []:
        url = item.get("url") if isinstance(item, dict) else item
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            urls.append(url)
    if not urls:
        raise UpstreamBadResponseError("SiliconFlow's answer held no images.", trace_id=trace_id)
    seed = body.get("seed")
    timings = body.get("timings")
    inference = timings.get("inference") if isinstance(timings, dict) else None
    return UpstreamImages(
        urls=urls,
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        inference_seconds=float(inference) if isinstance(inference, int | float) else None,
        trace_id=trace_id,
    )


def says_balance_is_spent(message: str) -> bool:
    # SiliconFlow's only sign is its wording (code 30001 also stands for missing verification).
    lowered = message.lower()
    return "insufficient" in lowered and "balance" in lowered


def error_message(raw: bytes) -> tuple[str, int | None]:
    """SiliconFlow's error text and numeric code, from JSON or plain-text bodies."""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return (text[:300] or "no details given"), None
    if isinstance(body, dict):
        message = body.get("message") or body.get("error") or body.get("data")
        if isinstance(message, dict):
            message = message.get("message")
        code = body.get("code")
        return (
            str(message)[:300] if message else "no details given",
            code if isinstance(code, int) else None,
        )
    return text[:300] or "no details given", None


def parse_model_ids(raw: bytes) -> list[str]:
    """`{"object": "list", "data": [{"id": ...}, ...]}`, read defensively."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamBadResponseError("SiliconFlow's model list was not valid JSON.") from None
    items = body.get("data") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise UpstreamBadResponseError("SiliconFlow's model list held no `data` list.")
    ids = [item.get("id") for item in items if isinstance(item, dict)]
    return [model_id for model_id in ids if isinstance(model_id, str) and model_id]


def error_for(
    status: int,
    raw: bytes,
    headers: Mapping[str, str],
    trace_id: str | None,
    *,
    url: str,
    redact: Callable[[str], str],
) -> UpstreamError:
    """SiliconFlow's answer other than 200, as the `UpstreamError` it means, and logged.

    `url` (without its query) is named only when SiliconFlow answered 404; `redact` takes the
    service's keys out of SiliconFlow's message, which may quote them.
    """
    message, upstream_code = error_message(raw)
    message = redact(message)
    logger.warning(
        "SiliconFlow answered %d (code %s, trace %s): %s",
        status,
        upstream_code,
        trace_id,
        message,
    )
    detail = f" (SiliconFlow code {upstream_code})" if upstream_code is not None else ""
    # Only an answer that says the work was not done (a refusal, 429, 503 overloaded)
    # proves nothing was billed; a 500, 502 or 504 may come after the image was made.
    unsure = status >= 500 and status != 503
    common: dict[str, Any] = {
        "upstream_status": status,
        "trace_id": trace_id,
        "maybe_billed": unsure,
    }
    if status == 401:
        return UpstreamAuthError(
            "SiliconFlow rejected this server's upstream API key (SILICONFLOW_API_KEY); "
            "the server operator must check it.",
            **common,
        )
    if status == 403:
        refused = UpstreamPermissionError(
            f"SiliconFlow refused access{detail}: {message}", **common
        )
        refused.insufficient_balance = says_balance_is_spent(message)
        return refused
    if status == 404:
        return UpstreamBadResponseError(
            f"SiliconFlow answered 404 for {url}: check SF_BASE.",
            **common,
        )
    if status == 429:
        return UpstreamRateLimitError(
            f"SiliconFlow's rate limit was reached: {message}",
            retry_after=retry_after_seconds(headers),
            **common,
        )
    if status in (503, 504):
        return UpstreamUnavailableError(
            f"SiliconFlow is unavailable ({status}){detail}: {message}",
            retry_after=retry_after_seconds(headers),
            **common,
        )
    if status >= 500:
        return UpstreamServerError(f"SiliconFlow failed ({status}){detail}: {message}", **common)
    return UpstreamRejectedError(
        f"SiliconFlow rejected the request{detail}: {message}",
        param="model" if upstream_code == 20012 else None,
        **common,
    )
