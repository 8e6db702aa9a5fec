"""SiliconFlow's asynchronous video API: submit a job, read its status, download its MP4.

Built on the SiliconFlow client (siliconflow.py): its connection pool, key pool and mapping of
failures to `UpstreamError`s (each saying whether SiliconFlow may have billed). A submit is
one attempt per key: a refusal that is the key's own (429, 401, 403) moves it to another key
at once, as a generation does; whether to try again after anything else is the caller's
decision (jobs/service.py). A status is read with the key of the account that submitted the
job, since SiliconFlow knows a job only to that account.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from .errors import UpstreamBadResponseError
from .siliconflow import SiliconFlowClient
from .upstream_accounts import account_label
from .upstream_keys import UpstreamKey

logger = logging.getLogger(__name__)

UpstreamStatus = Literal["InQueue", "InProgress", "Succeed", "Failed"]
_STATUSES: frozenset[str] = frozenset({"InQueue", "InProgress", "Succeed", "Failed"})
SUBMIT_PATH = "/video/submit"
STATUS_PATH = "/video/status"


@dataclass(frozen=True, slots=True)
class Submitted:
    request_id: str
    key: str  # the submitting key's label, never the key
    account: str  # its account's label


@dataclass(frozen=True, slots=True)
class VideoStatus:
    status: UpstreamStatus
    reason: str | None
    url: str | None  # the MP4, once `Succeed`


class VideoUpstream:
    def __init__(self, client: SiliconFlowClient, *, max_bytes: int) -> None:
        self.client = client
        self.max_bytes = max_bytes

    def key_by_label(self, label: str) -> UpstreamKey | None:
        """The configured key with this label (None: it was removed from the configuration)."""
        return next((key for key in self.client.keys.keys if key.label == label), None)

    async def submit(self, payload: dict[str, Any], *, queued_at: float) -> Submitted:
        """One `POST /video/submit`, on another key after a refusal that was the key's."""
        # A video counts against its account's images-per-minute budget, as an image does.
        raw, key = await self.client.post_on_a_key(
            "video_submit",
            SUBMIT_PATH,
            payload,
            lambda raw, _trace_id: _json_object(raw, SUBMIT_PATH),
            images=1,
            queued_at=queued_at,
        )
        request_id = _field(raw, "requestId")
        if not isinstance(request_id, str) or not request_id or len(request_id) > 128:
            # Sent and answered: SiliconFlow may have started (and will bill) a job we
            # cannot name, so this is not tried again.
            raise UpstreamBadResponseError("SiliconFlow's submit answer has no requestId.")
        return Submitted(request_id, key.label, account_label(key.account))

    async def status(self, key: UpstreamKey, request_id: str) -> VideoStatus:
        """One `POST /video/status` with the submitting account's key."""
        body = orjson.dumps({"requestId": request_id})
        raw = _json_object((await self.client.post(STATUS_PATH, body, key.secret))[0], STATUS_PATH)
        status = _field(raw, "status")
        if status not in _STATUSES:
            raise UpstreamBadResponseError(f"SiliconFlow's video status is unknown: {status!r}.")
        reason = _field(raw, "reason")
        url = None
        if status == "Succeed":
            results = _field(raw, "results")
            videos = results.get("videos") if isinstance(results, dict) else None
            first = videos[0] if isinstance(videos, list) and videos else None
            url = first.get("url") if isinstance(first, dict) else None
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise UpstreamBadResponseError("SiliconFlow's finished video has no URL.")
        return VideoStatus(status, reason if isinstance(reason, str) and reason else None, url)

    async def download(self, url: str) -> bytes:
        """The MP4 behind a result URL, refused past `max_bytes` before it is all read; a
        `ResultGoneError` once the URL has expired."""
        started = time.perf_counter()
        data = await self.client.fetch(url, what="video", limit=self.max_bytes)
        logger.info("video downloaded: %d bytes in %.1fs", len(data), time.perf_counter() - started)
        return data


def _json_object(raw: bytes, path: str) -> dict[str, Any]:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise UpstreamBadResponseError(f"SiliconFlow's answer to {path} is not a JSON object.")
    return parsed


def _field(raw: dict[str, Any], name: str) -> Any:
    """A field of SiliconFlow's answer, at the top or (as some of its APIs nest) under `data`."""
    if name in raw:
        return raw[name]
    data = raw.get("data")
    return data.get(name) if isinstance(data, dict) else None
