"""The answer's format when a request names none (README, "Response format"), and its settings."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from sfproxy.plan import response_format_for
from sfproxy.protocol import ImageGenerationRequest

from .images import data_uri, image_bytes

PNG = image_bytes("PNG", (80, 60), "red")


def params(**body: Any) -> ImageGenerationRequest:
    return ImageGenerationRequest.model_validate({"prompt": "p", **body})


@pytest.mark.parametrize(
    ("body", "edit", "expected"),
    [
        ({}, False, "url"),
        ({"model": "Qwen/Qwen-Image"}, False, "url"),
        ({"model": "dall-e-3"}, False, "url"),
        ({"model": "dall-e-2"}, True, "b64_json"),
        ({}, True, "b64_json"),
        ({"model": "gpt-image-1"}, False, "b64_json"),
        ({"model": "gpt-image-1.5"}, False, "b64_json"),
        ({"output_format": "webp"}, False, "b64_json"),
        ({"output_compression": 80}, False, "b64_json"),
        ({"background": "auto"}, False, "b64_json"),
        ({"moderation": "low"}, False, "b64_json"),
        ({"input_fidelity": "high"}, False, "b64_json"),
        ({"partial_images": 0}, False, "b64_json"),
        # `quality` is dall-e-3's too: it says nothing about the client.
        ({"quality": "hd"}, False, "url"),
        # What the client asks for, it gets.
        ({"model": "gpt-image-1", "response_format": "url"}, False, "url"),
        ({"response_format": "url"}, True, "url"),
        ({"response_format": "b64_json"}, False, "b64_json"),
    ],
)
def test_the_rule(body, edit, expected):
    request = params(**body)
    got = response_format_for(request, edit=edit, requested_model=request.model, setting="auto")
    assert got == expected


@pytest.mark.parametrize("setting", ["url", "b64_json"])
def test_a_setting_other_than_auto_replaces_the_rule_but_not_the_client(setting):
    for body, edit in [({"model": "gpt-image-1"}, True), ({}, False)]:
        request = params(**body)
        assert response_format_for(request, edit=edit, requested_model=None, setting=setting) == (
            setting
        )
    asked = params(response_format="url", output_format="png")
    assert response_format_for(asked, edit=True, requested_model=None, setting=setting) == "url"


def png_of(b64: str | None) -> Image.Image:
    assert b64 is not None
    return Image.open(io.BytesIO(base64.b64decode(b64)))


# Clients as they really send, through the running service


def test_ai_sdk_multipart_edit_without_response_format_gets_b64_json(proxy, fake):
    # As @ai-sdk/openai's OpenAIImageModel builds an edit (convertToFormData): model, prompt,
    # one `image` Blob (FormData names it "blob"), n; no response_format. It reads only
    # data[].b64_json.
    response = httpx.post(
        proxy.api_base + "/images/edits",
        files=[("image", ("blob", PNG, "image/png"))],
        data={"model": "Qwen/Qwen-Image-Edit", "prompt": "make it blue", "n": "1"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    [item] = response.json()["data"]
    assert "url" not in item
    assert png_of(item["b64_json"]).size == (80, 60)
    assert fake.requests[-1].body["model"] == "Qwen/Qwen-Image-Edit"


def test_librechat_generation_gets_webp_bytes_in_b64_json(client, fake):
    # LibreChat's image tool (api/app/clients/tools/structured/OpenAIImageTools.js), through
    # openai-node: these fields, no response_format; it reads data[0].b64_json only.
    result = client.images.generate(
        model="gpt-image-1",
        prompt="a lighthouse at dusk",
        n=1,
        background="auto",
        output_format="webp",
        output_compression=100,
        quality="auto",
        size="auto",
    )
    assert result.data[0].url is None
    data = base64.b64decode(result.data[0].b64_json or "")
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    assert Image.open(io.BytesIO(data)).format == "WEBP"
    assert result.output_format == "webp"
    assert fake.requests[-1].body["model"] == "Qwen/Qwen-Image"


def test_librechat_edit_gets_b64_json(proxy, fake):
    response = httpx.post(
        proxy.api_base + "/images/edits",
        files=[("image[]", ("photo.png", PNG, "image/png"))],
        data={"model": "gpt-image-1", "prompt": "make it blue", "quality": "auto", "size": "auto"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert png_of(response.json()["data"][0]["b64_json"]).size == (80, 60)
    assert fake.requests[-1].body["model"] == "Qwen/Qwen-Image-Edit"


def test_asking_for_url_with_a_gpt_image_alias_gets_urls(client):
    generated = client.images.generate(
        model="gpt-image-1", prompt="x", output_format="png", response_format="url"
    )
    assert generated.data[0].b64_json is None
    assert httpx.get(generated.data[0].url or "").status_code == 200
    edited = client.images.edit(
        model="gpt-image-1",
        image=("photo.png", PNG, "image/png"),
        prompt="make it blue",
        response_format="url",
    )
    assert edited.data[0].b64_json is None
    assert png_of(base64.b64encode(httpx.get(edited.data[0].url or "").content).decode())


def test_plain_generation_gets_url(client):
    result = client.images.generate(model="Kwai-Kolors/Kolors", prompt="x", size="1024x1024")
    assert result.data[0].b64_json is None
    assert httpx.get(result.data[0].url or "").status_code == 200


def chat_link(sdk: openai.OpenAI, model: str) -> str:
    answer = sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    content = answer.choices[0].message.content or ""
    assert content.startswith("![image](")
    return content.removeprefix("![image](")


def answered(proxy, path: str, **body: Any) -> dict[str, Any]:
    if path == "/images/edits":
        response = httpx.post(
            proxy.api_base + path,
            files=[("image", ("photo.png", PNG, "image/png"))],
            data={"prompt": "p", **body},
            timeout=30,
        )
    else:
        response = httpx.post(proxy.api_base + path, json={"prompt": "p", **body}, timeout=30)
    assert response.status_code == 200, response.text
    item: dict[str, Any] = response.json()["data"][0]
    return item


@pytest.mark.parametrize(
    ("settings", "edit", "generation", "chat"),
    [
        ({}, "b64_json", "url", "url"),
        ({"IMAGES_RESPONSE_FORMAT": "url"}, "url", "url", "url"),
        ({"IMAGES_RESPONSE_FORMAT": "b64_json"}, "b64_json", "b64_json", "url"),
        # The original's setting still sets both...
        ({"DEFAULT_RESPONSE_FORMAT": "b64_json"}, "b64_json", "b64_json", "b64_json"),
        ({"DEFAULT_RESPONSE_FORMAT": "url"}, "url", "url", "url"),
        # ...unless the specific setting is set.
        (
            {"DEFAULT_RESPONSE_FORMAT": "b64_json", "CHAT_RESPONSE_FORMAT": "url"},
            "b64_json",
            "b64_json",
            "url",
        ),
        (
            {"DEFAULT_RESPONSE_FORMAT": "url", "IMAGES_RESPONSE_FORMAT": "auto"},
            "b64_json",
            "url",
            "url",
        ),
        ({"CHAT_RESPONSE_FORMAT": "b64_json"}, "b64_json", "url", "b64_json"),
    ],
)
def test_settings(start, settings, edit, generation, chat):
    proxy = start(**settings)
    edited = answered(proxy, "/images/edits", model="Qwen/Qwen-Image-Edit")
    generated = answered(proxy, "/images/generations", model="Qwen/Qwen-Image")
    assert (list(edited)[0], list(generated)[0]) == (edit, generation)
    with openai.OpenAI(base_url=proxy.api_base, api_key="unused", max_retries=0) as sdk:
        link = chat_link(sdk, "Qwen/Qwen-Image")
    assert link.startswith("data:image/png;base64," if chat == "b64_json" else proxy.url)


def test_chat_keeps_urls_for_a_gpt_image_alias(client, proxy):
    # The rule is the images API's: chat answers Markdown, where a URL is what clients show.
    assert chat_link(client, "gpt-image-1").startswith(proxy.url + "/v1/files/images/")


def test_an_edit_in_json_without_response_format_gets_b64_json(proxy):
    response = httpx.post(
        proxy.api_base + "/images/edits",
        json={"model": "Qwen/Qwen-Image-Edit", "prompt": "p", "image": data_uri(PNG)},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert png_of(response.json()["data"][0]["b64_json"]).size == (80, 60)
