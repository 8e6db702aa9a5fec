"""`/_fake/...`: the Python control surface over HTTP, for tests driving the fake from another
process. Unauthenticated, which is why the fake only ever binds loopback."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from .responses import json_response

if TYPE_CHECKING:
    from .state import FakeState

CONTROL_PREFIX = "/_fake"
_FAULT_FIELDS = ("kind", "count", "target", "params")


def add_control_routes(app: web.Application, state: FakeState) -> None:
    control = _Control(state)
    router = app.router
    router.add_get(f"{CONTROL_PREFIX}/faults", control.list_faults)
    router.add_post(f"{CONTROL_PREFIX}/faults", control.add_fault)
    router.add_delete(f"{CONTROL_PREFIX}/faults", control.clear_faults)
    router.add_get(f"{CONTROL_PREFIX}/requests", control.list_requests)
    router.add_delete(f"{CONTROL_PREFIX}/requests", control.clear_requests)
    router.add_get(f"{CONTROL_PREFIX}/downloads", control.list_downloads)
    router.add_delete(f"{CONTROL_PREFIX}/downloads", control.clear_downloads)
    router.add_post(f"{CONTROL_PREFIX}/expire", control.expire)
    router.add_get(f"{CONTROL_PREFIX}/config", control.get_config)
    router.add_put(f"{CONTROL_PREFIX}/config", control.put_config)
    router.add_get(f"{CONTROL_PREFIX}/stats", control.get_stats)
    router.add_delete(f"{CONTROL_PREFIX}/stats", control.reset_stats)
    router.add_get(f"{CONTROL_PREFIX}/billing", control.get_billing)
    router.add_delete(f"{CONTROL_PREFIX}/billing", control.reset_billing)
    router.add_put(f"{CONTROL_PREFIX}/billing/prices", control.put_prices)


class _Control:
    def __init__(self, state: FakeState) -> None:
        self._state = state

    async def list_faults(self, request: web.Request) -> web.Response:
        return json_response([fault.to_json() for fault in self._state.pending_faults])

    async def add_fault(self, request: web.Request) -> web.Response:
        """Body: {"kind", "count"?, "target"?, "params"?}; other top-level keys join params."""
        data = await json_object(request)
        params = data.get("params") or {}
        if not isinstance(params, dict):
            raise control_error("params must be a JSON object")
        params = {**params, **{k: v for k, v in data.items() if k not in _FAULT_FIELDS}}
        try:
            fault = self._state.add_fault(
                data.get("kind", ""),
                count=data.get("count", 1),
                target=data.get("target", "generate"),
                **params,
            )
        except (ValueError, TypeError) as error:
            raise control_error(str(error)) from None
        return json_response(fault.to_json(), status=201)

    async def clear_faults(self, request: web.Request) -> web.Response:
        return json_response({"cleared": self._state.clear_faults()})

    async def list_requests(self, request: web.Request) -> web.Response:
        return json_response([recorded.to_json() for recorded in self._state.requests])

    async def clear_requests(self, request: web.Request) -> web.Response:
        return json_response({"cleared": self._state.clear_requests()})

    async def list_downloads(self, request: web.Request) -> web.Response:
        return json_response([recorded.to_json() for recorded in self._state.downloads])

    async def clear_downloads(self, request: web.Request) -> web.Response:
        return json_response({"cleared": self._state.clear_downloads()})

    async def expire(self, request: web.Request) -> web.Response:
        return json_response({"expired": self._state.expire_images()})

    async def get_config(self, request: web.Request) -> web.Response:
        return json_response(self._state.config_json())

    async def put_config(self, request: web.Request) -> web.Response:
        changes = await json_object(request)
        try:
            return json_response(self._state.apply_config_json(changes))
        except (ValueError, TypeError) as error:
            raise control_error(str(error)) from None

    async def get_stats(self, request: web.Request) -> web.Response:
        return json_response(self._state.stats)

    async def reset_stats(self, request: web.Request) -> web.Response:
        self._state.reset_stats()
        return json_response(self._state.stats)

    async def get_billing(self, request: web.Request) -> web.Response:
        return json_response(self._state.billing.totals())

    async def reset_billing(self, request: web.Request) -> web.Response:
        self._state.billing.reset()
        return json_response(self._state.billing.totals())

    async def put_prices(self, request: web.Request) -> web.Response:
        """Body: {model: price per image (a decimal string) or null for unknown}."""
        prices = await json_object(request)
        try:
            self._state.billing.set_prices(prices)
        except ValueError as error:
            raise control_error(str(error)) from None
        return json_response(self._state.billing.totals())


async def json_object(request: web.Request) -> dict[str, Any]:
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise control_error("body must be JSON") from None
    if not isinstance(data, dict):
        raise control_error("body must be a JSON object")
    return data


def control_error(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=orjson.dumps({"error": message}).decode(), content_type="application/json"
    )
