"""Clients set up for SiliconFlow itself, pointed at the service: their bodies, as they build them.

- Cherry Studio, painting page (src/renderer/src/pages/paintings/providers/silicon/provider.ts):
  posts `{host}/v1/images/generations` with model, prompt, negative_prompt, image_size,
  batch_size, seed, num_inference_steps, guidance_scale and image/image2/image3 (data URIs);
  reads `data`, else `images`, each `url` (or `b64_json`). Its older client
  (aiCore/legacy/clients/openai/OpenAIBaseClient.ts `generateImage`) sends the same without
  images, plus prompt_enhancement, and reads `data[].url`.
- LobeChat (packages/model-runtime/src/providers/siliconcloud/createImage.ts): posts
  `{baseURL}/images/generations` with model, prompt, image_size (its `size`), batch_size (`n`),
  num_inference_steps (`steps`), seed, guidance_scale for Kolors else cfg, and `image` (plus
  image2/image3 for Qwen-Image-Edit-2509) as data URIs; reads only `images[0].url`.
"""

from __future__ import annotations

import io
from typing import Any

import httpx
import pytest
from PIL import Image

from .images import data_uri, decoded, image_bytes
from .support.proxy import ProxyProcess

PNG = image_bytes("PNG", (96, 64), "teal")
JPEG = image_bytes("JPEG", (96, 64), "orange")


