"""OpenAI wire types this service returns: images, chat completions and their chunks, model lists
and the error envelope. No I/O.

Responses are exact (`extra="forbid"`), unlike the requests in protocol.py; only a model card
carries more, what the catalogue says of its model. Fields OpenAI leaves out rather than sending
null are left out when they are None.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def _omit_none(value: Any) -> bool:
    return value is None


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageObject(_Response):
    url: str | None = Field(default=None, exclude_if=_omit_none)
    b64_json: str | None = Field(default=None, exclude_if=_omit_none)
    seed: int | None = Field(
        default=None, exclude_if=_omit_none, description="The seed SiliconFlow used."
    )


class ImageLink(_Response):
    url: str


class Timings(_Response):
    inference: float = Field(description="Seconds with a SiliconFlow call or download in flight.")


class ImagesResponse(_Response):
    """OpenAI's answer, with SiliconFlow's own fields beside `data` for clients set up for it.

    `images[].url` is always a URL (this service's, or SiliconFlow's with IMAGE_STORE=off),
    even when `data` carries b64_json: Cherry Studio's and LobeChat's SiliconFlow providers
    read `images[0].url`.
    """

    created: int
    data: list[ImageObject]
    size: str | None = Field(
        default=None, exclude_if=_omit_none, description="The image_size actually sent."
    )
    output_format: str | None = Field(default=None, exclude_if=_omit_none)
    images: list[ImageLink] = Field(description="SiliconFlow's shape: the images' URLs.")
    timings: Timings
    seed: int | None = Field(
        default=None, exclude_if=_omit_none, description="The first image's seed (SiliconFlow's)."
    )


class Usage(_Response):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ImageRef(_Response):
    type: Literal["image_url"] = "image_url"
    image_url: dict[str, str]


class AssistantMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None
    images: list[ImageRef] | None = Field(default=None, exclude_if=_omit_none)


class ChatChoice(_Response):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop"] = "stop"
    logprobs: None = None


class ChatCompletion(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    provider: str
    choices: list[ChatChoice]
    usage: Usage


class ChunkDelta(_Response):
    role: Literal["assistant"] | None = Field(default=None, exclude_if=_omit_none)
    content: str | None = Field(default=None, exclude_if=_omit_none)
    reasoning_content: str | None = Field(default=None, exclude_if=_omit_none)
    images: list[ImageRef] | None = Field(default=None, exclude_if=_omit_none)


class ChunkChoice(_Response):
    index: int = 0
    delta: ChunkDelta
    finish_reason: Literal["stop"] | None = None
    logprobs: None = None


class ChatCompletionChunk(_Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    provider: str
    choices: list[ChunkChoice]
    # Present (null, or the totals in the last chunk) only when the client asked for usage.
    usage: Usage | None = None


class ModelCard(_Response):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    supported_endpoint_types: list[str] = ["image-generation", "openai"]


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(_Response):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(_Response):
    error: ErrorBody
