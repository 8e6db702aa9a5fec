"""The Vercel AI SDK's image models, as their users set them up, against the running service.

`createOpenAI({baseURL}).image(id)` and `createOpenAICompatible({baseURL}).imageModel(id)` both
read only `data[].b64_json`. The OpenAI provider sends no `response_format` for gpt-image model
ids, and neither provider sends one with an edit (multipart, `image` or `image[]`): the
response-format rule (README) answers those with base64.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from .images import image_bytes

NODE_DIR = Path(__file__).parent / "node"
PHOTO = base64.b64encode(image_bytes("PNG", (96, 64), "teal")).decode()


def generate_image(proxy, request: dict) -> dict:
    node = shutil.which("node")
    assert node is not None, "Node.js is needed: make install / .ci/run install it"
    assert (NODE_DIR / "node_modules" / "ai").is_dir(), "run `make install` (npm ci)"
    result = subprocess.run(
        [node, str(NODE_DIR / "ai_sdk_images.mjs"), proxy.api_base, json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answer: dict = json.loads(result.stdout)
    return answer


def picture(answer: dict, index: int = 0) -> Image.Image:
    assert "thrown" not in answer, answer
    return Image.open(io.BytesIO(base64.b64decode(answer["images"][index]["base64"])))


@pytest.mark.parametrize("provider", ["openai", "compatible"])
def test_generate_image_with_one_of_our_models(proxy, fake, provider):
    answer = generate_image(
        proxy,
        {"provider": provider, "model": "Kwai-Kolors/Kolors", "prompt": "a kite", "n": 2},
    )
    assert len(answer["images"]) == 2
    assert picture(answer, 1).size == (1024, 1024)
    assert fake.requests[-1].body["model"] == "Kwai-Kolors/Kolors"


def test_generate_image_with_gpt_image_1_sends_no_response_format_and_gets_base64(proxy, fake):
    answer = generate_image(
        proxy, {"provider": "openai", "model": "gpt-image-1", "prompt": "a gpt-image alias"}
    )
    assert picture(answer).format == "PNG"
    # The alias went upstream as the default text-to-image model.
    assert fake.requests[-1].body["model"] == "Qwen/Qwen-Image"


@pytest.mark.parametrize("provider", ["openai", "compatible"])
def test_an_edit_without_response_format_gets_base64(proxy, fake, provider):
    answer = generate_image(
        proxy,
        {
            "provider": provider,
            "model": "Qwen/Qwen-Image-Edit",
            "prompt": "make it orange",
            "edit": PHOTO,
        },
    )
    edited = picture(answer)
    assert edited.format == "PNG"
    sent = fake.requests[-1].body
    assert sent["model"] == "Qwen/Qwen-Image-Edit"
    assert sent["image"].startswith("data:image/png;base64,")


def test_an_edit_with_a_gpt_image_alias_goes_to_the_default_edit_model(proxy, fake):
    answer = generate_image(
        proxy,
        {
            "provider": "openai",
            "model": "gpt-image-1",
            "prompt": "add a hat",
            "edit": PHOTO,
            "providerOptions": {"openai": {"outputFormat": "webp", "outputCompression": 70}},
        },
    )
    edited = picture(answer)
    assert edited.format == "WEBP"
    assert fake.requests[-1].body["model"] == "Qwen/Qwen-Image-Edit"
