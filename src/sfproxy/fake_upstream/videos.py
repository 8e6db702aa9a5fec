"""SiliconFlow's asynchronous video API in the fake, the storage behind its result URLs, and the
`/_fake/videos` controls.

- `POST /v1/video/submit` `{model, prompt, negative_prompt?, image_size, image?, seed?}` ->
  `{"requestId"}`: checked as siliconflow-api.md says, authenticated and counted per account as
  a generation is (the same keys, limits and balances, see accounts.py), recorded in
  `fake.requests`. Faults queued for `video_submit` apply first, as for `generate`; after a
  `hang` the job is still made, as SiliconFlow would (a submit that timed out may have run).
- `POST /v1/video/status` `{"requestId"}` -> `{"status", "reason", "position"?, "results"}`.
  A requestId that does not exist, or that another account submitted, gets the same 400
  (code 20015, "Invalid parameter requestId: ..."): a key cannot tell another account's job
  from no job, so the proxy must poll with the key of the account that submitted.
- `GET /videos/{name}.mp4?Expires=...`: the result, for `video_url_ttl_seconds` after the job
  succeeded; then 403 with the object storage's "Request has expired" body.

A video is billed (`fake.billing`, per account) when its job succeeds, never when it fails.

Over HTTP, for a fake in another process: `GET /_fake/videos` (the jobs), `DELETE` (reset),
`POST /_fake/videos/hold`, `/release`, `/fail_next` `{"reason"?, "count"?}` and `/expire`
`{"request_id"?}`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from .clips import MP4_CONTENT_TYPE, ClipRenderer, ClipSpec
from .control import CONTROL_PREFIX, control_error, json_object
from .faults import Fault, FaultTarget
from .models import VIDEO_MODELS
from .responses import (
    api_error,
    bad_request,
    drop_connection,
    json_response,
    oversized_answer,
    storage_error,
    unauthorized,
)
from .state import RecordedRequest
from .validation import InvalidRequest
from .video_jobs import check_submission

if TYPE_CHECKING:
    from .state import FakeState

SUBMIT_PATH = "/v1/video/submit"
STATUS_PATH = "/v1/video/status"
FILES_PREFIX = "/videos"
_TRUNCATED_JSON = b'{"requestId": '
_NOT_JSON = object()
_log = logging.getLogger(__name__)


def add_video_routes(app: web.Application, state: FakeState, closing: asyncio.Event) -> None:
    routes = _VideoRoutes(state, closing)
    router = app.router
    router.add_post(SUBMIT_PATH, routes.submit)
    router.add_post(STATUS_PATH, routes.status)
    router.add_get(f"{FILES_PREFIX}/{{name}}", routes.download)
    router.add_get(f"{CONTROL_PREFIX}/videos", routes.list_jobs)
    router.add_delete(f"{CONTROL_PREFIX}/videos", routes.reset)
    router.add_post(f"{CONTROL_PREFIX}/videos/hold", routes.hold)
    router.add_post(f"{CONTROL_PREFIX}/videos/release", routes.release)
    router.add_post(f"{CONTROL_PREFIX}/videos/fail_next", routes.fail_next)
    router.add_post(f"{CONTROL_PREFIX}/videos/expire", routes.expire)
    app.on_cleanup.append(routes.close)


class _VideoRoutes:
    def __init__(self, state: FakeState, closing: asyncio.Event) -> None:
        self._state = state
        self._videos = state.videos
        self._closing = closing
        self._clips = ClipRenderer(state.count)
        # Timers that finish due jobs, and clips being made ahead of their download.
        self._timers: set[asyncio.TimerHandle] = set()
        self._making: set[asyncio.Task[None]] = set()

    async def submit(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        headers = {name.lower(): value for name, value in request.headers.items()}
        recorded = RecordedRequest(
            request.method, request.path_qs, headers, None if body is _NOT_JSON else body
        )
        self._state.record(recorded)
        self._state.count("video_submits")
        response = await self._submit(request, body)
        if request.transport is not None and not request.transport.is_closing():
            recorded.status = response.status  # stays None for a dropped connection
        return response

    async def _submit(self, request: web.Request, body: object) -> web.StreamResponse:
        failure = await self._fault(request, "video_submit")
        if failure is not None:
            return failure
        account = self._state.accounts.authorize(request.headers.get("Authorization"))
        if account is None:
            return unauthorized()
        if body is _NOT_JSON:
            return bad_request("Invalid request body: not valid JSON")
        try:
            submission = check_submission(body, VIDEO_MODELS)
        except InvalidRequest as invalid:
            return bad_request(invalid.message, invalid.code)
        refusal = self._state.accounts.admit(account, submission.model, 1)
        if refusal is not None:
            return refusal
        job = self._videos.submit(account.id, submission)
        loop = asyncio.get_running_loop()
        self._timers = {timer for timer in self._timers if timer.when() > loop.time()}
        # So that a job nobody polls still succeeds, and is billed, when it is due.
        self._timers.add(loop.call_later(job.due_in, self._videos.settle))
        if job.spec is not None:
            self._make_clip(job.request_id, job.spec)
        return json_response({"requestId": job.request_id})

    def _make_clip(self, request_id: str, spec: ClipSpec) -> None:
        """Encode ahead, so that a download right after `Succeed` finds the clip ready."""

        async def make() -> None:
            try:
                self._videos.attach_clip(request_id, await self._clips.render(spec))
            except Exception:
                # The download tries again and answers 500 if it fails there too.
                _log.exception("the fake could not encode a clip")

        task = asyncio.create_task(make())
        self._making.add(task)
        task.add_done_callback(self._making.discard)

    async def status(self, request: web.Request) -> web.StreamResponse:
        self._state.count("video_status_calls")
        body = await _json_body(request)
        failure = await self._fault(request, "video_status")
        if failure is not None:
            return failure
        account = self._state.accounts.authorize(request.headers.get("Authorization"))
        if account is None:
            return unauthorized()
        request_id = body.get("requestId") if isinstance(body, dict) else None
        if not isinstance(request_id, str) or not request_id:
            return bad_request("Invalid parameter requestId: requestId is required")
        status = self._videos.status(request_id, account.id, str(request.url.origin()))
        if status is None:
            return bad_request("Invalid parameter requestId: the request does not exist")
        return json_response(status)

    async def download(self, request: web.Request) -> web.StreamResponse:
        self._state.count("video_downloads")
        truncated = False
        fault = self._take_fault("video_download")
        if fault is not None:
            if fault.kind == "status":
                return storage_error(fault.params["status"], body=fault.params.get("body"))
            if fault.kind == "drop":
                return drop_connection(request)
            if fault.kind == "hang" and not await self._pause(fault.params["seconds"]):
                return drop_connection(request)
            truncated = fault.kind == "malformed"
        found = self._videos.file(request.match_info["name"])
        if found is None:
            return storage_error(404)
        if found.expired:
            return _expired()
        clip = found.clip
        if clip is None:
            try:
                clip = await self._clips.render(found.spec)
            except Exception:
                _log.exception("the fake could not encode a clip")
                return storage_error(500)
            self._videos.attach_clip(found.request_id, clip)
        if truncated:
            # A complete HTTP answer whose MP4 is cut short: only a demuxer notices.
            clip = clip[: len(clip) // 2]
        elif request.method != "HEAD":
            self._videos.count_download(found.request_id)
        return web.Response(body=clip, content_type=MP4_CONTENT_TYPE)

    async def _fault(self, request: web.Request, target: FaultTarget) -> web.StreamResponse | None:
        """The answer a queued fault gives; None: no fault (or a hang that ended), go on."""
        fault = self._take_fault(target)
        if fault is None:
            return None
        if fault.kind == "status":
            return api_error(
                fault.params["status"],
                message=fault.params.get("message"),
                body=fault.params.get("body"),
                retry_after=fault.params.get("retry_after"),
            )
        if fault.kind == "malformed":
            return web.Response(body=_TRUNCATED_JSON, content_type="application/json")
        if fault.kind == "oversized":
            return await oversized_answer(request, fault.params["bytes"], self._state.count)
        if fault.kind == "hang" and await self._pause(fault.params["seconds"]):
            return None
        return drop_connection(request)

    def _take_fault(self, target: FaultTarget) -> Fault | None:
        fault = self._state.faults.take(target)
        if fault is not None:
            self._state.count("faults_applied")
        return fault

    async def _pause(self, seconds: float) -> bool:
        """Sleep; False if the server began closing meanwhile."""
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def list_jobs(self, request: web.Request) -> web.Response:
        return json_response([job.to_json() for job in self._videos.jobs()])

    async def reset(self, request: web.Request) -> web.Response:
        self._videos.reset()
        return json_response([])

    async def hold(self, request: web.Request) -> web.Response:
        self._videos.hold()
        return json_response({"held": True})

    async def release(self, request: web.Request) -> web.Response:
        self._videos.release()
        return json_response({"held": False})

    async def fail_next(self, request: web.Request) -> web.Response:
        data = await _control_body(request)
        try:
            self._videos.fail_next(**data)
        except (ValueError, TypeError) as error:
            raise control_error(str(error)) from None
        return json_response({"ok": True}, status=201)

    async def expire(self, request: web.Request) -> web.Response:
        data = await _control_body(request)
        try:
            return json_response({"expired": self._videos.expire(data.get("request_id"))})
        except ValueError as error:
            raise control_error(str(error)) from None

    async def close(self, app: web.Application) -> None:
        for timer in self._timers:
            timer.cancel()
        for task in list(self._making):
            task.cancel()
        await asyncio.gather(*self._making, return_exceptions=True)
        # Off the loop: it waits for a clip that may still be encoding.
        await asyncio.get_running_loop().run_in_executor(None, self._clips.close)


async def _json_body(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _NOT_JSON


async def _control_body(request: web.Request) -> dict[str, Any]:
    """A JSON object, or nothing at all (every control field has a default)."""
    if not await request.read():
        return {}
    return await json_object(request)


def _expired() -> web.Response:
    """What OSS answers for a signed URL past its `Expires`."""
    now = formatdate(time.time(), usegmt=True)
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Error>\n  <Code>AccessDenied</Code>\n  <Message>Request has expired.</Message>\n"
        f"  <ServerTime>{now}</ServerTime>\n</Error>\n"
    )
    return web.Response(status=403, text=xml, content_type="application/xml")
