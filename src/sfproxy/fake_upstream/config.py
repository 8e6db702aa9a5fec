"""What the fake accepts per model, and the knobs tests and benchmarks turn.

The model table is the fake's own reading of siliconflow-api.md, deliberately independent of the
proxy's catalogue: a test passing against both says the proxy matches the documented upstream, not
merely itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from .images import IMAGE_FORMATS, ImageFormat


@dataclass(frozen=True, slots=True)
class ModelRule:
    """Input images a model takes, and how it sizes and counts its output."""

    image_fields: tuple[str, ...] = ()
    min_images: int = 0
    default_size: tuple[int, int] = (1024, 1024)
    # Edit models size from their input image and reject `image_size`.
    sizes_from_input: bool = False
    # Only Kolors honours `batch_size`; the others return one image whatever it says.
    honours_batch_size: bool = False
    # The `output_format` values the model takes (FLUX.2: png, jpeg). Other models refuse it
    # here, so a test sees the proxy send it only to the models that take it.
    output_formats: tuple[ImageFormat, ...] = ()
    # The only `image_size` values it takes (FLUX.2-pro); empty: any size in range.
    sizes: tuple[tuple[int, int], ...] = ()
    # `prompt_enhancement` (the .com FLUX models); other models refuse it here, as above.
    takes_prompt_enhancement: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelRule:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model rule fields: {sorted(unknown)}")
        values = dict(data)
        if "image_fields" in values:
            values["image_fields"] = tuple(values["image_fields"])
        if "output_formats" in values:
            formats = tuple(values["output_formats"])
            if unknown_formats := set(formats) - set(IMAGE_FORMATS):
                raise ValueError(f"unknown output_formats: {sorted(unknown_formats)}")
            values["output_formats"] = formats
        if "default_size" in values:
            width, height = values["default_size"]
            values["default_size"] = (int(width), int(height))
        if "sizes" in values:
            values["sizes"] = tuple((int(width), int(height)) for width, height in values["sizes"])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_BFL = "black-forest-labs"
_KONTEXT = ModelRule(image_fields=("image",), min_images=1, takes_prompt_enhancement=True)
_FLUX1 = ModelRule(takes_prompt_enhancement=True)

BUILTIN_MODELS: Mapping[str, ModelRule] = {
    "Kwai-Kolors/Kolors": ModelRule(
        image_fields=("image",), default_size=(1024, 1024), honours_batch_size=True
    ),
    "Qwen/Qwen-Image": ModelRule(default_size=(1328, 1328)),
    "Qwen/Qwen-Image-Edit": ModelRule(image_fields=("image",), min_images=1, sizes_from_input=True),
    "Qwen/Qwen-Image-Edit-2509": ModelRule(
        image_fields=("image", "image2", "image3"), min_images=1, sizes_from_input=True
    ),
    "Tongyi-MAI/Z-Image": ModelRule(),
    "Tongyi-MAI/Z-Image-Turbo": ModelRule(),
    "baidu/ERNIE-Image-Turbo": ModelRule(),
    f"{_BFL}/FLUX.1-dev": _FLUX1,
    f"{_BFL}/FLUX.1-schnell": _FLUX1,
    f"{_BFL}/FLUX-1.1-pro": _FLUX1,
    f"{_BFL}/FLUX-1.1-pro-Ultra": _FLUX1,
    f"{_BFL}/FLUX.1-Kontext-pro": _KONTEXT,
    f"{_BFL}/FLUX.1-Kontext-dev": _KONTEXT,
    f"{_BFL}/FLUX.1-Kontext-max": _KONTEXT,
    f"{_BFL}/FLUX.2-pro": ModelRule(
        default_size=(512, 512),
        sizes=((512, 512), (768, 1024), (1024, 768), (576, 1024), (1024, 576)),
        output_formats=("png", "jpeg"),
        takes_prompt_enhancement=True,
    ),
    f"{_BFL}/FLUX.2-flex": ModelRule(output_formats=("png", "jpeg"), takes_prompt_enhancement=True),
}

# The image models each site's accounts have (siliconflow-api.md, "Models by site").
Site = Literal["cn", "com"]
SITE_MODELS: Mapping[Site, tuple[str, ...]] = {
    "cn": (
        "Kwai-Kolors/Kolors",
        "Qwen/Qwen-Image",
        "Qwen/Qwen-Image-Edit",
        "Qwen/Qwen-Image-Edit-2509",
        "Tongyi-MAI/Z-Image",
        "Tongyi-MAI/Z-Image-Turbo",
        "baidu/ERNIE-Image-Turbo",
    ),
    "com": (
        f"{_BFL}/FLUX.1-dev",
        f"{_BFL}/FLUX.1-schnell",
        f"{_BFL}/FLUX.1-Kontext-pro",
        f"{_BFL}/FLUX.1-Kontext-dev",
        f"{_BFL}/FLUX.1-Kontext-max",
        f"{_BFL}/FLUX-1.1-pro",
        f"{_BFL}/FLUX-1.1-pro-Ultra",
        f"{_BFL}/FLUX.2-pro",
        f"{_BFL}/FLUX.2-flex",
        "Qwen/Qwen-Image",
        "Qwen/Qwen-Image-Edit",
        "Tongyi-MAI/Z-Image-Turbo",
    ),
}


@dataclass(slots=True)
class FakeConfig:
    """Settings read on every request, so changing one takes effect on the next request."""

    # Seconds added before answering a successful generation.
    latency: float = 0.0
    # Seconds added before answering a file download.
    download_latency: float = 0.0
    image_format: ImageFormat = "png"
    # Pad each image file to at least this many bytes (0: no padding).
    image_min_bytes: int = 0
    # Rendering cost limits: draw at `render_scale` times the size, then cap the longer side.
    render_scale: float = 1.0
    max_render_side: int | None = None
    # None accepts any Bearer token.
    api_key: str | None = "sk-fake-upstream"
    # Model id -> rule. update() also takes a rule's JSON form, or a built-in model id to copy.
    # Usable and listed on every site.
    extra_models: dict[str, ModelRule] = field(default_factory=dict)
    # Whose accounts the fake plays: the site's models are listed and usable, no others.
    site: Site = "cn"
    # Replaces the site's list (ids without a rule are plain text-to-image models); None: the
    # site's own.
    listed_models: tuple[str, ...] | None = None
    # How long image URLs stay valid, as SiliconFlow's signed links do.
    url_ttl: float = 3600.0
    # Recorded bodies hold input images, so the record is bounded (0 records nothing).
    max_recorded_requests: int = 1000
    # A video job waits `video_queue_seconds` InQueue, then `video_progress_seconds` InProgress;
    # its result URL then stays valid `video_url_ttl_seconds` (SiliconFlow: 10 min to an hour).
    video_queue_seconds: float = 0.0
    video_progress_seconds: float = 0.3
    video_url_ttl_seconds: float = 600.0
    # The clip made: `video_seconds` at `video_fps`, each side of `image_size` divided by
    # `video_scale` (1280x720 becomes 160x90), bounded so that no request is costly to encode.
    video_seconds: float = 2.0
    video_fps: int = 8
    video_scale: int = 8

    def __post_init__(self) -> None:
        self.update(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    def update(self, **changes: Any) -> None:
        """Validate and apply changes; nothing changes if any value is invalid."""
        checked = {name: _check(name, value) for name, value in changes.items()}
        for name, value in checked.items():
            setattr(self, name, value)

    def models(self) -> dict[str, ModelRule]:
        """What the account can use: the listed models and the extra ones."""
        listed = self.listed_models if self.listed_models is not None else SITE_MODELS[self.site]
        usable = {model: BUILTIN_MODELS.get(model, ModelRule()) for model in listed}
        return {**usable, **self.extra_models}

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["extra_models"] = {k: rule.to_json() for k, rule in self.extra_models.items()}
        return data


_VIDEO_TIMES = ("video_queue_seconds", "video_progress_seconds", "video_url_ttl_seconds")
MAX_VIDEO_SECONDS = 10.0
MAX_VIDEO_FPS = 30
MAX_VIDEO_SCALE = 64


def _check(name: str, value: Any) -> Any:
    if name in ("latency", "download_latency", "url_ttl", "render_scale", *_VIDEO_TIMES):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{name} must be a number >= 0")
        if name == "render_scale" and value == 0:
            raise ValueError("render_scale must be > 0")
        return float(value)
    if name in ("image_min_bytes", "max_recorded_requests"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0")
        return value
    if name == "video_seconds":
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 < value <= MAX_VIDEO_SECONDS
        ):
            raise ValueError(f"video_seconds must be a number in (0, {MAX_VIDEO_SECONDS}]")
        return float(value)
    if name in ("video_fps", "video_scale"):
        high = MAX_VIDEO_FPS if name == "video_fps" else MAX_VIDEO_SCALE
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise ValueError(f"{name} must be an integer in [1, {high}]")
        return value
    if name == "max_render_side":
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError("max_render_side must be None or an integer >= 1")
        return value
    if name == "image_format":
        if value not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}")
        return cast(ImageFormat, value)
    if name == "api_key":
        if value is not None and not isinstance(value, str):
            raise ValueError("api_key must be a string or None")
        return value
    if name == "site":
        if value not in SITE_MODELS:
            raise ValueError(f"site must be one of {sorted(SITE_MODELS)}")
        return cast(Site, value)
    if name == "listed_models":
        if value is None:
            return None
        if isinstance(value, str) or not all(isinstance(model, str) and model for model in value):
            raise ValueError("listed_models must be None or a list of model ids")
        return tuple(value)
    if name == "extra_models":
        if not isinstance(value, Mapping):
            raise ValueError("extra_models must be a mapping of model id to rule")
        return {str(model): _model_rule(rule) for model, rule in value.items()}
    raise ValueError(f"unknown config field: {name}")


def _model_rule(rule: Any) -> ModelRule:
    if isinstance(rule, ModelRule):
        return rule
    if isinstance(rule, str):
        if rule not in BUILTIN_MODELS:
            raise ValueError(f"extra_models: {rule!r} is not a built-in model to copy")
        return BUILTIN_MODELS[rule]
    if isinstance(rule, Mapping):
        return ModelRule.from_json(rule)
    raise ValueError("extra_models values must be a ModelRule, a mapping, or a built-in model id")
