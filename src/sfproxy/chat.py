"""Image generation in a chat: the image job a conversation asks for.

The prompt is always the latest `user` message (a string, or its text parts joined), less any
`--option value` typed into it. Edit models work on the images attached to that message, or on
the conversation's latest image. The answer is rendered by `render/chat.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .errors import InvalidRequestError
from .inputs import InputImages
from .plan import ImageJob, Plan
from .protocol import (
    ChatCompletionRequest,
    ChatMessage,
    ImageParams,
    ImagePart,
    ResponseFormat,
    TextPart,
)
from .validation import invalid_request

if TYPE_CHECKING:
    from .corridor import Corridor


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """The latest user message: its text and the images attached to it."""

    text: str
    images: tuple[str, ...]


def latest_user_turn(messages: list[ChatMessage]) -> ChatTurn:
    for message in reversed(messages):
        if message.role != "user":
            continue
        content = message.content
        if isinstance(content, str):
            return ChatTurn(text=content.strip(), images=())
        texts = [part.text for part in content or [] if isinstance(part, TextPart)]
        images = tuple(part.url for part in content or [] if isinstance(part, ImagePart))
        return ChatTurn(text="\n".join(texts).strip(), images=images)
    raise InvalidRequestError(
        "messages must contain a message with role 'user': its text is the image prompt.",
        param="messages",
    )


_MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def previous_image(messages: list[ChatMessage]) -> str | None:
    """The image "now make it blue" refers to: the last answer's first image, else the user's.

    Searched from the newest message back: an assistant message's Markdown images (this
    service's own answers), or a user message's attached images.
    """
    for message in reversed(messages):
        content = message.content
        if message.role == "assistant":
            texts = (
                [content]
                if isinstance(content, str)
                else [part.text for part in content or [] if isinstance(part, TextPart)]
            )
            for text in texts:
                match = _MARKDOWN_IMAGE.search(text)
                if match:
                    return match[1]
            if isinstance(content, list):
                for part in content:
                    if isinstance(part, ImagePart):
                        return part.url
        elif message.role == "user" and isinstance(content, list):
            for part in content:
                if isinstance(part, ImagePart):
                    return part.url
    return None


# Options typed into the prompt, as image bots made familiar: `--ar 16:9 --n 2 --neg "blur"`.
INLINE_OPTIONS = {
    "ar": "sf_aspect_ratio",
    "size": "size",
    "n": "n",
    "seed": "sf_seed",
    "steps": "sf_num_steps",
    "cfg": "sf_cfg",
    "guidance": "sf_guidance_scale",
    "neg": "sf_negative_prompt",
    "model": "model",
}
_INLINE = re.compile(
    r"(?:^|(?<=\s))--(?P<name>" + "|".join(INLINE_OPTIONS) + r")"
    r"(?:\s*=\s*|\s+|$)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|“[^”]*”|[^\s\"'“]\S*)?",
    re.IGNORECASE,
)


def inline_options(text: str) -> tuple[str, dict[str, str]]:
    """The prompt without its `--option value` parts, and those options by parameter name."""
    found: dict[str, str] = {}

    def take(match: re.Match[str]) -> str:
        name = match["name"].lower()
        value = match["value"]
        if value is None or value.startswith("--"):
            raise InvalidRequestError(
                f"Inline option --{name} needs a value, e.g. {_EXAMPLES[name]}.",
                param="messages",
            )
        if value[0] in "\"'“":
            value = value[1:-1]
        found[name] = value
        return ""

    cleaned = _INLINE.sub(take, text)
    if not found:
        return text, found
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip(), found


_EXAMPLES = {
    "ar": "--ar 16:9",
    "size": "--size 1024x768",
    "n": "--n 2",
    "seed": "--seed 42",
    "steps": "--steps 30",
    "cfg": "--cfg 4",
    "guidance": "--guidance 7.5",
    "neg": '--neg "blurry, low quality"',
    "model": "--model Kwai-Kolors/Kolors",
}


_OPTION_BY_PARAM = {param: name for name, param in INLINE_OPTIONS.items()}


def _inline_spelling(location: tuple[str | int, ...]) -> str:
    param = str(location[0]) if location else ""
    return f"--{_OPTION_BY_PARAM.get(param, param)}"


def with_inline_options(
    params: ChatCompletionRequest, options: dict[str, str]
) -> ChatCompletionRequest:
    """The request's parameters, overridden by the options typed into the prompt."""
    if not options:
        return params
    raw = {INLINE_OPTIONS[name]: value for name, value in options.items()}
    try:
        parsed = ImageParams.model_validate(raw)
    except ValidationError as exc:
        raise invalid_request(
            exc.errors(),
            spell=_inline_spelling,
            reported_as="messages",
            hint=lambda option: f"Example: {_EXAMPLES.get(option.removeprefix('--'), '')}",
        ) from None
    update: dict[str, Any] = {field: getattr(parsed, field) for field in parsed.model_fields_set}
    # A size typed in the prompt is the latest word on size, whatever the body said.
    if "aspect_ratio" in parsed.model_fields_set:
        update |= {"size": None, "image_size": None}
    if "size" in parsed.model_fields_set:
        update |= {"aspect_ratio": None, "image_size": None}
    return params.model_copy(update=update)


async def chat_plan(
    body: ChatCompletionRequest,
    *,
    corridor: Corridor,
    inputs: InputImages,
    default_response_format: ResponseFormat,
) -> Plan:
    """The plan of the image job a chat request asks for, checked before any streaming starts."""
    turn = latest_user_turn(body.messages)
    prompt, options = inline_options(turn.text)
    params = with_inline_options(body, options)
    if not prompt:
        raise InvalidRequestError(
            "The latest user message has no text to use as the image prompt.", param="messages"
        )
    catalogue = corridor.generator.catalogue
    spec = catalogue.spec(params.model or catalogue.default_model)
    references = turn.images
    if not references and spec.requires_images:
        # "Now make it blue": an edit model works on the conversation's latest image.
        previous = previous_image(body.messages)
        references = (previous,) if previous else ()
    job = ImageJob.from_params(
        params,
        prompt=prompt,
        catalogue=catalogue,
        default_response_format=default_response_format,
        images=references,
    )
    # Checked with the references as sent, before any of them is decoded.
    plan = corridor.prepare(job)
    if not references:
        return plan
    images = [await inputs.from_reference(ref, param="messages") for ref in references]
    return plan.with_images(tuple(images))
