"""`POST /v1/chat/completions`: images from the latest user message, answered as Markdown."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from ..bodies import openapi_request_body, read_chat_request
from ..chat import ChatAnswer, ChatStream, answer_for, chat_job, completion, new_completion_id
from ..protocol import ChatCompletion, ChatCompletionRequest
from .common import (
    ERROR_RESPONSES,
    ClientDep,
    ServicesDep,
    json_response,
    note_generation,
    note_job,
    public_base_url,
)
from .images import partial_failure_headers

router = APIRouter(prefix="/v1", tags=["chat"])

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx and similar proxies otherwise buffer the stream, holding back keepalives.
    "X-Accel-Buffering": "no",
}


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
    generator = services.generator
    job = await chat_job(
        body,
        generator=generator,
        inputs=services.inputs,
        default_response_format=settings.default_response_format,
    )
    note_job(request, job)
    reservation = await services.admit(client, job)
    base_url = public_base_url(request, settings.public_base_url)

    if body.stream:
        stream = ChatStream(
            completion_id=new_completion_id(),
            model=job.model,
            provider=settings.provider_label,
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
        )
        progress: asyncio.Queue[str] | None = (
            asyncio.Queue() if settings.chat_progress == "reasoning" else None
        )

        async def produce_answer() -> ChatAnswer:
            generation = await services.generate(
                job, reservation, progress.put_nowait if progress else None
            )
            note_generation(request, generation)
            return await answer_for(generation, generator, job.response_format, base_url)

        return StreamingResponse(
            stream.events(
                produce_answer(), keepalive=settings.stream_keepalive_seconds, progress=progress
            ),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )

    generation = await services.generate(job, reservation)
    note_generation(request, generation)
    answer = await answer_for(generation, generator, job.response_format, base_url)
    result = completion(
        answer,
        completion_id=new_completion_id(),
        created=int(time.time()),
        model=job.model,
        provider=settings.provider_label,
    )
    return json_response(result, headers=partial_failure_headers(generation))
