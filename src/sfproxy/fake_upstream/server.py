"""The fake's HTTP surface: SiliconFlow's generation endpoint, the object storage behind its
image links, and an OpenAI-format images endpoint for gateways that speak only OpenAI's API.
The video API (videos.py), accounts and models add their own routes."""

from __future__ import annotations

import asyncio
import base64
import random
import secrets
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from .accounts import add_account_routes
from .control import add_control_routes
from .faults import Fault, FaultTarget
from .files import new_file_name
from .images import ImageRenderer, RenderedImage, render_size
from .models import add_model_routes
from .openai_images import (
    OPENAI_GENERATIONS_PATH,
    InvalidOpenAIRequest,
    check_openai_generation,
    openai_error,
)
from .responses import (
    api_error,
    bad_request,
    drop_connection,
    json_response,
    oversized_answer,
    storage_error,
    unauthorized,
)
from .state import FakeState, RecordedRequest
from .validation import MAX_SEED, Generation, InvalidRequest, check_generation
from .videos import add_video_routes

TRACE_ID_HEADER = "x-siliconcloud-trace-id"
GENERATIONS_PATH = "/v1/images/generations"
# Edit requests carry up to three input images as data URIs.
MAX_BODY_BYTES = 64 * 1024 * 1024
_TRUNCATED_JSON = b'{"images": ['
# Stands for an unparseable body, which must not look like a JSON `null`.
_NOT_JSON = object()
# Answers a generation request; None means: drop the connection without answering.
_Answer = Callable[[web.Request, object, RecordedRequest], Awaitable[web.StreamResponse | None]]


def create_app(
    state: FakeState, renderer: ImageRenderer, closing: asyncio.Event
) -> web.Application:
    """`closing` wakes requests sleeping on latency or a hang fault so the server stops at once."""
    api = _Api(state, renderer, closing)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.on_response_prepare.append(_add_trace_id)
    app.router.add_post(GENERATIONS_PATH, api.generate)
    app.router.add_post(OPENAI_GENERATIONS_PATH, api.generate_openai)
    app.router.add_get("/files/{name}", api.download)
    add_control_routes(app, state)
    add_account_routes(app, state.accounts)
    add_model_routes(app, state, closing)
    add_video_routes(app, state, closing)
    return app


