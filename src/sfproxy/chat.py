"""Image generation in a chat: the image job a conversation asks for.

The prompt is always the latest `user` message (a string, or its text parts joined), less any
`--option value` typed into it. Edit models work on the images attached to that message, or on
the conversation's latest image. The answer is rendered by `render/chat.py`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from .errors import InvalidRequestError
from .inputs import InputImages
from .plan import ImageJob, Plan
from .protocol import (
    MAX_PROMPT_CHARS,
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

# A request's image parameters, whichever endpoint's request carries them.
Params = TypeVar("Params", bound=ImageParams)


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """The latest user message: its text and the images attached to it."""

    text: str
    images: tuple[str, ...]


def latest_user_turn(messages: list[ChatMessage], *, param: str = "messages") -> ChatTurn:
    """`param`: where the conversation is in the request (`input` on the Responses API)."""
    for message in reversed(messages):
        if message.role != "user":
            continue
        content = message.content
        if isinstance(content, str):
            return _checked_turn(content.strip(), (), param)
        texts = [part.text for part in content or [] if isinstance(part, TextPart)]
        images = tuple(part.url for part in content or [] if isinstance(part, ImagePart))
        return _checked_turn("\n".join(texts).strip(), images, param)
    raise InvalidRequestError(
        f"{param} must contain a message with role 'user': its text is the image prompt.",
        param=param,
    )


def _checked_turn(text: str, images: tuple[str, ...], param: str) -> ChatTurn:
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidRequestError(
            f"The latest user message is {len(text):,} characters long; an image prompt may "
            f"have at most {MAX_PROMPT_CHARS:,}.",
            param=param,
        )
    return ChatTurn(text=text, images=images)


# How many "![" a history may hold before the search for a previous image gives up: an answer
# of this service has one per image, and a hostile text could otherwise make millions.
_MAX_IMAGE_CANDIDATES = 10_000
# What follows "](" in a Markdown image: the target (no spaces, ")" or ">"), optionally in <>,
# then an optional "title" and ")". Possessive throughout and only ever anchored (match, not
# search), so each is linear and no character is read twice by it.
_LINK_TARGET = re.compile(r"\s*+(<?+)([^)\s>]*+)")
_LINK_TARGET_REST = re.compile(r"[^)\s>]*+")
_LINK_END = re.compile(r'>?+(?:\s++"[^"]*+")?+\s*+\)')
# A target (a data URI can be megabytes) is read this many characters per regex call, so a
# thread running the search lets the event loop's thread take the GIL in between.
_TARGET_WINDOW = 1 << 16


class _ImageSearch:
    """Finds the first Markdown image `![alt](url)` of texts, in linear time.

    A backtracking regex searched over a text such as "![a](![a](![a](..." costs time
    quadratic in its length; this reads each character a bounded number of times, and gives up
    after a bounded number of candidates.
    """

    def __init__(self) -> None:
        self.candidates = _MAX_IMAGE_CANDIDATES

    def first_image(self, text: str) -> str | None:
        position = 0
        # The end of the last link target read and found not to close: any "](" inside it has
        # the same target end and the same fate.
        refused_until = -1
        while self.candidates > 0:
            self.candidates -= 1
            start = text.find("![", position)
            if start < 0:
                return None
            close = text.find("]", start + 2)
            if close < 0:
                return None
            # Every "![" before `close` has the same "]": none of them needs a second look.
            position = close + 1
            if not text.startswith("(", position) or position + 1 < refused_until:
                continue
            target = _LINK_TARGET.match(text, position + 1, position + 1 + _TARGET_WINDOW)
            assert target is not None  # the pattern matches the empty string
            bracket, begin, end = target[1], target.start(2), target.end()
            while end == target.endpos and end < len(text):
                run = _LINK_TARGET_REST.match(text, end, end + _TARGET_WINDOW)
                assert run is not None
                target, end = run, run.end()
            # A lone "<" is the target itself, as in "![a](<)". Sliced only once it is known
            # to be one: copying megabytes of a refused target would hold the GIL for long.
            if (end > begin or bracket) and _LINK_END.match(text, end):
                return text[begin:end] or bracket
            refused_until = end
        return None


def previous_image(messages: list[ChatMessage]) -> str | None:
    """The image "now make it blue" refers to: the last answer's first image, else the user's.

    Searched from the newest message back: an assistant message's Markdown images (this
    service's own answers), or a user message's attached images.
    """
    search = _ImageSearch()
    for message in reversed(messages):
        content = message.content
        if message.role == "assistant":
            texts = (
                [content]
                if isinstance(content, str)
                else [part.text for part in content or [] if isinstance(part, TextPart)]
            )
            for text in texts:
                found = search.first_image(text)
                if found:
                    return found
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


def inline_pattern(names: Iterable[str]) -> re.Pattern[str]:
    """`--name value` for the given option names (video chats have their own, chat_video.py).

    Possessive quantifiers: every part either takes its characters for good or fails at once,
    so a substitution over the prompt (at most MAX_PROMPT_CHARS) is linear in its length.
    """
    return re.compile(
        r"(?:^|(?<=\s))--(?P<name>" + "|".join(names) + r")"
        r"(?:\s*+=\s*+|\s++|$)"
        r"(?P<value>\"[^\"]*+\"|'[^']*+'|“[^”]*+”|[^\s\"'“]\S*+)?+",
        re.IGNORECASE,
    )


_INLINE = inline_pattern(INLINE_OPTIONS)


def inline_options(
    text: str,
    *,
    param: str = "messages",
    pattern: re.Pattern[str] = _INLINE,
    examples: Mapping[str, str] | None = None,
) -> tuple[str, dict[str, str]]:
    """The prompt without its `--option value` parts, and those options by their names.

    `pattern` (from `inline_pattern`) and `examples` (one per name) default to the image ones.
    """
    found: dict[str, str] = {}
    shown = _EXAMPLES if examples is None else examples

    def take(match: re.Match[str]) -> str:
        name = match["name"].lower()
        value = match["value"]
        if value is None or value.startswith("--"):
            raise InvalidRequestError(
                f"Inline option --{name} needs a value, e.g. {shown[name]}.",
                param=param,
            )
        if value[0] in "\"'“":
            value = value[1:-1]
        found[name] = value
        return ""

    cleaned = pattern.sub(take, text)
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
    params: Params, options: dict[str, str], *, param: str = "messages"
) -> Params:
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
            reported_as=param,
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
    catalogue = corridor.generator.catalogue
    if body.json_answer is not None:
        # What a client's background task asked for in JSON was answered before this.
        raise InvalidRequestError(
            f"Model {body.model or catalogue.default_model} makes images and cannot answer "
            f"in JSON (response_format {body.json_answer.type}). Send no response_format, "
            '{"type": "text"}, "url" or "b64_json".',
            param="response_format",
        )
    turn = latest_user_turn(body.messages)
    prompt, options = inline_options(turn.text)
    params = with_inline_options(body, options)
    if not prompt:
        raise InvalidRequestError(
            "The latest user message has no text to use as the image prompt.", param="messages"
        )
    spec = catalogue.spec(catalogue.resolve(params.model, edit=bool(turn.images)))
    references = turn.images
    if not references and spec.requires_images:
        # "Now make it blue": an edit model works on the conversation's latest image.
        # The search is linear but may read megabytes: a thread keeps the event loop answering.
        previous = await asyncio.to_thread(previous_image, body.messages)
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
