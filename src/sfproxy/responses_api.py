"""The Responses API's request (`POST /v1/responses`), and the image job it asks for.

`input` is a string, or a list of items: messages (`input_text` / `input_image` parts, or an
assistant's `output_text`) and earlier `image_generation_call` items. It is read as the chat
conversation it stands for (`chat.py`): the latest user turn is the prompt, and its images, or
the conversation's latest image, are what an edit model works on. Items of other
kinds (function calls, reasoning, ...) are accepted and not read. `instructions` are not part of
the prompt: an image model has no system prompt.

An earlier `image_generation_call` counts as an image of the conversation by its base64
`result`, and an `input_image` may name an image this service hosts by its `file_id` (the name
its URL ends with). Nothing else is kept: an `item_reference` (the AI SDK sends them when
`store` is on) refers to nothing here and is skipped, and a `previous_response_id` is a 400.

The `image_generation` tool's fields (`size`, `quality`, `output_format`, `output_compression`,
`background`, `partial_images`, `action`, and our `sf_*` fields) are the images API's, and win
over the same fields sent beside `input`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from .chat import inline_options, latest_user_turn, previous_image, with_inline_options
from .errors import InvalidRequestError
from .inputs import InputImages
from .plan import ImageJob, Plan
from .protocol import ChatMessage, ImageParams, ImagePart, TextPart
from .store import is_valid_name
from .validation import invalid_request

if TYPE_CHECKING:
    from .corridor import Corridor

Action = Literal["generate", "edit", "auto"]


class _Request(BaseModel):
    # Clients send fields this service does not read (ids, statuses, annotations, ...).
    model_config = ConfigDict(extra="allow")


class InputText(_Request):
    """`input_text` in a user's message, `output_text` in an assistant's."""

    type: Literal["input_text", "output_text"]
    text: str


class InputImage(_Request):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None


class OtherPart(_Request):
    """Parts this service does not read (files, audio, refusals), kept so they are not a 400."""

    type: str


def _part_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if kind in ("input_text", "output_text"):
        return "text"
    return "image" if kind == "input_image" else "other"


Part = Annotated[
    Annotated[InputText, Tag("text")]
    | Annotated[InputImage, Tag("image")]
    | Annotated[OtherPart, Tag("other")],
    Discriminator(_part_kind),
]


class MessageItem(_Request):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Part]


class ImageCallItem(_Request):
    """An earlier `image_generation_call`, with its base64 `result` or only its id."""

    type: Literal["image_generation_call"]
    id: str | None = None
    result: str | None = None
    output_format: str | None = None


class OtherItem(_Request):
    type: str


def _item_kind(value: Any) -> str:
    kind = value.get("type", "message") if isinstance(value, dict) else None
    if kind in ("message", "image_generation_call"):
        return str(kind)
    return "other"


_ITEMS: dict[str, TypeAdapter[Any]] = {
    "message": TypeAdapter(MessageItem),
    "image_generation_call": TypeAdapter(ImageCallItem),
    "other": TypeAdapter(OtherItem),
}
_PART_TAGS = frozenset({"text", "image", "other"})


def _located(exc: ValidationError, *prefix: str | int) -> list[dict[str, Any]]:
    """The errors, located under `prefix` as the client wrote them (no union labels)."""
    errors = []
    for error in exc.errors():
        location: list[str | int] = list(prefix)
        after_index = False
        for part in error["loc"]:
            label = isinstance(part, str) and (part == "str" or part.startswith("list["))
            if not (label or (after_index and part in _PART_TAGS)):
                location.append(part)
            after_index = isinstance(part, int)
        errors.append({**error, "loc": tuple(location)})
    # The deepest first: "content should be a string" is no help about a list of parts.
    return sorted(errors, key=lambda error: -len(error["loc"]))


class ImageGenerationTool(ImageParams):
    """`{"type": "image_generation", ...}`: the images API's parameters, and `action`."""

    type: Literal["image_generation"]
    action: Action | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _openai_tool_model(cls, value: Any) -> Any:
        # The tool names OpenAI's image model (gpt-image-1); the request's `model` is ours.
        return None


class ResponsesRequest(ImageParams):
    """`POST /v1/responses`. `input` is checked item by item by `read_responses_request`."""

    input: str | list[Any] = Field(description="A prompt, or the conversation as items.")
    instructions: Any = Field(default=None, description="Accepted; not part of the prompt.")
    tools: list[dict[str, Any]] | None = None
    previous_response_id: str | None = None
    store: bool | None = Field(default=None, description="Accepted; nothing is kept.")
    metadata: dict[str, str] | None = None


