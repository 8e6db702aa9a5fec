"""OpenAI's images endpoint on the fake, for gateways that speak only OpenAI's API.

The benchmarks put LiteLLM's proxy in front of this endpoint and the service in front of the
SiliconFlow one, so both gateways wait on the same fake, the same latency and the same image
store. Queued faults target the SiliconFlow endpoint only.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiohttp import web

from .validation import MAX_SEED, Generation

OPENAI_GENERATIONS_PATH = "/openai/v1/images/generations"
OpenAIResponseFormat = Literal["url", "b64_json"]

_SIZE = re.compile(r"(\d+)x(\d+)")
_MIN_SIDE, _MAX_SIDE = 64, 4096
_MAX_IMAGES = 10
# OpenAI's default size for most of its image models.
_DEFAULT_SIZE = (1024, 1024)


class InvalidOpenAIRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class OpenAIGeneration:
    generation: Generation
    response_format: OpenAIResponseFormat


def check_openai_generation(body: Any) -> OpenAIGeneration:
    """Accept what OpenAI's API accepts; fields the fake does not draw with are ignored."""
    if not isinstance(body, dict):
        raise InvalidOpenAIRequest("The request body must be a JSON object.")
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise InvalidOpenAIRequest("'model' must be a non-empty string.", "model")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidOpenAIRequest("'prompt' is a required non-empty string.", "prompt")
    count = body.get("n")
    if count is None:
        count = 1
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= _MAX_IMAGES:
        raise InvalidOpenAIRequest(f"'n' must be an integer from 1 to {_MAX_IMAGES}.", "n")
    response_format: OpenAIResponseFormat
    if body.get("response_format") in (None, "url"):
        response_format = "url"
    elif body["response_format"] == "b64_json":
        response_format = "b64_json"
    else:
        raise InvalidOpenAIRequest(
            "'response_format' must be 'url' or 'b64_json'.", "response_format"
        )
    width, height = _size(body.get("size"))
    seed = body.get("seed")
    if seed is None:
        # OpenAI takes no seed: the same prompt draws the same picture, so a benchmark firing
        # identical requests renders once, as it does on the SiliconFlow endpoint with a seed.
        seed = zlib.crc32(prompt.encode()) % (MAX_SEED + 1)
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InvalidOpenAIRequest(f"'seed' must be an integer from 0 to {MAX_SEED}.", "seed")
    generation = Generation(model or "dall-e-2", prompt, seed, count, width, height)
    return OpenAIGeneration(generation, response_format)


def _size(value: Any) -> tuple[int, int]:
    if value is None or value == "auto":
        return _DEFAULT_SIZE
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidOpenAIRequest("'size' must look like '1024x1024', or be 'auto'.", "size")
    width, height = int(match[1]), int(match[2])
    if not (_MIN_SIDE <= width <= _MAX_SIDE and _MIN_SIDE <= height <= _MAX_SIDE):
        raise InvalidOpenAIRequest(
            f"Each side of 'size' must be from {_MIN_SIDE} to {_MAX_SIDE} pixels.", "size"
        )
    return width, height


def openai_error(
    status: int,
    message: str,
    *,
    error_type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> web.Response:
    """OpenAI's error envelope, which the openai SDKs (and so LiteLLM) parse."""
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
