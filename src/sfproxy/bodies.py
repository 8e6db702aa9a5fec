"""Reading large JSON bodies without stopping the event loop or multiplying their size in memory.

A chat body may be 32 MB (histories carry data URIs). Parsed in one go, such a body stops the
event loop for as long as parsing takes (any JSON parser holds the GIL, so a thread does not
help), and half a million tiny messages cost a gigabyte of Python objects. So a body is read in
bounded steps, each a C-speed scan of at most a window of bytes, with the loop free in between:

1. The body is scanned once for its strings and structure. More than `MAX_JSON_ITEMS` items
   (strings, commas, colons, brackets) is a 400 at once, before any object is made, and so is
   a string longer than anything the service accepts (the largest input image as base64).
2. The largest strings are cut out and replaced by placeholders until the rest is small, the
   rest is parsed, and each string cut out is parsed on its own, the loop free between them.
3. The chat request is validated one message at a time, after the message count is checked.

Bodies that are not valid JSON (invalid UTF-8 and lone surrogates included) are a 400.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request

from .errors import InvalidRequestError
from .protocol import ChatCompletionRequest, ChatMessage
from .validation import Model, invalid_request, missing_body, not_an_object, not_json, validated

# Strings, commas, colons and brackets: each is at most one Python object once parsed. This many
# cost about 20 MB and a few tens of milliseconds of validation, however the body is shaped.
MAX_JSON_ITEMS = 100_000
# Bodies up to this size are parsed in one step.
SMALL_BODY = 16 * 1024
# Bytes one scanning step reads (a few milliseconds of C-speed search at most).
_WINDOW = 1 << 20
# The rest of the document, with its largest strings cut out, is parsed in one step this small.
_REST_BYTES = 2 << 20
# How long the scan may hold the event loop before it lets other requests run.
_SLICE_SECONDS = 0.005
# A string's contents up to its closing quote or an incomplete escape; possessive, so linear.
_STRING_BODY = re.compile(rb'(?:[^"\\]++|\\.)*+', re.DOTALL)
_MESSAGE = TypeAdapter(ChatMessage)
_ABSENT = object()


class _Yielder:
    """Gives the event loop a turn whenever the caller has held it for a time slice."""

    def __init__(self) -> None:
        self.since = time.perf_counter()

    async def __call__(self) -> None:
        if time.perf_counter() - self.since >= _SLICE_SECONDS:
            await asyncio.sleep(0)
            self.since = time.perf_counter()


async def _string_spans(
    body: bytes, *, max_string: int, param: str | None, pause: _Yielder
) -> list[tuple[int, int]]:
    """The (start, end) of every JSON string in the body, quotes included, in order.

    Counts the body's items as it goes and refuses a body with too many, or with a string
    longer than `max_string` bytes. Only bytes outside strings are counted as structure, so
    prose full of commas costs nothing.
    """
    spans: list[tuple[int, int]] = []
    items = 0
    position = 0
    size = len(body)
    while position < size:
        window_end = min(size, position + _WINDOW)
        quote = body.find(b'"', position, window_end)
        gap_end = window_end if quote < 0 else quote
        items += sum(body.count(byte, position, gap_end) for byte in (b",", b":", b"[", b"{"))
        if items > MAX_JSON_ITEMS:
            raise _too_many_items(param)
        if quote < 0:
            position = window_end
            await pause()
            continue
        end = await _string_end(body, quote + 1, max_end=quote + 1 + max_string, pause=pause)
        if end < 0:
            if end == -2:
                raise InvalidRequestError(
                    "A string in the request body is longer than any prompt or input image "
                    "this service accepts (MAX_IMAGE_MB).",
                    param=param,
                )
            raise not_json("unterminated string")
        spans.append((quote, end))
        items += 1
        if items > MAX_JSON_ITEMS:
            raise _too_many_items(param)
        position = end
        if len(spans) % 1024 == 0:
            await pause()
    return spans


async def _string_end(body: bytes, start: int, *, max_end: int, pause: _Yielder) -> int:
    """The index after the closing quote of the string whose contents begin at `start`.

    -1 if the body ends first, -2 if the string runs past `max_end`.
    """
    position = start
    size = len(body)
    while position < size:
        window_end = min(size, position + _WINDOW)
        quote = body.find(b'"', position, window_end)
        if body.find(b"\\", position, quote if quote >= 0 else window_end) < 0:
            # The common case (base64, plain text): no escape in this stretch, memchr speed.
            if quote >= 0:
                return -2 if quote + 1 > max_end + 1 else quote + 1
            position = window_end
        else:
            # Escapes: the regex steps over them, still in C.
            match = _STRING_BODY.match(body, position, window_end)
            assert match is not None  # the pattern matches the empty string
            stop = match.end()
            if stop < window_end and body[stop] == ord('"'):
                return -2 if stop + 1 > max_end + 1 else stop + 1
            # Cut off by the window, or by an escape split across it: carry on from there.
            position = stop if stop > position else min(size, position + 2)
        if position > max_end:
            return -2
        await pause()
    return -1


def _too_many_items(param: str | None) -> InvalidRequestError:
    return InvalidRequestError(
        f"The request body has more than {MAX_JSON_ITEMS:,} JSON items (strings, commas, "
        "colons, brackets): send a shorter history.",
        param=param,
    )


async def load_json(body: bytes, *, max_string: int, param: str | None = None) -> Any:
    """The parsed body, in steps that each hold the event loop briefly (see the module doc)."""
    if not body.strip():
        raise missing_body()
    if len(body) <= SMALL_BODY:
        # Too small to hold more than a few thousand items or to take a millisecond to parse:
        # the steps below would only add their own cost (most requests are this small).
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise not_json(str(exc)) from None
    pause = _Yielder()
    spans = await _string_spans(body, max_string=max_string, param=param, pause=pause)
    # Cut out the largest strings until what remains is small enough to parse in one step.
    by_size = sorted(range(len(spans)), key=lambda i: spans[i][0] - spans[i][1])
    rest = len(body)
    cut: list[int] = []
    for index in by_size:
        if rest <= _REST_BYTES:
            break
        start, end = spans[index]
        rest -= end - start
        cut.append(index)
    cut.sort()
    nonce = secrets.token_hex(8)
    pieces: list[bytes] = []
    strings: dict[str, tuple[int, int]] = {}
    position = 0
    view = memoryview(body)
    for number, index in enumerate(cut):
        start, end = spans[index]
        placeholder = f"\u0000{nonce}:{number}"
        strings[placeholder] = (start, end)
        pieces += (view[position:start].tobytes(), orjson.dumps(placeholder))
        position = end
    pieces.append(view[position:].tobytes())
    try:
        document = orjson.loads(b"".join(pieces))
        del pieces
        if strings:
            await asyncio.sleep(0)
        decoded: dict[str, str] = {}
        for placeholder, (start, end) in strings.items():
            decoded[placeholder] = await _decode_string(view, start, end, pause)
            await pause()
    except orjson.JSONDecodeError as exc:
        raise not_json(str(exc)) from None
    finally:
        view.release()
    if decoded:
        await _put_back(document, decoded, pause)
    return document


# Bytes a JSON string may not hold raw: they must be escaped.
_CONTROL_BYTES = bytes(range(0x20))


async def _decode_string(view: memoryview, start: int, end: int, pause: _Yielder) -> str:
    """The JSON string at body[start:end], quotes included.

    A long string of plain ASCII (base64, most text) is decoded a window at a time, the loop
    free in between; anything else goes to orjson in one step.
    """
    pieces: list[str] = []
    for position in range(start + 1, end - 1, _WINDOW):
        chunk = view[position : min(end - 1, position + _WINDOW)].tobytes()
        if not chunk.isascii() or b"\\" in chunk or chunk.translate(None, _CONTROL_BYTES) != chunk:
            text: str = orjson.loads(view[start:end])
            return text
        pieces.append(chunk.decode("ascii"))
        await pause()
    return "".join(pieces)


async def _put_back(document: Any, decoded: dict[str, str], pause: _Yielder) -> None:
    """Replace the placeholders in the parsed document by the strings they stand for."""
    # An explicit stack: documents may nest deeper than Python's recursion limit.
    stack: list[Any] = [document]
    seen = 0
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str):
                    node[key] = decoded.get(value, value)
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                if isinstance(value, str):
                    node[index] = decoded.get(value, value)
                elif isinstance(value, dict | list):
                    stack.append(value)
        seen += 1
        if seen % 1024 == 0:
            await pause()


async def read_chat_request(
    request: Request, *, max_messages: int, max_string: int
) -> ChatCompletionRequest:
    """The chat request in the body, read in bounded steps (see the module doc).

    `max_messages` bounds the history; `max_string` the longest string (in bytes) worth parsing.
    """
    raw = await _read_object(request, max_string=max_string, param="messages")
    messages = raw.pop("messages", _ABSENT)
    if isinstance(messages, list) and len(messages) > max_messages:
        raise InvalidRequestError(
            f"messages has {len(messages):,} messages; at most {max_messages:,} are accepted "
            "(MAX_CHAT_MESSAGES). Send the recent part of the conversation.",
            param="messages",
        )
    try:
        if not isinstance(messages, list) or not messages:
            # Let the model's own validation name the problem.
            if messages is not _ABSENT:
                raw["messages"] = messages
            return ChatCompletionRequest.model_validate(raw)
        params = ChatCompletionRequest.model_validate({**raw, "messages": [{"role": "user"}]})
        pause = _Yielder()
        checked = []
        for index, message in enumerate(messages):
            try:
                checked.append(_MESSAGE.validate_python(message))
            except ValidationError as exc:
                errors = [
                    {**error, "loc": ("messages", index, *error["loc"])} for error in exc.errors()
                ]
                raise invalid_request(errors) from None
            await pause()
    except ValidationError as exc:
        raise invalid_request(exc.errors()) from None
    params.messages = checked
    return params


async def read_json_request(request: Request, model: type[Model], *, max_string: int) -> Model:
    """A JSON request body of `model`, read in bounded steps like a chat's."""
    return validated(model, await _read_object(request, max_string=max_string))


async def _read_object(
    request: Request, *, max_string: int, param: str | None = None
) -> dict[str, Any]:
    raw = await load_json(await request.body(), max_string=max_string, param=param)
    if not isinstance(raw, dict):
        raise not_an_object()
    return raw


def openapi_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI `requestBody` of a route that reads its body itself, the schema inlined."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return {"required": True, "content": {"application/json": {"schema": inline(schema)}}}