async def read_responses_request(raw: dict[str, Any], *, max_items: int) -> ResponsesRequest:
    """The request in a parsed body, its `input` items validated one at a time."""
    items = raw.get("input")
    if isinstance(items, list) and len(items) > max_items:
        raise InvalidRequestError(
            f"input has {len(items):,} items; at most {max_items:,} are accepted "
            "(MAX_CHAT_MESSAGES). Send the recent part of the conversation.",
            param="input",
        )
    try:
        body = ResponsesRequest.model_validate(raw)
    except ValidationError as exc:
        raise invalid_request(_located(exc)) from None
    if body.previous_response_id is not None:
        raise InvalidRequestError(
            "previous_response_id is not supported: this service keeps no responses. Send the "
            "conversation in input, with the earlier image_generation_call items or images.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    if isinstance(items, list):
        checked = []
        for index, item in enumerate(items):
            try:
                checked.append(_ITEMS[_item_kind(item)].validate_python(item))
            except ValidationError as exc:
                raise invalid_request(_located(exc, "input", index)) from None
            if index % 256 == 255:
                # Validation holds the event loop: other requests get a turn between steps.
                await asyncio.sleep(0)
        body.input = checked
    return body


def image_tool(body: ResponsesRequest) -> ImageGenerationTool | None:
    """The request's `image_generation` tool, if any; other tools are accepted and not used."""
    for index, tool in enumerate(body.tools or []):
        if tool.get("type") == "image_generation":
            try:
                return ImageGenerationTool.model_validate(tool)
            except ValidationError as exc:
                raise invalid_request(_located(exc, "tools", index)) from None
    return None


def image_params(body: ResponsesRequest, tool: ImageGenerationTool | None) -> ResponsesRequest:
    """The request's image parameters, the tool's fields winning over the body's."""
    if tool is None:
        return body
    sent = tool.model_fields_set - {"type", "action", "model"}
    update: dict[str, Any] = {field: getattr(tool, field) for field in sent}
    if "aspect_ratio" in sent:
        update |= {"size": None}
    return body.model_copy(update=update)


def conversation(body: ResponsesRequest, hosted_url: Callable[[str], str]) -> list[ChatMessage]:
    """The `input` as the chat conversation it stands for. `hosted_url`: a stored image's URL."""
    if isinstance(body.input, str):
        return [ChatMessage(role="user", content=body.input)]
    messages: list[ChatMessage] = []
    for item in body.input:
        if isinstance(item, MessageItem):
            messages.append(_chat_message(item, hosted_url))
        elif isinstance(item, ImageCallItem) and item.result:
            part = ImagePart(type="image_url", image_url=_data_uri(item))
            messages.append(ChatMessage(role="assistant", content=[part]))
    return messages


def _chat_message(item: MessageItem, hosted_url: Callable[[str], str]) -> ChatMessage:
    if isinstance(item.content, str):
        return ChatMessage(role=item.role, content=item.content)
    parts: list[TextPart | ImagePart] = []
    for index, part in enumerate(item.content):
        if isinstance(part, InputText):
            parts.append(TextPart(type="text", text=part.text))
        elif isinstance(part, InputImage):
            url = _input_image_url(part, hosted_url, index)
            parts.append(ImagePart(type="image_url", image_url=url))
    return ChatMessage(role=item.role, content=list(parts))


def _input_image_url(part: InputImage, hosted_url: Callable[[str], str], index: int) -> str:
    if part.image_url:
        return part.image_url
    name = _stored_name(part.file_id or "")
    if name is None:
        raise InvalidRequestError(
            f"input_image {index} has no image_url, and its file_id is not an image this "
            "service made: send the image as image_url (a data: URI or an http(s) URL).",
            param="input",
            code="image_file_not_found",
        )
    return hosted_url(name)


def _data_uri(item: ImageCallItem) -> str:
    media_type = {"jpeg": "image/jpeg", "webp": "image/webp"}.get(item.output_format or "")
    return f"data:{media_type or 'image/png'};base64,{item.result}"


def _stored_name(file_id: str) -> str | None:
    """The image-store name a `file_id` is, if it is one."""
    return file_id if is_valid_name(file_id) else None


async def responses_plan(
    body: ResponsesRequest,
    *,
    corridor: Corridor,
    inputs: InputImages,
    hosted_url: Callable[[str], str],
) -> Plan:
    """The plan of the image job a Responses request asks for, checked before any streaming."""
    catalogue = corridor.generator.catalogue
    tool = image_tool(body)
    action = (tool.action if tool else None) or "auto"
    messages = conversation(body, hosted_url)
    turn = latest_user_turn(messages, param="input")
    prompt, options = inline_options(turn.text, param="input")
    params = with_inline_options(image_params(body, tool), options, param="input")
    if not prompt:
        raise InvalidRequestError(
            "The latest user message has no text to use as the image prompt.", param="input"
        )
    references = () if action == "generate" else turn.images
    edit = bool(references) or action == "edit"
    spec = catalogue.spec(catalogue.resolve(params.model, edit=edit))
    if not references and action != "generate" and (spec.requires_images or action == "edit"):
        # "Now make it blue": the conversation's latest image. Linear, but may read megabytes.
        previous = await asyncio.to_thread(previous_image, messages)
        references = (previous,) if previous else ()
    if action == "edit" and not references:
        raise InvalidRequestError(
            "The image_generation tool's action is 'edit', but the conversation has no image: "
            "attach one as an input_image.",
            param="tools",
            code="image_required",
        )
    job = ImageJob.from_params(
        params,
        prompt=prompt,
        catalogue=catalogue,
        default_response_format="b64_json",
        images=references,
        edit=action == "edit",
    )
    # The answer carries every image as base64, whatever response_format said.
    plan = corridor.prepare(job).with_response_format("b64_json")
    if not references:
        return plan
    images = [await inputs.from_reference(ref, param="input") for ref in references]
    return plan.with_images(tuple(images))