def generate(proxy: ProxyProcess, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(proxy.api_base + "/images/generations", json=body, timeout=30)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def hosted(proxy: ProxyProcess, url: str) -> bytes:
    """The image behind a URL that must be this service's own, as it serves it."""
    assert url.startswith(proxy.url + "/v1/files/images/")
    served = httpx.get(url, timeout=30)
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/png"
    return served.content


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def test_lobechat_kolors_text_to_image(proxy, fake):
    answer = generate(
        proxy,
        {
            "model": "Kwai-Kolors/Kolors",
            "prompt": "a koi pond",
            "image_size": "1024x1024",
            "batch_size": 2,
            "num_inference_steps": 25,
            "guidance_scale": 7.5,
            "seed": 1234,
        },
    )
    sent = fake.requests[-1].body
    assert (sent["image_size"], sent["batch_size"], sent["guidance_scale"]) == ("1024x1024", 2, 7.5)
    assert len(answer["images"]) == 2
    assert [size_of(hosted(proxy, image["url"])) for image in answer["images"]] == [
        (1024, 1024),
        (1024, 1024),
    ]
    assert answer["seed"] == 1234
    assert isinstance(answer["timings"]["inference"], float)
    # OpenAI's `data` beside it, for clients that read that.
    assert [item["url"] for item in answer["data"]] == [i["url"] for i in answer["images"]]


def test_lobechat_kolors_image_to_image(proxy, fake):
    answer = generate(
        proxy,
        {
            "model": "Kwai-Kolors/Kolors",
            "prompt": "in watercolour",
            "image": data_uri(PNG),
            "num_inference_steps": 20,
            "guidance_scale": 7.5,
            "seed": 7,
        },
    )
    sent = fake.requests[-1].body
    assert decoded(sent["image"]) == PNG
    assert size_of(hosted(proxy, answer["images"][0]["url"])) == (1024, 1024)


def test_lobechat_qwen_edit_2509_with_three_images(proxy, fake):
    third = image_bytes("PNG", (40, 40), "white")
    answer = generate(
        proxy,
        {
            "model": "Qwen/Qwen-Image-Edit-2509",
            "prompt": "put them together",
            "image": data_uri(PNG),
            "image2": data_uri(JPEG, "image/jpeg"),
            "image3": data_uri(third),
            "num_inference_steps": 30,
            "cfg": 4,
            "seed": 99,
        },
    )
    sent = fake.requests[-1].body
    assert [decoded(sent[name]) for name in ("image", "image2", "image3")] == [PNG, JPEG, third]
    assert sent["cfg"] == 4
    # The fake's edit answers an image of the first input's size.
    assert size_of(hosted(proxy, answer["images"][0]["url"])) == (96, 64)


def test_cherry_studio_painting_page_with_an_input_image(proxy, fake):
    body = {
        "model": "Qwen/Qwen-Image-Edit",
        "prompt": "make it night",
        "negative_prompt": None,
        "seed": 123456,
        "num_inference_steps": 20,
        "image": data_uri(PNG),
    }
    answer = generate(proxy, body)
    assert decoded(fake.requests[-1].body["image"]) == PNG
    # Cherry Studio reads `data` first: a URL there too, since nothing asked for b64_json.
    assert answer["data"][0]["url"] == answer["images"][0]["url"]
    assert size_of(hosted(proxy, answer["images"][0]["url"])) == (96, 64)


def test_cherry_studio_legacy_client(proxy, fake):
    answer = generate(
        proxy,
        {
            "model": "Qwen/Qwen-Image",
            "prompt": "a lighthouse",
            "negative_prompt": "",
            "image_size": "1328x1328",
            "batch_size": 1,
            "seed": 42,
            "num_inference_steps": 25,
            "guidance_scale": 4.5,
            "prompt_enhancement": False,
        },
    )
    assert fake.requests[-1].body["image_size"] == "1328x1328"
    assert size_of(hosted(proxy, answer["data"][0]["url"])) == (1328, 1328)


def test_second_image_without_a_first_is_400(proxy, fake):
    response = httpx.post(
        proxy.api_base + "/images/generations",
        json={"model": "Qwen/Qwen-Image-Edit-2509", "prompt": "x", "image2": data_uri(PNG)},
        timeout=30,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["message"], error["param"]) == (
        "Input images are numbered in order: image2 was sent without image.",
        "image",
    )
    assert fake.requests == []


def test_images_url_stays_a_url_beside_b64_json(proxy, fake):
    answer = generate(
        proxy, {"model": "Qwen/Qwen-Image", "prompt": "x", "response_format": "b64_json"}
    )
    assert "url" not in answer["data"][0]
    served = hosted(proxy, answer["images"][0]["url"])
    assert decoded("data:image/png;base64," + answer["data"][0]["b64_json"]) == served


def test_without_an_image_store_images_url_is_siliconflows(start, fake):
    proxy = start(IMAGE_STORE="off")
    answer = generate(
        proxy, {"model": "Qwen/Qwen-Image", "prompt": "x", "response_format": "b64_json"}
    )
    assert answer["images"][0]["url"].startswith(fake.origin)
    assert "b64_json" in answer["data"][0]


def test_input_images_on_a_model_that_takes_none_are_refused_before_reading(proxy, fake):
    response = httpx.post(
        proxy.api_base + "/images/generations",
        json={"model": "Qwen/Qwen-Image", "prompt": "x", "image": "data:image/png;base64,!!"},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "images_not_supported"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (
            "ftp://example.com/a.png",
            "image must be an uploaded file, a data: URI or an http(s) URL.",
        ),
        ("data:image/png;base64," + "A" * 16, "image is not a readable image"),
    ],
)
def test_bad_input_images_are_400(proxy, fake, image, message):
    response = httpx.post(
        proxy.api_base + "/images/generations",
        json={"model": "Kwai-Kolors/Kolors", "prompt": "x", "image": image},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(message)
    assert response.json()["error"]["param"] == "image"
    assert fake.requests == []


def test_input_image_over_the_size_limit_is_400(start, fake):
    proxy = start(MAX_IMAGE_MB="0.5")
    big = image_bytes("PNG", (400, 400), "red") + b"\0" * 600_000
    response = httpx.post(
        proxy.api_base + "/images/generations",
        json={"model": "Kwai-Kolors/Kolors", "prompt": "x", "image": data_uri(big)},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "image is larger than the 0.5 MB limit."
    assert fake.requests == []
