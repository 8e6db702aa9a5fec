"""Request ids, one JSON log line per request, metrics, and the overhead header.

Routes note what they learned (model, image count, upstream time, the client's key label) in
the request's `RequestNote`; the middleware turns it into the log line, the metrics and the
`Server-Timing` / `X-Overhead-Ms` headers. A client key is only ever logged by its label, and
a prompt only up to `LOG_PROMPT_CHARS` characters; image data never.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import Metrics

access_logger = logging.getLogger("sfproxy.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


@dataclass(slots=True)
class RequestNote:
    request_id: str
    client: str | None = None
    # A database key's name, beside its id in `client`.
    client_name: str | None = None
    # The model used, and the name the client asked for (an alias, or None for none).
    model: str | None = None
    model_requested: str | None = None
    images: int | None = None
    prompt: str | None = None
    upstream_seconds: float = 0.0
    queue_seconds: float = 0.0
    failed_calls: int = 0
    error: str | None = None
    # Settlement: images sent to the client (and charged), and reserved ones given back.
    delivered: int | None = None
    refunded: int = 0
    # The request id whose abandoned generation this request took over.
    joined: str | None = None
    trace_ids: list[str] = field(default_factory=list)
    # A client's background task answered without an image (tasks.py), e.g. "openwebui_title".
    task: str | None = None


def note_of(connection: HTTPConnection) -> RequestNote:
    note: RequestNote = connection.scope["state"]["note"]
    return note


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, prompt_chars: int) -> None:
        self.app = app
        self.metrics = metrics
        self.prompt_chars = prompt_chars

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        offered = _header(scope, b"x-request-id")
        note = RequestNote(
            request_id=offered if offered and _REQUEST_ID.match(offered) else _new_request_id()
        )
        scope.setdefault("state", {})["note"] = note
        status = 500
        streaming = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = note.request_id
                streaming = headers.get("content-type", "").startswith("text/event-stream")
                if note.model is not None and not streaming:
                    elapsed = time.perf_counter() - started
                    overhead = max(0.0, elapsed - note.upstream_seconds - note.queue_seconds)
                    headers["X-Overhead-Ms"] = f"{overhead * 1000:.2f}"
                    headers["Server-Timing"] = (
                        f"upstream;dur={note.upstream_seconds * 1000:.1f}, "
                        f"queue;dur={note.queue_seconds * 1000:.1f}, "
                        f"overhead;dur={overhead * 1000:.2f}"
                    )
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            self.metrics.in_flight.dec()
            self._finish(scope, note, status, time.perf_counter() - started)

    def _finish(self, scope: Scope, note: RequestNote, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "")
        overhead = max(0.0, seconds - note.upstream_seconds - note.queue_seconds)
        self.metrics.request_finished(
            template, method, status, seconds, overhead if note.model is not None else None
        )
        if template in ("/healthz", "/readyz", "/metrics") and status < 400:
            return
        fields: dict[str, Any] = {
            "request_id": note.request_id,
            "method": method,
            "route": template,
            "path": scope.get("path"),
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
        }
        if note.client is not None:
            fields["client"] = note.client
        if note.client_name is not None:
            fields["client_name"] = note.client_name
        if note.model is not None:
            fields.update(
                model=note.model,
                images=note.images,
                upstream_ms=round(note.upstream_seconds * 1000, 1),
                queue_ms=round(note.queue_seconds * 1000, 1),
                overhead_ms=round(overhead * 1000, 2),
            )
            if note.model_requested != note.model:
                fields["model_requested"] = note.model_requested
        if note.delivered is not None:
            fields.update(delivered=note.delivered, refunded=note.refunded)
        if note.task is not None:
            fields["task"] = note.task
        if note.joined is not None:
            fields["joined"] = note.joined
        if note.trace_ids:
            fields["trace_ids"] = note.trace_ids
        if note.failed_calls:
            fields["failed_calls"] = note.failed_calls
        if note.prompt is not None and self.prompt_chars:
            prompt = note.prompt
            fields["prompt"] = (
                prompt if len(prompt) <= self.prompt_chars else prompt[: self.prompt_chars] + "…"
            )
        if note.error is not None:
            fields["error"] = note.error
        access_logger.info("request", extra={"fields": fields})


# A random prefix per process and a counter: unique ids with no system call per request
# (uuid4's os.urandom showed in profiles); request ids need not be unguessable.
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count(1)


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _escapes() -> dict[int, str]:
    """Escapes for everything that could end a log line or forge one, in text logs."""
    table = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
    table |= {code: f"\\u{code:04x}" for code in (0x2028, 0x2029, *range(0xD800, 0xE000))}
    table |= {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord("\\"): "\\\\"}
    return table


# Text logs: control characters, line separators and lone surrogates as escapes, the backslash
# doubled so an escape in the text cannot pass for one made here.
_TEXT_ESCAPES = _escapes()
# JSON logs: json.dumps escapes control characters itself; these it leaves as they are, and
# some readers split lines on them. A lone surrogate cannot even be written out as UTF-8.
_JSON_ESCAPES = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"} | dict.fromkeys(
    range(0xD800, 0xE000), "\ufffd"
)
# A text-log value is written bare only if it holds none of these.
_NEEDS_QUOTES = frozenset(' ="') | frozenset(map(chr, _TEXT_ESCAPES))


def escape_text(text: str) -> str:
    return text if text.isascii() and text.isprintable() else text.translate(_TEXT_ESCAPES)


def _text_value(value: Any) -> str:
    text = str(value)
    if text and not any(char in _NEEDS_QUOTES for char in text):
        return text
    return '"' + text.translate(_TEXT_ESCAPES).replace('"', '\\"') + '"'


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors; extra data under `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = json.dumps(entry, ensure_ascii=False, default=str)
        return line if line.isascii() else line.translate(_JSON_ESCAPES)


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...` on one line, whatever the values hold.

    Newlines and other control characters are escaped (a traceback included), and values with
    spaces, `=` or quotes are quoted, so no client text can start a line or add a field.
    """

    def format(self, record: logging.LogRecord) -> str:
        text = escape_text(super().format(record))
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            text += " " + " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
        return text


def configure_logging(level: str, log_format: str = "json") -> None:
    handler = logging.StreamHandler(sys.stdout)
    formatter: logging.Formatter
    if log_format == "json":
        formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Warnings (Pillow's about large images, say) as log lines, not as two lines on stderr.
    logging.captureWarnings(True)
    # uvicorn's own loggers propagate to ours, so its lines share the format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
