"""MCP tools over the one corridor: `generate_image`, `edit_image`, `list_models`, and the
video tools `generate_video` and `get_video` (mcp_video.py).

Agents (Claude Desktop, Cursor, Cherry Studio, ...) call these over the Model Context Protocol,
at `/mcp` (Streamable HTTP, `McpEndpoint`) or through `sfproxy mcp` (stdio, `cli_mcp.py`). A
tool call is planned, reserved, run and settled by the corridor as a chat request is, so limits,
budgets, the ledger and the image store apply unchanged.

A result carries the hosted URLs as Markdown text, because many clients drop image content
blocks, and then image blocks as MCP_IMAGE_CONTENT says (full, a thumbnail, or none), so an
agent's context window is not flooded with megabytes of base64. Every failure is a tool error
(`isError`) whose text is our error's message: never a traceback, never a secret.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import anyio
import mcp_types as types
import pybase64
import pydantic_core
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import __version__
from .auth import Client
from .errors import InvalidRequestError, ProxyError
from .generate import GeneratedImage, Generation
from .images import DEFAULT_MAX_PIXELS, ImageError, open_image
from .mcp_video import GenerateVideoArguments, GetVideoArguments, VideoTools
from .observability import RequestNote
from .plan import ImageJob, Plan
from .protocol import MAX_PROMPT_CHARS, ImageParams
from .routes.models import model_card, video_card
from .services import Services
from .validation import invalid_request

logger = logging.getLogger(__name__)

ImageContent = Literal["full", "thumbnail", "off"]
ArgumentsT = TypeVar("ArgumentsT", bound=BaseModel)
# Thumbnails are JPEG: every MCP client that shows images takes it, and at agent-preview sizes
# it is a fraction of a PNG's bytes.
THUMBNAIL_QUALITY = 85
SERVER_NAME = "siliconflow-img-proxy"
INSTRUCTIONS = (
    "Image generation with SiliconFlow's models. Call list_models to see each model's sizes "
    "and whether it edits images; generate_image makes new images, edit_image changes given "
    "ones. Results give each image's URL in Markdown: show it to the user. generate_video "
    "starts a video (it takes minutes); get_video tells how it is going, then links it."
)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls a tool, how their request is logged, and where their images' links point."""

    client: Client
    note: RequestNote
    link_for: Callable[[GeneratedImage], str]


class _Arguments(BaseModel):
    # Agents add fields of their own; what we do not use is ignored, as request bodies are.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    prompt: str = Field(
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="What the image should show, in any language. Be specific: subject, "
        "style, lighting, composition.",
    )
    model: str | None = Field(
        default=None,
        description="A model id from list_models (or an alias such as dall-e-3). "
        "Omit it for the default model.",
    )


class GenerateArguments(_Arguments):
    size: str | None = Field(
        default=None,
        description="WIDTHxHEIGHT (e.g. 1024x1024) or an aspect ratio (16:9, 3:4, 1:1); "
        "fitted to the nearest size the model supports.",
    )
    aspect_ratio: str | None = Field(
        default=None, description="An aspect ratio such as 16:9, used when size is absent."
    )
    n: int = Field(default=1, ge=1, le=10, description="Number of images, 1 to 10.")
    seed: int | None = Field(
        default=None,
        ge=0,
        le=9_999_999_999,
        description="Makes the result repeatable: the same seed and prompt give the same image.",
    )
    negative_prompt: str | None = Field(
        default=None, max_length=10_000, description="What the image should not show."
    )


class EditArguments(_Arguments):
    prompt: str = Field(
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="The change to make, e.g. 'make the sky a sunset' or 'put the cat from "
        "image 2 on the sofa in image 1'.",
    )
    images: Annotated[list[str], Field(min_length=1, max_length=3)] = Field(
        description="One to three input images: URLs this tool returned earlier, other http(s) "
        "URLs SiliconFlow can reach, or data:image/...;base64 URIs.",
    )
    model: str | None = Field(
        default=None,
        description="A model id from list_models that takes images (max_images of 1 or "
        "more; up to that many images). Omit it for the default edit model.",
    )


