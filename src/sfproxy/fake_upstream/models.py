"""`GET /v1/models`: the models the fake's account has, in SiliconFlow's shape.

Which models those are follows the config on every request (`site`, `listed_models`,
`extra_models`), so a test changes the account's list while the proxy runs. Faults queued
for the `models` target make this endpoint fail without touching generations.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from .config import ModelRule
from .responses import (
    api_error,
    drop_connection,
    json_response,
    oversized_answer,
    unauthorized,
)
from .state import FakeState

MODELS_PATH = "/v1/models"
VIDEO_MODELS = ("Wan-AI/Wan2.2-T2V-A14B", "Wan-AI/Wan2.2-I2V-A14B")
# SiliconFlow's `created` is often 0 for its hosted models; the fake says 0 too, so the proxy
# must not rely on it.
_CREATED = 0


def add_model_routes(app: web.Application, state: FakeState, closing: asyncio.Event) -> None:
    app.router.add_get(MODELS_PATH, _ModelList(state, closing).list_models)


class _ModelList:
    def __init__(self, state: FakeState, closing: asyncio.Event) -> None:
        self._state = state
        self._closing = closing

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        fault = self._state.faults.take("models")
        if fault is not None:
            self._state.count("faults_applied")
            if fault.kind == "status":
                return api_error(
                    fault.params["status"],
                    message=fault.params.get("message"),
                    body=fault.params.get("body"),
                    retry_after=fault.params.get("retry_after"),
                )
            if fault.kind == "drop":
                return drop_connection(request)
            if fault.kind == "malformed":
                return web.Response(text="<html>bad gateway</html>", content_type="text/html")
            if fault.kind == "oversized":
                return await oversized_answer(request, fault.params["bytes"], self._state.count)
            if fault.kind == "hang":
                try:
                    await asyncio.wait_for(self._closing.wait(), fault.params["seconds"])
                except TimeoutError:
                    pass
        if self._state.accounts.authorize(request.headers.get("Authorization")) is None:
            return unauthorized()
        kind = request.query.get("type")
        sub_type = request.query.get("sub_type")
        ids = [
            model
            for model, rule in self._state.config.models().items()
            if kind in (None, "image") and _has_sub_type(rule, sub_type)
        ]
        if kind in (None, "video") and sub_type in (None, "text-to-video", "image-to-video"):
            ids += [
                model
                for model in VIDEO_MODELS
                if sub_type is None or ("T2V" in model) == (sub_type == "text-to-video")
            ]
        data = [
            {"id": model, "object": "model", "created": _CREATED, "owned_by": _owner(model)}
            for model in ids
        ]
        return json_response({"object": "list", "data": data})


def _has_sub_type(rule: ModelRule, sub_type: str | None) -> bool:
    if sub_type is None:
        return True
    if sub_type == "text-to-image":
        return rule.min_images == 0
    if sub_type == "image-to-image":
        return bool(rule.image_fields)
    return False


def _owner(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else "siliconflow"