async def _add_trace_id(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[TRACE_ID_HEADER] = secrets.token_hex(16)


class _Api:
    def __init__(self, state: FakeState, renderer: ImageRenderer, closing: asyncio.Event) -> None:
        self._state = state
        self._renderer = renderer
        self._closing = closing

    async def generate(self, request: web.Request) -> web.StreamResponse:
        return await self._counted_generation(request, self._generate)

    async def generate_openai(self, request: web.Request) -> web.StreamResponse:
        return await self._counted_generation(request, self._generate_openai)

    async def _counted_generation(
        self, request: web.Request, answer: _Answer
    ) -> web.StreamResponse:
        """Record and count a generation on either endpoint, so stats cover both."""
        raw = await request.read()
        try:
            body = orjson.loads(raw)
            is_json = True
        except orjson.JSONDecodeError:
            body, is_json = None, False
        recorded = _record(request, body)
        self._state.record(recorded)
        self._state.count("generate_requests")
        with self._state.in_flight():
            response = await answer(request, body if is_json else _NOT_JSON, recorded)
        if response is None:
            self._state.count("generate_dropped")
            return drop_connection(request)
        recorded.status = response.status
        self._state.count("generate_ok" if response.status == 200 else "generate_errors")
        return response

    async def _generate(
        self, request: web.Request, body: object, recorded: RecordedRequest
    ) -> web.StreamResponse | None:
        """None means: drop the connection without answering."""
        started = time.perf_counter()
        expired = False
        fault = self._take_fault("generate")
        if fault is not None:
            recorded.fault = fault.kind
            if fault.kind == "status":
                return api_error(
                    fault.params["status"],
                    message=fault.params.get("message"),
                    body=fault.params.get("body"),
                    retry_after=fault.params.get("retry_after"),
                )
            if fault.kind == "drop":
                return None
            if fault.kind == "malformed":
                return web.Response(body=_TRUNCATED_JSON, content_type="application/json")
            if fault.kind == "oversized":
                return await oversized_answer(request, fault.params["bytes"], self._state.count)
            if fault.kind == "no_images":
                return json_response(
                    {"images": [], "timings": {"inference": 0.0}, "seed": _random_seed()}
                )
            if fault.kind == "hang" and not await self._pause(fault.params["seconds"]):
                return None
            expired = fault.kind == "expired_images"

        account = self._state.accounts.authorize(request.headers.get("Authorization"))
        if account is None:
            return unauthorized()
        if body is _NOT_JSON:
            return bad_request("Invalid request body: not valid JSON")
        config = self._state.config
        try:
            generation = check_generation(body, config.models())
        except InvalidRequest as invalid:
            return bad_request(invalid.message, invalid.code)
        refusal = self._state.accounts.admit(account, generation.model, generation.count)
        if refusal is not None:
            return refusal
        with self._state.accounts.calling(account):
            if not await self._pause(config.latency):
                return None
            seed = generation.seed if generation.seed is not None else _random_seed()
            images = await self._render(generation, seed)
        origin = str(request.url.origin())
        urls = [{"url": self._publish(image, origin, expired)} for image in images]
        self._state.count("images_generated", len(urls))
        self._state.billing.bill(generation.model, len(urls), account.id)
        inference = round(time.perf_counter() - started, 3)
        return json_response({"images": urls, "timings": {"inference": inference}, "seed": seed})

    async def _generate_openai(
        self, request: web.Request, body: object, recorded: RecordedRequest
    ) -> web.StreamResponse | None:
        """OpenAI's answer shape; no faults, which are queued for the SiliconFlow endpoint."""
        account = self._state.accounts.authorize(request.headers.get("Authorization"))
        if account is None:
            return openai_error(401, "Incorrect API key provided.", code="invalid_api_key")
        if body is _NOT_JSON:
            return openai_error(400, "We could not parse the JSON body of your request.")
        try:
            wanted = check_openai_generation(body)
        except InvalidOpenAIRequest as invalid:
            return openai_error(400, invalid.message, param=invalid.param)
        if not await self._pause(self._state.config.latency):
            return None

        generation = wanted.generation
        assert generation.seed is not None
        images = await self._render(generation, generation.seed)
        if wanted.response_format == "b64_json":
            data = [{"b64_json": base64.b64encode(image.to_bytes()).decode()} for image in images]
        else:
            origin = str(request.url.origin())
            data = [{"url": self._publish(image, origin, expired=False)} for image in images]
        self._state.count("images_generated", len(data))
        self._state.billing.bill(generation.model, len(data), account.id)
        return json_response({"created": int(time.time()), "data": data})

    async def download(self, request: web.Request) -> web.StreamResponse:
        recorded = _record(request, None)
        self._state.record_download(recorded)
        self._state.count("downloads")
        response = await self._download(request, recorded)
        if response is None:
            self._state.count("downloads_dropped")
            return drop_connection(request)
        recorded.status = response.status
        if response.status == 404:
            self._state.count("downloads_not_found")
        elif response.status == 200:
            self._state.count("downloads_ok")
        return response

    async def _download(
        self, request: web.Request, recorded: RecordedRequest
    ) -> web.StreamResponse | None:
        """None means: drop the connection without answering."""
        truncated = corrupt = False
        fault = self._take_fault("download")
        if fault is not None:
            recorded.fault = fault.kind
            if fault.kind == "status":
                return storage_error(fault.params["status"], body=fault.params.get("body"))
            if fault.kind == "drop":
                return None
            if fault.kind == "hang" and not await self._pause(fault.params["seconds"]):
                return None
            truncated = fault.kind == "malformed"
            corrupt = fault.kind == "corrupt"
        if not await self._pause(self._state.config.download_latency):
            return None

        stored = self._state.files.get(request.match_info["name"])
        if stored is None:
            return storage_error(404)
        parts = stored.image.parts
        if truncated:
            # A complete HTTP response whose image is cut short: only a decoder notices.
            whole = stored.image.to_bytes()
            parts = (whole[: len(whole) // 2],)
        elif corrupt:
            parts = (_corrupted(stored.image.to_bytes()),)
        response = web.StreamResponse(headers={"Content-Type": stored.image.content_type})
        response.content_length = sum(len(part) for part in parts)
        await response.prepare(request)
        if request.method != "HEAD":
            for part in parts:
                await response.write(part)
        await response.write_eof()
        return response

    def _take_fault(self, target: FaultTarget) -> Fault | None:
        fault = self._state.faults.take(target)
        if fault is not None:
            self._state.count("faults_applied")
        return fault

    async def _pause(self, seconds: float) -> bool:
        """Sleep; False if the server began closing meanwhile."""
        if seconds <= 0:
            return not self._closing.is_set()
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def _render(self, generation: Generation, seed: int) -> list[RenderedImage]:
        config = self._state.config
        width, height = render_size(
            generation.width, generation.height, config.render_scale, config.max_render_side
        )
        # Batch images get neighbouring seeds so each one differs, as real batches do.
        seeds = [(seed + i) % (MAX_SEED + 1) for i in range(generation.count)]
        return list(
            await asyncio.gather(
                *(
                    self._renderer.render(
                        width,
                        height,
                        generation.prompt,
                        image_seed,
                        generation.image_format or config.image_format,
                        config.image_min_bytes,
                    )
                    for image_seed in seeds
                )
            )
        )

    def _publish(self, image: RenderedImage, origin: str, expired: bool) -> str:
        if expired:
            name, expires = new_file_name(image), int(time.time()) - 1
        else:
            name, expires = self._state.files.add(image, self._state.config.url_ttl)
        return f"{origin}/files/{name}?Expires={expires}&Signature=fake"


def _record(request: web.Request, body: object) -> RecordedRequest:
    headers = {name.lower(): value for name, value in request.headers.items()}
    return RecordedRequest(request.method, request.path_qs, headers, body)


def _corrupted(whole: bytes) -> bytes:
    """The file with its middle zeroed: signature, end marker and length stay as they were, so
    only decoding it shows the damage."""
    keep = min(64, len(whole) // 4)
    return whole[:keep] + bytes(len(whole) - 2 * keep) + whole[len(whole) - keep :]


def _random_seed() -> int:
    return random.randint(0, MAX_SEED)