def tool_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The arguments' JSON schema as agents read it best: an optional field is its one type
    (not `anyOf` with null, which some clients' models refuse), and no generated titles."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    for field in schema["properties"].values():
        field.pop("title", None)
        options = field.pop("anyOf", None)
        if options is not None:
            field.pop("default", None)
            field.update(next(option for option in options if option != {"type": "null"}))
    return schema


TOOLS = (
    types.Tool(
        name="generate_image",
        title="Generate images",
        description="Make new images from a text prompt. Returns each image's URL as Markdown "
        "(and a preview). Costs one image of the caller's quota per image made.",
        input_schema=tool_schema(GenerateArguments),
    ),
    types.Tool(
        name="edit_image",
        title="Edit images",
        description="Change one to three existing images as the prompt says (restyle, add or "
        "remove things, combine them). Returns the new images' URLs as Markdown.",
        input_schema=tool_schema(EditArguments),
    ),
    types.Tool(
        name="list_models",
        title="List image models",
        description="The image models available, and what each accepts: sizes, aspect "
        "ratios, how many input images (min_images/max_images; 0 means generation only), "
        "and the parameters it takes; then the video models (video_models), with their "
        "sizes, seconds and whether they need an image.",
        input_schema={"type": "object", "properties": {}},
        annotations=types.ToolAnnotations(read_only_hint=True),
    ),
    types.Tool(
        name="generate_video",
        title="Generate a video",
        description="Start a video of about five seconds from a prompt, or from a prompt and "
        "an image (its first frame). Returns the job at once, without waiting: follow it with "
        "get_video. Costs one video of the caller's quota when it completes; nothing if it "
        "fails.",
        input_schema=tool_schema(GenerateVideoArguments),
    ),
    types.Tool(
        name="get_video",
        title="Get a video",
        description="How a video from generate_video is going (queued, in_progress with a "
        "percentage, completed or failed); once completed, its MP4's URL and its poster frame "
        "as Markdown.",
        input_schema=tool_schema(GetVideoArguments),
        annotations=types.ToolAnnotations(read_only_hint=True),
    ),
)


class ImageTools:
    """The tools, run for a caller against the running services."""

    def __init__(
        self, services: Services, *, image_content: ImageContent, thumbnail_size: int
    ) -> None:
        self.services = services
        self.image_content = image_content
        self.thumbnail_size = thumbnail_size
        self.videos = VideoTools(services, image_block=self._image_block)

    async def call(
        self, name: str, arguments: dict[str, Any] | None, caller: Caller
    ) -> types.CallToolResult:
        try:
            if name == "generate_image":
                return await self._generate(arguments or {}, caller)
            if name == "edit_image":
                return await self._edit(arguments or {}, caller)
            if name == "list_models":
                return self._list_models()
            if name == "generate_video":
                return await self.videos.generate(arguments or {}, caller)
            if name == "get_video":
                return await self.videos.get(arguments or {}, caller)
            raise InvalidRequestError(
                f"Unknown tool {name!r}; the tools are {', '.join(tool.name for tool in TOOLS)}.",
                param="name",
            )
        except ProxyError as exc:
            # Logged as the API's errors are: a 400 by the parameter it names.
            named = isinstance(exc, InvalidRequestError) and exc.param
            caller.note.error = f"invalid {exc.param}" if named else exc.code or exc.error_type
            return tool_error(exc.message)
        except Exception:
            logger.exception("MCP tool %s failed", name)
            return tool_error("The server had an error while processing your request.")

    async def _generate(self, arguments: dict[str, Any], caller: Caller) -> types.CallToolResult:
        args = _parsed(GenerateArguments, arguments)
        job = self._job(args, edit=False)
        plan = self.services.corridor.prepare(job)
        return await self._run(plan, caller)

    async def _edit(self, arguments: dict[str, Any], caller: Caller) -> types.CallToolResult:
        args = _parsed(EditArguments, arguments)
        job = self._job(args, edit=True, images=tuple(args.images))
        # Checked with the references as sent, before any of them is decoded (as chat does).
        plan = self.services.corridor.prepare(job)
        inputs = self.services.inputs
        images = [
            await inputs.from_reference(reference, param=f"images[{index}]")
            for index, reference in enumerate(args.images)
        ]
        return await self._run(plan.with_images(tuple(images)), caller)

    def _job(self, args: _Arguments, *, edit: bool, images: tuple[str, ...] = ()) -> ImageJob:
        fields = args.model_dump(exclude={"prompt", "images"}, exclude_none=True)
        try:
            params = ImageParams.model_validate(fields)
        except ValidationError as exc:
            raise invalid_request(exc.errors()) from None
        return ImageJob.from_params(
            params,
            prompt=args.prompt,
            catalogue=self.services.catalogue,
            default_response_format="url",
            images=images,
            edit=edit,
        )

    async def _run(self, plan: Plan, caller: Caller) -> types.CallToolResult:
        ticket = await self.services.corridor.open(plan, caller.client, caller.note, endpoint="mcp")
        # The ledger records what the call came to, as an HTTP status: 499 when its client left.
        status = 499
        try:
            generation = await ticket.generation()
            result = await self._result(generation, caller)
            ticket.deliver(len(generation.images))
            status = 200
            return result
        except ProxyError as exc:
            status = exc.status_code
            raise
        finally:
            # Settled even when the call is cancelled (its client left): anyio re-delivers a
            # cancellation at every await inside a cancelled scope.
            with anyio.CancelScope(shield=True):
                await ticket.close(status)

    async def _result(self, generation: Generation, caller: Caller) -> types.CallToolResult:
        links = [caller.link_for(image) for image in generation.images]
        size = f" ({generation.size})" if generation.size else ""
        # One paragraph per image, as chat answers have: Markdown renders each on its own.
        paragraphs = [f"{len(links)} image(s) from {generation.model}{size}:"]
        for index, (image, link) in enumerate(zip(generation.images, links, strict=True), 1):
            seed = f" (seed {image.seed})" if image.seed is not None else ""
            paragraphs.append(f"![image {index}]({link}){seed}")
        if generation.failures:
            paragraphs.append(
                f"{generation.failed_calls} of {generation.calls} image requests failed: "
                f"{generation.failures[0].message}"
            )
        content: list[types.ContentBlock] = [types.TextContent(text="\n\n".join(paragraphs))]
        for image in generation.images:
            block = await self._image_block(image)
            if block is not None:
                content.append(block)
        structured = {
            "model": generation.model,
            "images": [
                {"url": link, "seed": image.seed, "size": image.size}
                for image, link in zip(generation.images, links, strict=True)
            ],
        }
        return types.CallToolResult(content=content, structured_content=structured)

    async def _image_block(self, image: GeneratedImage) -> types.ImageContent | None:
        if self.image_content == "off" or image.data is None or image.media_type is None:
            return None
        data, media_type = image.data, image.media_type
        if self.image_content == "thumbnail":
            try:
                data = await asyncio.to_thread(thumbnail, data, self.thumbnail_size)
            except ImageError as exc:
                # The image is stored and linked in the text: only its preview is left out.
                logger.warning("no MCP preview for an image: %s", exc)
                return None
            media_type = "image/jpeg"
        return types.ImageContent(
            data=pybase64.b64encode(data).decode("ascii"), mime_type=media_type
        )

    def _list_models(self) -> types.CallToolResult:
        catalogue = self.services.catalogue
        cards = [
            model_card(catalogue, spec).model_dump(mode="json", exclude_none=True)
            for spec in catalogue.listed
        ]
        videos = self.services.settings.video_models
        described = {
            "default_model": catalogue.default_model,
            "default_edit_model": catalogue.default_edit_model,
            "models": cards,
            "default_video_model": videos.default_model,
            "default_image_to_video_model": videos.default_image_model,
            "video_models": [
                video_card(spec).model_dump(mode="json", exclude_none=True)
                for spec in videos.specs()
            ],
        }
        text = pydantic_core.to_json(described, indent=2).decode()
        return types.CallToolResult(
            content=[types.TextContent(text=text)], structured_content=described
        )


def _parsed(model: type[ArgumentsT], arguments: dict[str, Any]) -> ArgumentsT:
    try:
        return model.model_validate(arguments)
    except ValidationError as exc:
        raise invalid_request(exc.errors()) from None


def tool_error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


def thumbnail(data: bytes, longest_side: int) -> bytes:
    """A JPEG no larger than `longest_side` on either side (CPU work: off the event loop).

    The image came from SiliconFlow (or the store), opened under the same pixel bound as a
    client's.
    """
    with open_image(data, max_pixels=DEFAULT_MAX_PIXELS) as opened:
        try:
            # A JPEG decodes straight to a fraction of its size; other formats ignore this.
            opened.draft("RGB", (longest_side, longest_side))
            image = opened.convert("RGB")
            image.thumbnail((longest_side, longest_side), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=THUMBNAIL_QUALITY)
        except Exception as exc:
            raise ImageError(f"not a readable image: {exc}") from None
        return out.getvalue()


def build_server(
    tools: Callable[[], ImageTools], caller_of: Callable[[ServerRequestContext[Any]], Caller]
) -> Server[Any]:
    """The MCP server; `caller_of(ctx)` says who makes each call (from its HTTP request, or
    the one stdio user). `tools` is looked up per call: the services start after the server."""

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=list(TOOLS))

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        return await tools().call(params.name, params.arguments, caller_of(ctx))

    return Server(
        SERVER_NAME,
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
