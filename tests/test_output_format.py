"""`output_format` / `output_compression` and IMAGE_FORMAT: what is stored, served and answered.

The fake draws PNG unless configured otherwise; each answer's bytes are checked by their
signature and by Pillow opening them, and each stored file by its name and `Content-Type`.
"""

from __future__ import annotations

import base64
import io
import json

import httpx
import openai
import pytest
from PIL import Image

from sfproxy.fake_upstream import FakeSiliconFlow
from sfproxy.images import JPEG_BACKGROUND, convert_image
from sfproxy.setting_values import ConfigError
from sfproxy.settings import load_settings

from .conftest import StartProxy
from .images import image_bytes
from .support.inprocess import in_process, service_settings

PROMPT = "a red fox in fresh snow"
# A model that makes PNG and JPEG itself when sent `output_format`, as FLUX.2 does.
FLUX = "acme/FLUX.2-test"
FLUX_MODELS_JSON = json.dumps(
    [
        "Qwen/Qwen-Image",
        {
            "id": FLUX,
            "sizes": ["512x512"],
            "default_size": "512x512",
            "max_batch_size": 1,
            "max_images": 0,
            "params": ["seed"],
            "output_formats": ["png", "jpeg"],
        },
    ]
)


def b64_image(body: dict, index: int = 0) -> bytes:
    return base64.b64decode(body["data"][index]["b64_json"])


