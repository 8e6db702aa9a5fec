"""`POST /v1/responses`: the Responses API, its image_generation_call items made by the corridor."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from ..bodies import load_json
from ..links import public_base_url
from ..observability import note_of
from ..render.responses import ResponseShape, ResponseStream, responses_renderer
from ..render.sse import SSE_HEADERS
from ..responses_api import ResponsesRequest, image_tool, read_responses_request, responses_plan
from ..validation import not_an_object
from .common import ERROR_RESPONSES, ClientDep, ServicesDep, url_maker

router = APIRouter(prefix="/v1", tags=["responses"])


@router.post(
    "/responses",
    responses={
        **ERROR_RESPONSES,
        200: {
            "description": "A response object, or with stream=true its events (Server-Sent Events)",
            "content": {"application/json": {}, "text/event-stream": {}},
        },
    },
    summary="Generate or edit images through the Responses API",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ResponsesRequest.model_json_schema()}},
        }
    },
)
async def create_response(request: Request, services: ServicesDep, client: ClientDep) -> Response:
    settings = services.settings
    raw = await load_json(await request.body(), max_string=settings.max_body_bytes, param="input")
    if not isinstance(raw, dict):
        raise not_an_object()
    body = await read_responses_request(raw, max_items=settings.max_chat_messages)
    base_url = public_base_url(request, settings.public_base_url)
    corridor = services.corridor
    plan = await responses_plan(
        body,
        corridor=corridor,
        inputs=services.inputs,
        hosted_url=lambda name: f"{base_url}/v1/files/images/{name}",
    )
    shape = ResponseShape(
        plan=plan,
        url_for=url_maker(request, services),
        instructions=body.instructions if isinstance(body.instructions, str) else None,
        metadata=body.metadata or {},
        has_tool=image_tool(body) is not None,
    )
    if not body.stream:
        return await corridor.answer(
            request, client, plan, responses_renderer(shape), endpoint="responses"
        )
    ticket = await corridor.open(plan, client, note_of(request), endpoint="responses")
    events = ResponseStream(shape).events(
        ticket.generation,
        keepalive=settings.stream_keepalive_seconds,
        delivered=ticket.deliver,
        closing=request.app.state.drain.closing,
    )
    response = StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    return corridor.stream(ticket, response)
