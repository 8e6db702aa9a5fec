"""The video models: names resolved, sizes and durations fitted, and `/v1/models` listing them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from sfproxy.errors import InvalidRequestError
from sfproxy.fake_upstream import FakeSiliconFlow
from sfproxy.settings import load_settings
from sfproxy.video_models import (
    VIDEO_ENDPOINT_TYPE,
    WAN22_I2V,
    WAN22_T2V,
    VideoModels,
    VideoSpec,
    is_openai_name,
)

from .support.inprocess import ASGI_URL, in_process, service_settings

T2V = "Wan-AI/Wan2.2-T2V-A14B"
I2V = "Wan-AI/Wan2.2-I2V-A14B"
IMAGE_MODELS = [
    "Qwen/Qwen-Image",
    "Kwai-Kolors/Kolors",
    "Tongyi-MAI/Z-Image-Turbo",
    "Tongyi-MAI/Z-Image",
    "baidu/ERNIE-Image-Turbo",
    "Qwen/Qwen-Image-Edit",
    "Qwen/Qwen-Image-Edit-2509",
]
ADMIN = "admin-key-for-the-video-tests-0123"
OPENAI_NAMES = [
    "sora-2",
    "sora-2-pro",
    "sora-2-2025-10-06",
    "sora-2-pro-2025-10-06",
    "sora-2-2025-12-08",
]

VIDEOS = VideoModels("cn")


def refusal(call: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as refused:
        call()
    return refused.value


@pytest.mark.parametrize("name", [None, "", "  ", *OPENAI_NAMES])
def test_no_name_and_openai_names_get_the_default_models(name: str | None) -> None:
    assert VIDEOS.resolve(name, has_image=False).id == T2V
    assert VIDEOS.resolve(name, has_image=True).id == I2V


@pytest.mark.parametrize("name", ["sora-2-", "sora-2-pro-", "sora-2-2025-1-06", "sora-3", "sora"])
def test_only_openai_names_and_their_dated_ids_are_aliases(name: str) -> None:
    assert not is_openai_name(name)
    assert refusal(lambda: VIDEOS.resolve(name, has_image=False)).code == "model_not_found"


def test_a_named_model_is_that_model() -> None:
    assert VIDEOS.resolve(T2V, has_image=False) is WAN22_T2V
    assert VIDEOS.resolve(I2V, has_image=True) is WAN22_I2V


def test_a_text_to_video_model_given_an_image_gets_its_image_to_video_sibling() -> None:
    assert VIDEOS.resolve(T2V, has_image=True) is WAN22_I2V


def test_a_text_to_video_model_without_a_sibling_given_an_image_is_a_400() -> None:
    # Two image-to-video models and no sibling named: which one is meant cannot be told.
    lone = VideoSpec(
        id="acme/t2v",
        sizes=("1280x720",),
        default_size="1280x720",
        seconds=("5",),
        default_seconds="5",
        requires_image=False,
        sites=frozenset({"cn"}),
        created=0,
    )
    other_i2v = VideoSpec(**{**_fields(WAN22_I2V), "id": "acme/i2v"})
    videos = VideoModels("cn", models=(WAN22_T2V, lone, WAN22_I2V, other_i2v))
    refused = refusal(lambda: videos.resolve("acme/t2v", has_image=True))
    assert (refused.status_code, refused.param, refused.code) == (
        400,
        "model",
        "image_not_supported",
    )
    assert refused.message == (
        "The model acme/t2v makes video from text only and takes no image; "
        f"for video from an image use {I2V}."
    )


def test_an_image_to_video_model_without_an_image_is_a_400() -> None:
    refused = refusal(lambda: VIDEOS.resolve(I2V, has_image=False, image_param="image"))
    assert (refused.param, refused.code) == ("image", "image_required")
    assert refused.message == (
        f"The model {I2V} makes video from an image: send one in 'image', "
        f"or use {T2V} for video from text."
    )


@pytest.mark.parametrize("name", ["Qwen/Qwen-Image", "acme/unknown", "x" * 5000])
def test_an_unknown_model_is_a_400_naming_the_video_models(name: str) -> None:
    refused = refusal(lambda: VIDEOS.resolve(name, has_image=False))
    assert (refused.status_code, refused.param, refused.code) == (400, "model", "model_not_found")
    shown = name if len(name) <= 64 else name[:64] + "…"
    assert refused.message == (
        f"The model '{shown}' is not a video model of this proxy. Video models: {T2V}, {I2V}."
    )


@pytest.mark.parametrize(
    ("size", "fitted"),
    [
        (None, "1280x720"),
        ("", "1280x720"),
        ("auto", "1280x720"),
        # OpenAI's sizes (the SDK's VideoSize).
        ("720x1280", "720x1280"),
        ("1280x720", "1280x720"),
        ("1024x1792", "720x1280"),
        ("1792x1024", "1280x720"),
        ("1024x1024", "960x960"),
        ("512x512", "960x960"),
        ("16:9", "1280x720"),
        ("9:16", "720x1280"),
        ("1:1", "960x960"),
        (" 1920 x 1080 ", "1280x720"),
    ],
)
def test_sizes_are_fitted_by_aspect_ratio(size: str | None, fitted: str) -> None:
    for spec in (WAN22_T2V, WAN22_I2V):
        assert VIDEOS.fit(spec, size=size, seconds=None) == (fitted, "5")


@pytest.mark.parametrize(
    ("size", "code", "message"),
    [
        (
            "big",
            "invalid_size",
            "Invalid 'size': 'big' is not WIDTHxHEIGHT such as 1024x1024, an aspect ratio such "
            "as 16:9, or auto.",
        ),
        (
            "10x10",
            "size_out_of_range",
            "Invalid 'size': '10x10': width and height must each be between 64 and 4096 pixels.",
        ),
        (
            "0:9",
            "invalid_aspect_ratio",
            "Invalid 'size': '0:9' is not an aspect ratio such as 16:9 or 3:4.",
        ),
        (
            "1" * 40 + "x720",
            "invalid_size",
            f"Invalid 'size': '{'1' * 32}…' is not WIDTHxHEIGHT such as 1280x720, or an aspect "
            "ratio such as 16:9.",
        ),
    ],
)
def test_a_malformed_size_is_a_400(size: str, code: str, message: str) -> None:
    refused = refusal(lambda: VIDEOS.fit(WAN22_T2V, size=size, seconds=None))
    assert (refused.status_code, refused.param, refused.code) == (400, "size", code)
    assert refused.message == message


@pytest.mark.parametrize("seconds", [None, "", "5", " 5 ", 5])
def test_seconds_the_model_makes_or_none_give_its_duration(seconds: str | int | None) -> None:
    assert VIDEOS.fit(WAN22_T2V, size=None, seconds=seconds) == ("1280x720", "5")


@pytest.mark.parametrize(
    ("seconds", "given"),
    [
        ("4", "'4'"),
        ("12", "'12'"),
        (8, "'8'"),
        (-5, "'-5'"),
        ("5.0", "'5.0'"),
        (True, "'true'"),
        ("9" * 100, "a value that long"),
        (10**5000, "a value that long"),
    ],
    ids=lambda value: repr(value)[:12] if not isinstance(value, int) or value < 1000 else "huge",
)
def test_seconds_the_model_does_not_make_are_a_400_naming_what_it_makes(
    seconds: str | int, given: str
) -> None:
    refused = refusal(lambda: VIDEOS.fit(WAN22_T2V, size=None, seconds=seconds))
    assert (refused.status_code, refused.param, refused.code) == (400, "seconds", "invalid_seconds")
    assert refused.message == (
        f"Invalid 'seconds': {T2V} makes videos of '5' seconds, not {given}; "
        "send '5' or leave it out."
    )


def test_video_model_sets_the_default_and_must_be_a_text_to_video_model() -> None:
    settings = load_settings(_env_file=None, video_model=T2V, sf_site="com")
    assert settings.video_models.default_model == T2V
    assert settings.video_models.ids == (T2V, I2V)
    with pytest.raises(ValueError, match="VIDEO_MODEL: 'Wan-AI/Wan2.2-I2V-A14B' is not a") as bad:
        load_settings(_env_file=None, video_model=I2V)
    assert f"(text-to-video models: {T2V})" in str(bad.value)
    with pytest.raises(ValueError, match="VIDEO_MODEL: 'acme/none' is not a text-to-video"):
        load_settings(_env_file=None, video_model="acme/none")


async def test_models_lists_the_video_models_after_the_image_ones(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    async with in_process(service_settings(fake, tmp_path)) as running:
        sdk = openai.AsyncOpenAI(base_url=ASGI_URL + "/v1", api_key="x", http_client=running.http)
        cards = [card async for card in sdk.models.list()]
        one = await sdk.models.retrieve(I2V)
    assert [card.id for card in cards] == [*IMAGE_MODELS, T2V, I2V]
    video = cards[-2]
    assert (video.object, video.owned_by, video.created) == ("model", "siliconflow", 1_753_660_800)
    assert video.model_extra == {
        "supported_endpoint_types": [VIDEO_ENDPOINT_TYPE, "openai"],
        "source": "built-in",
        "sf_sizes": ["1280x720", "720x1280", "960x960"],
        "sf_default_size": "1280x720",
        "sf_seconds": ["5"],
        "sf_default_seconds": "5",
        "sf_requires_image": False,
    }
    assert VIDEO_ENDPOINT_TYPE == "openai-video"
    assert (one.id, (one.model_extra or {})["sf_requires_image"]) == (I2V, True)


async def test_openai_video_names_are_answered_and_listed_when_asked(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    settings = service_settings(fake, tmp_path, list_model_aliases=True)
    async with in_process(settings) as running:
        listed = (await running.http.get("/v1/models")).json()["data"]
        dated = (await running.http.get("/v1/models/sora-2-pro-2025-10-06")).json()
    video_aliases = [card for card in listed if card.get("alias_of") == T2V]
    assert [card["id"] for card in video_aliases] == ["sora-2", "sora-2-pro"]
    # The image models, the video models, the image aliases, then the video aliases.
    assert [card["id"] for card in listed[-2:]] == ["sora-2", "sora-2-pro"]
    assert (dated["id"], dated["alias_of"], dated["alias_of_image_to_video"]) == (
        "sora-2-pro-2025-10-06",
        T2V,
        I2V,
    )
    assert dated["supported_endpoint_types"] == [VIDEO_ENDPOINT_TYPE, "openai"]


async def test_a_key_limited_to_some_models_sees_only_those(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    async with in_process(service_settings(fake, tmp_path, admin_keys=ADMIN)) as running:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        created = await running.http.post(
            "/admin/keys", json={"name": "vi", "models": [I2V, "Kwai-Kolors/Kolors"]}, headers=admin
        )
        assert created.status_code == 201, created.text
        key = {"Authorization": f"Bearer {created.json()['key']}"}
        listed = (await running.http.get("/v1/models", headers=key)).json()["data"]
    assert [card["id"] for card in listed] == ["Kwai-Kolors/Kolors", I2V]


async def test_a_video_model_in_models_is_listed_once_as_a_video_model(
    fake: FakeSiliconFlow, tmp_path: Path
) -> None:
    settings = service_settings(fake, tmp_path, models=f"Kwai-Kolors/Kolors, {T2V}")
    async with in_process(settings) as running:
        listed = (await running.http.get("/v1/models")).json()["data"]
    assert [card["id"] for card in listed] == ["Kwai-Kolors/Kolors", T2V, I2V]
    assert listed[1]["supported_endpoint_types"] == [VIDEO_ENDPOINT_TYPE, "openai"]


def _fields(spec: VideoSpec) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in VideoSpec.__dataclass_fields__}
