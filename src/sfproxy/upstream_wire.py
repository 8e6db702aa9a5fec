"""SiliconFlow's answers as this service reads them: images, error messages, model lists.

Parsed defensively (siliconflow-api.md: any field can be missing, bodies can be text); an
answer that cannot be read is an `UpstreamBadResponseError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from .errors import UpstreamBadResponseError


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
