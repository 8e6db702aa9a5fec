"""The models SiliconFlow serves on each site, and what each accepts (siliconflow-api.md).

Each site's tuple is also its built-in list (used when discovery fails and nothing is
configured), in the order `/v1/models` lists models: the first is the default model, and the
aliases (dall-e-3, gpt-image-1, ...) resolve to it. Discovered models are put in this order too.

Entries marked `verified=False` are models whose parameters SiliconFlow does not document:
they get `CONSERVATIVE_PARAMS` only, one image per call, and an `image_size` only when the
client gave one, so a guess of ours can never make SiliconFlow refuse the request.
"""

from __future__ import annotations

from .spec import ModelSpec, Site

QWEN_PARAMS = frozenset({"seed", "num_inference_steps", "cfg", "negative_prompt"})
# Besides prompt and image_size: what every SiliconFlow image model takes.
CONSERVATIVE_PARAMS = frozenset({"seed", "negative_prompt"})

QWEN_IMAGE = ModelSpec(
    id="Qwen/Qwen-Image",
    created=1_754_265_600,  # 2025-08-04
    sizes=("1328x1328", "1664x928", "928x1664", "1472x1140", "1140x1472", "1584x1056", "1056x1584"),
    default_size="1328x1328",
    max_batch_size=1,
    max_images=0,
    params=QWEN_PARAMS,
)
KOLORS = ModelSpec(
    id="Kwai-Kolors/Kolors",
    created=1_720_224_000,  # 2024-07-06, the open release
    sizes=("1024x1024", "960x1280", "768x1024", "720x1440", "720x1280"),
    default_size="1024x1024",
    max_batch_size=4,
    max_images=1,
    params=frozenset({"seed", "num_inference_steps", "guidance_scale", "negative_prompt"}),
)
QWEN_IMAGE_EDIT = ModelSpec(
    id="Qwen/Qwen-Image-Edit",
    created=1_755_475_200,  # 2025-08-18
    takes_image_size=False,
    max_batch_size=1,
    min_images=1,
    max_images=1,
    params=QWEN_PARAMS,
)
QWEN_IMAGE_EDIT_2509 = ModelSpec(
    id="Qwen/Qwen-Image-Edit-2509",
    created=1_758_499_200,  # 2025-09-22
    takes_image_size=False,
    max_batch_size=1,
    min_images=1,
    max_images=3,
    params=QWEN_PARAMS,
)


def _unverified(model_id: str, created: int | None = None, **fields: object) -> ModelSpec:
    """A model SiliconFlow lists without documenting its parameters (see the module docstring)."""
    values: dict[str, object] = {
        "id": model_id,
        "created": created,
        "max_batch_size": 1,
        "max_images": 0,
        "params": CONSERVATIVE_PARAMS,
        "verified": False,
    }
    values.update(fields)
    return ModelSpec.model_validate(values)


# Undocumented (2026): Tongyi's Z-Image models and Baidu's ERNIE-Image.
Z_IMAGE_TURBO = _unverified("Tongyi-MAI/Z-Image-Turbo", 1_764_201_600)  # 2025-11-27
Z_IMAGE = _unverified("Tongyi-MAI/Z-Image")
ERNIE_IMAGE_TURBO = _unverified("baidu/ERNIE-Image-Turbo")

_BFL = "black-forest-labs"
# The sizes SiliconFlow offers its FLUX.1 models (as for Kolors).
_FLUX1_SIZES = ("1024x1024", "960x1280", "768x1024", "720x1440", "720x1280")
FLUX1_SCHNELL = ModelSpec(
    id=f"{_BFL}/FLUX.1-schnell",
    owned_by=_BFL,
    created=1_722_470_400,  # 2024-08-01
    sizes=_FLUX1_SIZES,
    default_size="1024x1024",
    max_batch_size=1,
    max_images=0,
    params=frozenset({"seed", "prompt_enhancement"}),
)
FLUX1_DEV = FLUX1_SCHNELL.model_copy(
    update={
        "id": f"{_BFL}/FLUX.1-dev",
        "params": frozenset({"seed", "num_inference_steps", "prompt_enhancement"}),
    }
)
FLUX2_PRO = ModelSpec(
    id=f"{_BFL}/FLUX.2-pro",
    owned_by=_BFL,
    created=1_764_028_800,  # 2025-11-25
    sizes=("512x512", "768x1024", "1024x768", "576x1024", "1024x576"),
    default_size="512x512",
    max_batch_size=1,
    max_images=0,
    params=frozenset({"seed", "prompt_enhancement"}),
    output_formats=("png", "jpeg"),
)
# Undocumented: FLUX.2-flex, FLUX 1.1 pro (and Ultra), and the Kontext editing models, which
# need one input image.
FLUX2_FLEX = _unverified(f"{_BFL}/FLUX.2-flex", 1_764_028_800, owned_by=_BFL)
FLUX11_PRO = _unverified(f"{_BFL}/FLUX-1.1-pro", 1_727_827_200, owned_by=_BFL)  # 2024-10-02
FLUX11_PRO_ULTRA = _unverified(
    f"{_BFL}/FLUX-1.1-pro-Ultra", 1_730_851_200, owned_by=_BFL
)  # 2024-11-06
_KONTEXT = {"owned_by": _BFL, "min_images": 1, "max_images": 1}
KONTEXT_DEV = _unverified(f"{_BFL}/FLUX.1-Kontext-dev", 1_748_476_800, **_KONTEXT)  # 2025-05-29
KONTEXT_PRO = _unverified(f"{_BFL}/FLUX.1-Kontext-pro", 1_748_476_800, **_KONTEXT)
KONTEXT_MAX = _unverified(f"{_BFL}/FLUX.1-Kontext-max", 1_748_476_800, **_KONTEXT)

# Defaults first: on .cn Qwen-Image (documented, and the default before sites existed), on
# .com FLUX.1-schnell (documented, fast and cheap; Kolors is not offered there). The first
# model needing an input image is the default edit model: Qwen-Image-Edit on both sites. Models
# that make images from text come before those that edit, as the playground groups them.
SITE_MODELS: dict[Site, tuple[ModelSpec, ...]] = {
    "cn": (
        QWEN_IMAGE,
        KOLORS,
        Z_IMAGE_TURBO,
        Z_IMAGE,
        ERNIE_IMAGE_TURBO,
        QWEN_IMAGE_EDIT,
        QWEN_IMAGE_EDIT_2509,
    ),
    "com": (
        FLUX1_SCHNELL,
        FLUX1_DEV,
        FLUX2_PRO,
        FLUX2_FLEX,
        FLUX11_PRO,
        FLUX11_PRO_ULTRA,
        QWEN_IMAGE,
        Z_IMAGE_TURBO,
        QWEN_IMAGE_EDIT,
        KONTEXT_DEV,
        KONTEXT_PRO,
        KONTEXT_MAX,
    ),
}
