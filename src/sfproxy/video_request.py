"""`POST /v1/videos`, read into a `VideoRequest`: multipart as the SDKs send it, or JSON.

openai-python and openai-node send a multipart form: `prompt`, `model`, `size`, `seconds` as text,
and `input_reference` as a file, or as the text fields `input_reference[image_url]` /
`input_reference[file_id]` when it is given as an object. JSON bodies carry the same fields, with
`input_reference` as an image URL, a data URI, or `{"image_url": ...}`.

The model is resolved and the size and duration fitted before the input image is read, so a
request that is wrong anyway costs no image decoding.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import Field, field_validator
from starlette.datastructures import FormData, UploadFile

from .bodies import read_json_request
from .errors import InvalidRequestError
from .inputs import InputImages
from .jobs import VideoRequest
from .protocol import MAX_PROMPT_CHARS, Prompt, _non_blank, _Request
from .validation import validated
from .video_models import VideoModels

PARAM = "input_reference"
_NESTED_PREFIX = f"{PARAM}["
# prompt, model, size, seconds, negative_prompt, seed and the two input_reference fields, with
# room for what other clients add.
MAX_FORM_FIELDS = 50


class InputReference(_Request):
    """OpenAI's reference object: an image URL (or data URI), or the id of an uploaded file."""

    image_url: str | None = None
    file_id: str | None = Field(default=None, max_length=200)


class VideoCreateRequest(_Request):
    prompt: Prompt
    model: str | None = Field(default=None, max_length=200)
    size: str | None = Field(default=None, max_length=32)
    seconds: str | int | None = Field(default=None)
    input_reference: str | InputReference | None = None
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    seed: int | None = Field(default=None, ge=0, le=9_999_999_999)

    _prompt_not_blank = field_validator("prompt")(_non_blank)

    @field_validator("seconds", mode="before")
    @classmethod
    def _short_seconds(cls, value: Any) -> Any:
        # The SDKs send "4"; kept short so that an error message never quotes a long text.
        if isinstance(value, str) and len(value) > 16:
            return value[:16]
        return value


async def read_video_request(
    request: Request, inputs: InputImages, models: VideoModels
) -> VideoRequest:
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form(
            max_files=1, max_fields=MAX_FORM_FIELDS, max_part_size=inputs.max_bytes * 2
        )
        try:
            params, upload = _form_fields(form)
            return await _fitted(params, upload, inputs, models)
        finally:
            await form.close()
    if content_type.startswith("application/json") or not content_type:
        # Data URIs make these bodies large: read in bounded steps, like a chat's.
        params = await read_json_request(
            request, VideoCreateRequest, max_string=inputs.max_bytes * 2
        )
        return await _fitted(params, None, inputs, models)
    raise InvalidRequestError(
        "Send the video request as multipart/form-data (as the openai SDKs do, with "
        "input_reference as a file) or as JSON (input_reference as an image URL or data URI)."
    )


def _form_fields(form: FormData) -> tuple[VideoCreateRequest, UploadFile | None]:
    fields: dict[str, Any] = {}
    nested: dict[str, str] = {}
    upload: UploadFile | None = None
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key != PARAM:
                raise InvalidRequestError(
                    "Only input_reference may be a file.", param=key[:64] or None
                )
            upload = value
        elif value == "":
            # An empty field is an unset one, as an HTML form sends what the user left blank.
            continue
        elif key.startswith(_NESTED_PREFIX) and key.endswith("]"):
            nested[key[len(_NESTED_PREFIX) : -1]] = value
        else:
            fields[key] = value
    if nested:
        if PARAM in fields or upload is not None:
            raise InvalidRequestError(
                "Send input_reference once: as a file, a URL, or an object.", param=PARAM
            )
        fields[PARAM] = nested
    return validated(VideoCreateRequest, fields), upload


async def _fitted(
    params: VideoCreateRequest,
    upload: UploadFile | None,
    inputs: InputImages,
    models: VideoModels,
) -> VideoRequest:
    reference = params.input_reference
    has_image = upload is not None or reference is not None
    spec = models.resolve(params.model, has_image=has_image)
    size, seconds = models.fit(spec, size=params.size, seconds=params.seconds)
    image = None
    if upload is not None:
        if upload.size is not None and upload.size > inputs.max_bytes:
            raise InvalidRequestError(
                f"{PARAM} is larger than the {inputs.max_bytes / (1024 * 1024):g} MB limit "
                "(MAX_IMAGE_MB).",
                param=PARAM,
            )
        image = await inputs.from_upload(await upload.read(), param=PARAM)
    elif reference is not None:
        image = await inputs.from_reference(_image_url(reference), param=PARAM)
    return VideoRequest(
        model=spec.id,
        requested_model=params.model,
        prompt=params.prompt,
        size=size,
        seconds=seconds,
        image=image,
        negative_prompt=params.negative_prompt,
        seed=params.seed,
    )


def _image_url(reference: str | InputReference) -> str:
    if isinstance(reference, str):
        return reference
    if reference.file_id is not None:
        raise InvalidRequestError(
            "input_reference.file_id is not supported: this proxy keeps no uploaded files. "
            "Upload the image as input_reference, or give its image_url (a URL or data URI).",
            param="input_reference.file_id",
            code="unsupported_parameter",
        )
    if reference.image_url is None:
        raise InvalidRequestError(
            "input_reference needs an image_url (a URL or data URI), or send the image as a file.",
            param="input_reference.image_url",
        )
    return reference.image_url
