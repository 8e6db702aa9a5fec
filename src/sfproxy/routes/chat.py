"""`POST /v1/chat/completions`: images from the latest user message, answered as Markdown."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from ..chat import (
    ChatAnswer,
    ChatStream,
    answer_for,
    completion,
    latest_user_turn,
    new_completion_id,
)
from ..errors import InvalidRequestError
from ..generate import ImageJob
from ..protocol import ChatCompletion, ChatCompletionRequest
from .common import ERROR_RESPONSES, ClientDep, ServicesDep, json_response, public_base_url
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
    summary="Generate images from a chat",
)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, services: ServicesDep, _client: ClientDep
) -> Response:
    turn = latest_user_turn(body.messages)
    if not turn.text:
        raise InvalidRequestError(
            "The latest user message has no text to use as the image prompt.", param="messages"
        )
    job = ImageJob.from_params(
        body,
        prompt=turn.text,
        catalogue=services.catalogue,
        default_response_format=services.settings.default_response_format,
    )
    generator = services.generator
    generator.check(job)
    base_url = public_base_url(request, services.settings.public_base_url)
    provider = services.settings.provider_label

    if body.stream:
        stream = ChatStream(
            completion_id=new_completion_id(),
            model=job.model,
            provider=provider,
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
        )

        async def produce_answer() -> ChatAnswer:
            generation = await generator.run(job)
            return await answer_for(generation, generator, job.response_format, base_url)

        return StreamingResponse(
            stream.events(produce_answer(), keepalive=services.settings.stream_keepalive_seconds),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )

    generation = await generator.run(job)
    answer = await answer_for(generation, generator, job.response_format, base_url)
    result = completion(
        answer,
        completion_id=new_completion_id(),
        created=int(time.time()),
        model=job.model,
        provider=provider,
    )
    return json_response(result, headers=partial_failure_headers(generation))