def is_webp(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def pillow_format(data: bytes) -> tuple[str | None, tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.format, image.size


async def generate(running, **body):
    response = await running.http.post(
        "/v1/images/generations",
        json={"model": "Qwen/Qwen-Image", "prompt": PROMPT, "seed": 7, **body},
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_librechat_request_gets_webp_bytes(fake, tmp_path):
    async with in_process(service_settings(fake, tmp_path)) as running:
        body = await generate(
            running, output_format="webp", output_compression=80, response_format="b64_json"
        )
    data = b64_image(body)
    assert is_webp(data)
    assert pillow_format(data) == ("WEBP", (1328, 1328))
    assert body["output_format"] == "webp"
    # SiliconFlow's Qwen takes no output_format: it was converted here, not asked for.
    assert "output_format" not in fake.requests[-1].body
    stored = list((tmp_path / "images").rglob("*.*"))
    assert [path.suffix for path in stored] == [".webp"]
    assert stored[0].read_bytes() == data


async def test_url_answer_serves_the_converted_file(fake, tmp_path):
    async with in_process(service_settings(fake, tmp_path)) as running:
        body = await generate(running, output_format="webp", response_format="url")
        url = body["data"][0]["url"]
        served = await running.http.get(url)
    assert body["output_format"] == "webp"
    assert httpx.URL(url).path.endswith(".webp")
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/webp"
    assert is_webp(served.content)
    assert pillow_format(served.content)[0] == "WEBP"


async def test_jpg_is_jpeg_and_png_becomes_jpeg(fake, tmp_path):
    async with in_process(service_settings(fake, tmp_path)) as running:
        body = await generate(running, output_format="jpg", response_format="b64_json")
    data = b64_image(body)
    assert data.startswith(b"\xff\xd8\xff")
    assert pillow_format(data) == ("JPEG", (1328, 1328))
    assert body["output_format"] == "jpeg"
    assert [path.suffix for path in (tmp_path / "images").rglob("*.*")] == [".jpg"]


def test_jpeg_flattens_transparency_onto_white():
    picture = Image.new("RGBA", (40, 30), (0, 0, 255, 255))
    picture.paste((0, 0, 0, 0), (0, 0, 20, 30))
    out = io.BytesIO()
    picture.save(out, "PNG")
    converted = convert_image(out.getvalue(), "image/jpeg", max_pixels=10_000)
    assert (converted.media_type, converted.width, converted.height) == ("image/jpeg", 40, 30)
    with Image.open(io.BytesIO(converted.data)) as result:
        assert result.mode == "RGB"
        left, right = result.getpixel((5, 15)), result.getpixel((35, 15))
    assert all(abs(a - b) <= 8 for a, b in zip(left, JPEG_BACKGROUND, strict=True))
    assert right[2] > 230 and right[0] < 25 and right[1] < 25


def test_webp_keeps_transparency():
    picture = Image.new("RGBA", (40, 30), (0, 0, 255, 255))
    picture.paste((0, 0, 0, 0), (0, 0, 20, 30))
    out = io.BytesIO()
    picture.save(out, "PNG")
    converted = convert_image(out.getvalue(), "image/webp", max_pixels=10_000, quality=80)
    with Image.open(io.BytesIO(converted.data)) as result:
        assert result.mode == "RGBA"
        assert result.getpixel((5, 15))[3] == 0
        assert result.getpixel((35, 15))[3] == 255


def test_only_the_first_frame_is_converted():
    frames = [Image.new("RGB", (20, 20), color) for color in ("red", "lime")]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    converted = convert_image(out.getvalue(), "image/webp", max_pixels=10_000, quality=100)
    with Image.open(io.BytesIO(converted.data)) as result:
        assert getattr(result, "n_frames", 1) == 1
        red, green, _ = result.convert("RGB").getpixel((10, 10))
    assert red > 200 and green < 60


async def test_png_from_jpeg(fake, tmp_path):
    fake.configure(image_format="jpeg")
    async with in_process(service_settings(fake, tmp_path)) as running:
        body = await generate(running, output_format="png", response_format="b64_json")
    data = b64_image(body)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert pillow_format(data) == ("PNG", (1328, 1328))
    assert body["output_format"] == "png"


@pytest.mark.parametrize(("made", "asked"), [("png", "png"), ("webp", "webp"), ("jpeg", "jpg")])
async def test_the_same_format_keeps_the_exact_bytes(fake, tmp_path, made, asked):
    fake.configure(image_format=made)
    async with in_process(service_settings(fake, tmp_path)) as running:
        kept = await generate(running, response_format="b64_json")
        asked_for = await generate(running, output_format=asked, response_format="b64_json")
    # The same seed draws the same picture: the fake's file, byte for byte.
    assert b64_image(asked_for) == b64_image(kept)
    assert (
        asked_for["output_format"] == kept["output_format"] == ("jpeg" if made == "jpeg" else made)
    )


@pytest.mark.parametrize(
    ("made", "asked", "signature"),
    [("webp", "webp", b"RIFF"), ("jpeg", None, b"\xff\xd8\xff"), ("png", None, b"\x89PNG")],
)
async def test_a_quality_asked_re_encodes_jpeg_and_webp_only(
    fake, tmp_path, made, asked, signature
):
    fake.configure(image_format=made)
    async with in_process(service_settings(fake, tmp_path)) as running:
        kept = await generate(running, response_format="b64_json")
        low = await generate(
            running, output_format=asked, output_compression=10, response_format="b64_json"
        )
    assert b64_image(low).startswith(signature)
    if made == "png":
        # PNG has no quality: the fake's file, untouched.
        assert b64_image(low) == b64_image(kept)
    else:
        # The fake encodes at quality 80 or more: quality 10 is a different, smaller file.
        assert len(b64_image(low)) < len(b64_image(kept))


async def test_image_format_applies_when_nothing_is_asked(fake, tmp_path):
    settings = service_settings(fake, tmp_path, image_format="webp")
    async with in_process(settings) as running:
        default = await generate(running, response_format="b64_json")
        asked = await generate(running, output_format="jpeg", response_format="b64_json")
    assert is_webp(b64_image(default))
    assert default["output_format"] == "webp"
    assert b64_image(asked).startswith(b"\xff\xd8\xff")
    assert asked["output_format"] == "jpeg"


async def test_image_compression_is_the_default_quality(fake, tmp_path):
    async def webp_bytes(quality: int) -> int:
        settings = service_settings(fake, tmp_path, image_format="webp", image_compression=quality)
        async with in_process(settings) as running:
            return len(b64_image(await generate(running, response_format="b64_json")))

    assert await webp_bytes(5) < await webp_bytes(95)


async def test_a_model_that_makes_the_format_gets_it_passed_through(tmp_path):
    rule = {"default_size": [512, 512], "output_formats": ["png", "jpeg"]}
    async with FakeSiliconFlow(extra_models={FLUX: rule}) as fake:
        settings = service_settings(fake, tmp_path, models_json=FLUX_MODELS_JSON)
        async with in_process(settings) as running:
            body = await generate(
                running, model=FLUX, output_format="jpeg", response_format="b64_json"
            )
            made = fake.files.get(fake.downloads[-1].path.split("/")[-1].split("?")[0])
            sent = fake.requests[-1].body
            listed = (await running.http.get("/v1/models")).json()["data"]
        assert made is not None
        assert sent["output_format"] == "jpeg"
        # No conversion: the bytes are the model's own JPEG.
        assert b64_image(body) == made.image.to_bytes()
        assert made.image.image_format == "jpeg"
        assert body["output_format"] == "jpeg"
        assert next(m for m in listed if m["id"] == FLUX)["output_formats"] == ["png", "jpeg"]


async def test_a_format_the_model_cannot_make_is_converted_here(tmp_path):
    rule = {"default_size": [512, 512], "output_formats": ["png", "jpeg"]}
    async with FakeSiliconFlow(extra_models={FLUX: rule}) as fake:
        settings = service_settings(fake, tmp_path, models_json=FLUX_MODELS_JSON)
        async with in_process(settings) as running:
            body = await generate(
                running, model=FLUX, output_format="webp", response_format="b64_json"
            )
        assert "output_format" not in fake.requests[-1].body
        assert is_webp(b64_image(body))
        assert body["output_format"] == "webp"


async def test_image_format_is_passed_through_too(tmp_path):
    rule = {"default_size": [512, 512], "output_formats": ["png", "jpeg"]}
    async with FakeSiliconFlow(extra_models={FLUX: rule}) as fake:
        settings = service_settings(
            fake, tmp_path, models_json=FLUX_MODELS_JSON, image_format="jpeg"
        )
        async with in_process(settings) as running:
            body = await generate(running, model=FLUX, response_format="b64_json")
        assert fake.requests[-1].body["output_format"] == "jpeg"
        assert b64_image(body).startswith(b"\xff\xd8\xff")


async def test_the_fake_refuses_output_format_for_a_model_that_does_not_take_it(fake):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{fake.base_url}/images/generations",
            headers={"Authorization": f"Bearer {fake.config.api_key}"},
            json={"model": "Qwen/Qwen-Image", "prompt": PROMPT, "output_format": "png"},
        )
    assert response.status_code == 400
    assert "output_format" in response.json()["message"]


async def test_an_edit_answer_reports_the_size_of_its_image(fake, tmp_path):
    source = image_bytes("PNG", (96, 72), "green")
    async with in_process(service_settings(fake, tmp_path)) as running:
        response = await running.http.post(
            "/v1/images/edits",
            data={"prompt": "make it blue", "model": "Qwen/Qwen-Image-Edit"},
            files={"image": ("photo.png", source, "image/png")},
        )
        converted = await running.http.post(
            "/v1/images/edits",
            data={
                "prompt": "make it blue",
                "model": "Qwen/Qwen-Image-Edit",
                "output_format": "webp",
                "response_format": "b64_json",
            },
            files={"image": ("photo.png", source, "image/png")},
        )
    assert response.status_code == 200, response.text
    assert response.json()["size"] == "96x72"
    assert converted.json()["size"] == "96x72"
    assert pillow_format(b64_image(converted.json())) == ("WEBP", (96, 72))


async def test_chat_data_uris_stay_png_when_webp_is_asked(fake, tmp_path):
    async with in_process(service_settings(fake, tmp_path)) as running:
        response = await running.http.post(
            "/v1/chat/completions",
            json={
                "model": "Qwen/Qwen-Image",
                "messages": [{"role": "user", "content": PROMPT}],
                "response_format": "b64_json",
                "output_format": "webp",
            },
        )
    assert response.status_code == 200, response.text
    content = response.json()["choices"][0]["message"]["content"]
    assert content.startswith("![image](data:image/png;base64,")
    data = base64.b64decode(content.split(",", 1)[1].rstrip(")"))
    assert pillow_format(data)[0] == "PNG"
    # What the store kept is the WebP that was asked for.
    assert [path.suffix for path in (tmp_path / "images").rglob("*.*")] == [".webp"]


async def test_without_a_store_a_url_for_a_converted_image_is_refused(fake, tmp_path):
    settings = service_settings(fake, tmp_path, image_store="off")
    async with in_process(settings) as running:
        response = await running.http.post(
            "/v1/images/generations",
            json={"prompt": PROMPT, "output_format": "webp", "response_format": "url"},
        )
        b64 = await generate(running, output_format="webp", response_format="b64_json")
    error = response.json()["error"]
    assert response.status_code == 400
    assert error["param"] == "output_format"
    assert error["code"] == "output_format_needs_image_store"
    assert "IMAGE_STORE" in error["message"]
    # Refused before SiliconFlow was called: only the b64_json request reached it.
    assert len(fake.requests) == 1
    assert is_webp(b64_image(b64))


async def test_without_a_store_image_format_leaves_url_answers_alone(fake, tmp_path):
    settings = service_settings(fake, tmp_path, image_store="off", image_format="webp")
    async with in_process(settings) as running:
        body = await generate(running, response_format="url")
    assert body["data"][0]["url"].startswith(fake.origin + "/files/")
    assert len(fake.downloads) == 0


async def test_an_undecodable_image_is_a_bad_upstream_response(fake, tmp_path):
    fake.add_fault("corrupt", target="download")
    async with in_process(service_settings(fake, tmp_path)) as running:
        response = await running.http.post(
            "/v1/images/generations",
            json={"prompt": PROMPT, "output_format": "webp", "response_format": "b64_json"},
        )
    error = response.json()["error"]
    assert response.status_code == 502
    assert error["code"] == "upstream_bad_response"
    assert error["message"].startswith("SiliconFlow sent an image that cannot be converted to webp")
    assert list((tmp_path / "images").rglob("*.*")) == []


def test_the_openai_sdk_gets_webp(start: StartProxy):
    proxy = start()
    with openai.OpenAI(base_url=proxy.api_base, api_key="unused", max_retries=0) as client:
        result = client.images.generate(
            model="Qwen/Qwen-Image",
            prompt=PROMPT,
            output_format="webp",
            output_compression=80,
            response_format="b64_json",
        )
    assert result.data is not None and result.data[0].b64_json is not None
    data = base64.b64decode(result.data[0].b64_json)
    assert is_webp(data)
    assert pillow_format(data)[0] == "WEBP"
    assert result.output_format == "webp"


async def test_without_a_store_a_format_the_model_makes_may_be_a_url(tmp_path):
    rule = {"default_size": [512, 512], "output_formats": ["png", "jpeg"]}
    async with FakeSiliconFlow(extra_models={FLUX: rule}) as fake:
        settings = service_settings(fake, tmp_path, models_json=FLUX_MODELS_JSON, image_store="off")
        async with in_process(settings) as running:
            body = await generate(running, model=FLUX, output_format="jpeg", response_format="url")
        assert fake.requests[-1].body["output_format"] == "jpeg"
        async with httpx.AsyncClient() as http:
            served = await http.get(body["data"][0]["url"])
        assert served.headers["content-type"] == "image/jpeg"


async def test_the_fake_answers_the_format_a_model_was_asked_for(tmp_path):
    rule = {"default_size": [512, 512], "output_formats": ["png", "jpeg"]}
    async with FakeSiliconFlow(extra_models={FLUX: rule}) as fake, httpx.AsyncClient() as http:
        headers = {"Authorization": f"Bearer {fake.config.api_key}"}
        answers = [
            await http.post(
                f"{fake.base_url}/images/generations",
                headers=headers,
                json={"model": FLUX, "prompt": PROMPT, "output_format": image_format},
            )
            for image_format in ("jpeg", "webp")
        ]
        image = await http.get(answers[0].json()["images"][0]["url"])
    assert image.headers["content-type"] == "image/jpeg"
    assert pillow_format(image.content) == ("JPEG", (512, 512))
    assert answers[1].status_code == 400
    assert answers[1].json()["message"] == (
        "Invalid parameter output_format: must be one of png, jpeg"
    )


async def test_the_fakes_corrupt_download_looks_whole_but_does_not_decode(fake):
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{fake.base_url}/images/generations",
            headers={"Authorization": f"Bearer {fake.config.api_key}"},
            json={"model": "Qwen/Qwen-Image", "prompt": PROMPT, "image_size": "256x256"},
        )
        url = answer.json()["images"][0]["url"]
        whole = (await http.get(url)).content
        fake.add_fault("corrupt", target="download")
        corrupt = (await http.get(url)).content
    assert len(corrupt) == len(whole)
    assert corrupt[:33] == whole[:33] and corrupt.endswith(b"IEND\xaeB`\x82")
    with pytest.raises(OSError):
        Image.open(io.BytesIO(corrupt)).load()
    with pytest.raises(ValueError, match="fault kind for generate"):
        fake.add_fault("corrupt")


@pytest.mark.parametrize(
    ("value", "parsed"), [("", "keep"), ("keep", "keep"), (" JPG ", "jpeg"), ("WebP", "webp")]
)
def test_image_format_setting(monkeypatch, value, parsed):
    monkeypatch.setenv("IMAGE_FORMAT", value)
    assert load_settings(_env_file=None).image_format == parsed


@pytest.mark.parametrize(("name", "value"), [("IMAGE_FORMAT", "gif"), ("IMAGE_COMPRESSION", "101")])
def test_invalid_image_format_settings_name_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings(_env_file=None)
