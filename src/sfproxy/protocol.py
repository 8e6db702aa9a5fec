"""OpenAI wire types this service accepts: the request bodies of the images and chat APIs. No I/O.

Requests allow extra fields (clients spread every UI parameter into the body); the answers,
which are exact, are in protocol_responses.py. The image parameters of the original service are
accepted under their `sf_` names and under SiliconFlow's own names; the `sf_` name wins when
both are sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    field_validator,
    model_validator,
)

from .catalogue import is_ratio, validate_size
from .errors import InvalidRequestError
from .validation import problem

ResponseFormat = Literal["url", "b64_json"]
OutputFormat = Literal["png", "jpeg", "webp"]
ChatRole = Literal["system", "developer", "user", "assistant", "tool", "function"]

# `sf_image_size` goes to SiliconFlow as it is, so the document states exactly what passes:
# WIDTHxHEIGHT with each side from MIN_SIDE (64) to MAX_SIDE (4096), or auto.
_SIDE = "(?:6[4-9]|[7-9][0-9]|[1-9][0-9]{2}|[1-3][0-9]{3}|40[0-8][0-9]|409[0-6])"
IMAGE_SIZE_PATTERN = f"^(?:[aA][uU][tT][oO]|{_SIDE}x{_SIDE})$"
_IMAGE_SIZE = re.compile(IMAGE_SIZE_PATTERN)


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ImageParams(_Request):
    """What every image-making endpoint accepts besides the prompt."""

    model: str | None = Field(
        default=None, description="Model id or alias (dall-e-3, gpt-image-1, ...)."
    )
    n: int = Field(default=1, ge=1, le=10, description="Number of images, 1 to 10.")
    size: str | None = Field(
        default=None,
        description="WIDTHxHEIGHT, an aspect ratio such as 16:9, or auto; fitted to the model.",
        examples=["1024x1024"],
    )
    response_format: ResponseFormat | None = Field(
        default=None, description="url or b64_json; absent: see README, Response format."
    )
    seed: int | None = Field(
        default=None, ge=0, le=9_999_999_999, validation_alias=AliasChoices("sf_seed", "seed")
    )
    num_inference_steps: int | None = Field(
        default=None,
        ge=1,
        le=100,
        validation_alias=AliasChoices("sf_num_steps", "num_inference_steps"),
    )
    guidance_scale: float | None = Field(
        default=None,
        ge=0,
        le=20,
        validation_alias=AliasChoices("sf_guidance_scale", "guidance_scale"),
    )
    cfg: float | None = Field(
        default=None, ge=0.1, le=20, validation_alias=AliasChoices("sf_cfg", "cfg")
    )
    negative_prompt: str | None = Field(
        default=None,
        max_length=10_000,
        validation_alias=AliasChoices("sf_negative_prompt", "negative_prompt"),
    )
    image_size: str | None = Field(
        default=None,
        description="Sent to SiliconFlow exactly as given; wins over size.",
        validation_alias=AliasChoices("sf_image_size", "image_size"),
        json_schema_extra={"pattern": IMAGE_SIZE_PATTERN},
    )
    batch_size: int | None = Field(
        default=None, ge=1, le=16, validation_alias=AliasChoices("sf_batch_size", "batch_size")
    )
    aspect_ratio: str | None = Field(
        default=None,
        description="An aspect ratio such as 16:9; used when size is absent.",
        validation_alias=AliasChoices("sf_aspect_ratio", "aspect_ratio"),
    )
    prompt_enhancement: bool | None = Field(
        default=None,
        description="SiliconFlow rewrites the prompt first; sent to the models that take it.",
        validation_alias=AliasChoices("sf_prompt_enhancement", "prompt_enhancement"),
    )

    # OpenAI's gpt-image fields (see README, "Response format"). Sent by clients written for
    # gpt-image-1: `output_format`/`output_compression` are honoured, the others reported back.
    output_format: OutputFormat | None = Field(
        default=None, description="png, jpeg or webp: the images are converted to it."
    )
    output_compression: int | None = Field(
        default=None, ge=0, le=100, description="JPEG/WebP quality, 0 to 100."
    )
    quality: str | None = Field(default=None, max_length=32)
    background: str | None = Field(default=None, max_length=32)
    moderation: str | None = Field(default=None, max_length=32)
    input_fidelity: str | None = Field(default=None, max_length=32)
    stream: bool = False
    partial_images: int | None = Field(
        default=None, ge=0, le=3, description="Accepted; SiliconFlow makes no partial images."
    )

    @field_validator("output_format", mode="before")
    @classmethod
    def _format_name(cls, value: Any) -> Any:
        if value == "":
            return None
        return "jpeg" if isinstance(value, str) and value.lower() == "jpg" else value

    @field_validator("size", "aspect_ratio")
    @classmethod
    def _check_size(cls, value: str | None) -> str | None:
        return validate_size(value)

    @field_validator("image_size")
    @classmethod
    def _check_image_size(cls, value: str | None) -> str | None:
        if value is not None and _IMAGE_SIZE.fullmatch(value) is None:
            raise problem(
                "invalid_size",
                "'{value}' is not WIDTHxHEIGHT such as 1024x1024 (each side 64 to 4096) or auto",
                value=value,
            )
        return validate_size(value)

    @field_validator("aspect_ratio")
    @classmethod
    def _check_aspect_ratio(cls, value: str | None) -> str | None:
        if value is not None and not is_ratio(value):
            raise problem(
                "invalid_aspect_ratio", "'{value}' is not a ratio such as 16:9", value=value
            )
        return value

    @field_validator("response_format", mode="before")
    @classmethod
    def _blank_format(cls, value: Any) -> Any:
        # Some clients send an empty string for "not chosen".
        return None if value == "" else value


def _non_blank(value: str) -> str:
    if not value.strip():
        raise problem("blank", "must not be empty")
    return value


# Chat prompts (the latest user message) are held to the same limit.
MAX_PROMPT_CHARS = 32_000
Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]


class ImageGenerationRequest(ImageParams):
    """`POST /v1/images/generations`."""

    prompt: Prompt
    # SiliconFlow's own input-image fields (data URIs or URLs), which the SiliconFlow providers
    # of Cherry Studio and LobeChat send to this endpoint for image-to-image and edits.
    image: str | None = Field(default=None, description="Input image (SiliconFlow's name).")
    image2: str | None = Field(default=None, description="Second input image (edit models).")
    image3: str | None = Field(default=None, description="Third input image (edit models).")

    _prompt_not_blank = field_validator("prompt")(_non_blank)

    def input_images(self) -> tuple[str, ...]:
        """The input images in order; raises `InvalidRequestError` for a gap (image2 alone)."""
        sent = {"image": self.image, "image2": self.image2, "image3": self.image3}
        names = [name for name, image in sent.items() if image]
        expected = list(sent)[: len(names)]
        if names != expected:
            missing = next(name for name in expected if name not in names)
            raise InvalidRequestError(
                f"Input images are numbered in order: {names[-1]} was sent without {missing}.",
                param=missing,
            )
        return tuple(sent[name] or "" for name in names)


class ImageEditJSONRequest(ImageParams):
    """`POST /v1/images/edits` as JSON: images as URLs or data URIs."""

    prompt: Prompt
    image: str | Annotated[list[str], Field(min_length=1)] = Field(
        description="An image URL or data URI, or a list of them."
    )
    mask: Any = None

    _prompt_not_blank = field_validator("prompt")(_non_blank)

    @field_validator("image", mode="before")
    @classmethod
    def _some_image(cls, value: Any) -> Any:
        # Said here, as pydantic would name a union member ("image.list[str]") instead.
        if value == []:
            raise problem("too_short", "send at least one image")
        return value


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ImageURL(_Request):
    url: str
    detail: str | None = None


class ImagePart(_Request):
    type: Literal["image_url"]
    image_url: ImageURL | str

    @property
    def url(self) -> str:
        return self.image_url if isinstance(self.image_url, str) else self.image_url.url


class OtherPart(_Request):
    """Parts this service does not read (audio, files, ...), kept so they are not a 400."""

    type: str


ContentPart = Annotated[TextPart | ImagePart | OtherPart, Field(union_mode="left_to_right")]


class ChatMessage(_Request):
    role: ChatRole
    content: str | list[ContentPart] | None = None


class StreamOptions(_Request):
    include_usage: bool = False


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    """A chat's `response_format` object asking for JSON: `json_object` or `json_schema`."""

    type: Literal["json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


def _chat_response_format_schema(schema: dict[str, Any]) -> None:
    # The document shows the objects the wrap validator below accepts besides the strings.
    schema.setdefault("properties", {})["response_format"] = {
        "anyOf": [
            {"type": "string", "enum": ["url", "b64_json"]},
            {
                "type": "object",
                "properties": {
                    "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
                    "json_schema": {"type": "object"},
                },
                "required": ["type"],
            },
            {"type": "null"},
        ],
        "description": 'url, b64_json, or {"type": "text"}; JSON formats are refused (400) '
        "except for chat clients' background tasks.",
    }


class ChatCompletionRequest(ImageParams):
    """`POST /v1/chat/completions`: the latest user message is the prompt.

    `response_format` is also OpenAI chat's object: `{"type": "text"}` is the same as none, and
    `json_object` / `json_schema` are kept in `json_answer` (the field itself is then none), so
    the route can answer a client's background task in JSON and refuse any other such request.
    """

    model_config = ConfigDict(
        extra="allow", populate_by_name=True, json_schema_extra=_chat_response_format_schema
    )

    messages: list[ChatMessage] = Field(min_length=1)
    stream_options: StreamOptions | None = None
    _json_answer: JsonAnswer | None = PrivateAttr(default=None)

    @property
    def json_answer(self) -> JsonAnswer | None:
        return self._json_answer

    @model_validator(mode="wrap")
    @classmethod
    def _chat_response_format(
        cls, data: Any, handler: ModelWrapValidatorHandler[ChatCompletionRequest]
    ) -> ChatCompletionRequest:
        asked = None
        value = data.get("response_format") if isinstance(data, dict) else None
        if isinstance(value, dict) and value.get("type") in ("text", "json_object", "json_schema"):
            kind = value["type"]
            if kind != "text":
                schema = value.get("json_schema")
                asked = JsonAnswer(kind, schema if isinstance(schema, dict) else None)
            data = {**data, "response_format": None}
        request = handler(data)
        request._json_answer = asked
        return request
