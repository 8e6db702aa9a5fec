"""`POST /v1/chat/completions`: images from the latest user message, answered as Markdown.

A chat client's background task (a title, tags, ...) is answered first, for free (`tasks.py`);
a video model's chat is a video job (`chat_video.py`).
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from ..bodies import openapi_request_body, read_chat_request
from ..chat import chat_plan
from ..chat_video import is_video_chat
from ..generate import Generation
from ..observability import note_of
from ..protocol import ChatCompletionRequest
from ..protocol_responses import ChatCompletion
from ..render.chat import (
    ChatAnswer,
    ChatStream,
    answer_for,
    completion,
    new_completion_id,
    text_completion,
)
from ..render.images import partial_failure_headers
from ..render.sse import SSE_HEADERS
from ..services import Services
from ..tasks import TaskAnswer, chat_task_answer
from .chat_video import video_chat
from .common import ERROR_RESPONSES, ClientDep, ServicesDep, json_response, url_maker

router = APIRouter(prefix="/v1", tags=["chat"])


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={
        **ERROR_RESPONSES,
        200: {
            "description": "A chat.completion, or with stream=true Server-Sent Events",
            "content": {"text/event-stream": {}},
        },
    },
    summary="Generate or edit images from a chat",
    openapi_extra={"requestBody": openapi_request_body(ChatCompletionRequest)},
)
async def create_chat_completion(
    request: Request, services: ServicesDep, client: ClientDep
) -> Response:
    settings = services.settings
    body = await read_chat_request(
        request, max_messages=settings.max_chat_messages, max_string=settings.max_body_bytes
    )
    # After the key and the client's rpm limit (the dependency), before anything is reserved.
    task = chat_task_answer(body, settings)
    if task is not None:
        return answered_task(request, services, body, task)
    if is_video_chat(body, settings.video_models):
        return await video_chat(request, services, client, body)
    corridor = services.corridor
    plan = await chat_plan(
        body,
        corridor=corridor,
        inputs=services.inputs,
        default_response_format=settings.chat_default_format,
    )
    response_format = plan.job.response_format
    url_for = url_maker(request, services)

    if not body.stream:

        async def rendered(generation: Generation) -> Response:
            answer = await answer_for(generation, response_format, url_for)
            result = completion(
                answer,
                completion_id=new_completion_id(),
                created=int(time.time()),
                model=plan.job.model,
                provider=settings.provider_label,
            )
            return json_response(result, headers=partial_failure_headers(generation))

        return await corridor.answer(request, client, plan, rendered, endpoint="chat")

    ticket = await corridor.open(plan, client, note_of(request), endpoint="chat")
    stream = ChatStream(
        completion_id=new_completion_id(),
        model=plan.job.model,
        provider=settings.provider_label,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
    )
    progress: asyncio.Queue[str] | None = (
        asyncio.Queue() if settings.chat_progress == "reasoning" else None
    )

    async def produce_answer() -> ChatAnswer:
        generation = await ticket.generation(progress.put_nowait if progress else None)
        return await answer_for(generation, response_format, url_for)

    events = stream.events(
        produce_answer(),
        keepalive=settings.stream_keepalive_seconds,
        delivered=ticket.deliver,
        progress=progress,
        closing=request.app.state.drain.closing,
    )
    response = StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    return corridor.stream(ticket, response)


def answered_task(
    request: Request, services: Services, body: ChatCompletionRequest, task: TaskAnswer
) -> Response:
    """A background task's answer, in the shape the client asked for: no image, no charge."""
    settings = services.settings
    model = body.model or services.generator.catalogue.default_model
    note = note_of(request)
    note.model, note.images, note.task = model, 0, task.task
    services.metrics.chat_tasks.labels(task.task).inc()
    if not body.stream:
        result = text_completion(task.content, model=model, provider=settings.provider_label)
        return json_response(result)
    stream = ChatStream(
        completion_id=new_completion_id(),
        model=model,
        provider=settings.provider_label,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
    )
    return StreamingResponse(
        stream.text_events(task.content), media_type="text/event-stream", headers=SSE_HEADERS
    )
