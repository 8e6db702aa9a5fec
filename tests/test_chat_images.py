"""Chat with attached images, iterative edits, inline options and chat output options."""

from __future__ import annotations

import re

import httpx
import openai
import orjson
import pytest

from .images import data_uri, decoded, image_bytes

MARKDOWN_IMAGE = re.compile(r"!\[image\]\(([^)]+)\)")
PNG = image_bytes("PNG", (64, 64), "purple")


def chat(sdk, model: str, messages: list, **extra):
    return sdk.chat.completions.create(model=model, messages=messages, extra_body=extra or None)


def user(text: str, *images: str) -> dict:
    if not images:
        return {"role": "user", "content": text}
    parts = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in images]
    return {"role": "user", "content": parts}


def test_attached_data_uri_is_the_edit_input(client, fake):
    answer = chat(client, "Qwen/Qwen-Image-Edit", [user("make it blue", data_uri(PNG))])
    sent = fake.requests[-1].body
    assert decoded(sent["image"]) == PNG
    assert sent["prompt"] == "make it blue"
    assert MARKDOWN_IMAGE.search(answer.choices[0].message.content)


def test_attached_foreign_url_is_passed_through(client, fake):
    chat(client, "Kwai-Kolors/Kolors", [user("in watercolour", "https://example.com/photo.jpg")])
    assert fake.requests[-1].body["image"] == "https://example.com/photo.jpg"


def test_iterative_chat_edit_uses_the_last_answer_from_the_store(client, fake):
    messages = [user("a red car")]
    first = chat(client, "Qwen/Qwen-Image", messages)
    reply = first.choices[0].message.content
    (url,) = MARKDOWN_IMAGE.findall(reply)
    original = httpx.get(url).content
    fake.clear_downloads()
    messages += [{"role": "assistant", "content": reply}, user("now make it blue")]
    second = chat(client, "Qwen/Qwen-Image-Edit", messages)
    sent = fake.requests[-1].body
    assert sent["prompt"] == "now make it blue"
    assert decoded(sent["image"]) == original
    assert len(fake.downloads) == 1  # the new image only: the input came from the store
    # And once more, on the edit's own result.
    messages += [
        {"role": "assistant", "content": second.choices[0].message.content},
        user("add snow"),
    ]
    (second_url,) = MARKDOWN_IMAGE.findall(second.choices[0].message.content)
    chat(client, "Qwen/Qwen-Image-Edit", messages)
    assert decoded(fake.requests[-1].body["image"]) == httpx.get(second_url).content


def test_edit_model_falls_back_to_an_earlier_user_image(client, fake):
    messages = [
        user("here is my photo", data_uri(PNG)),
        {"role": "assistant", "content": "ok"},
        user("sepia"),
    ]
    chat(client, "Qwen/Qwen-Image-Edit", messages)
    assert decoded(fake.requests[-1].body["image"]) == PNG


def test_edit_model_without_any_image_is_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, "Qwen/Qwen-Image-Edit", [user("edit what?")])
    assert "input image" in caught.value.message


def test_text_only_model_given_an_image_names_the_models_that_take_images(client):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, "Qwen/Qwen-Image", [user("with a picture", data_uri(PNG))])
    for model in ("Kwai-Kolors/Kolors", "Qwen/Qwen-Image-Edit", "Qwen/Qwen-Image-Edit-2509"):
        assert model in caught.value.message


def test_kolors_with_no_attachment_stays_text_to_image(client, fake):
    messages = [
        user("first", data_uri(PNG)),
        {"role": "assistant", "content": "x"},
        user("a new picture"),
    ]
    chat(client, "Kwai-Kolors/Kolors", messages)
    assert "image" not in fake.requests[-1].body


def test_inline_options_are_applied_and_removed(client, fake):
    answer = chat(
        client,
        "Qwen/Qwen-Image",
        [
            user(
                "a lighthouse at dusk --ar 16:9 --n 2 --seed 42 --steps 30 --cfg 4"
                ' --neg "blurry, dark"'
            )
        ],
        size="1024x1024",
    )
    bodies = sorted((request.body for request in fake.requests), key=lambda body: body["seed"])
    assert [body["seed"] for body in bodies] == [42, 43]
    for body in bodies:
        assert body["prompt"] == "a lighthouse at dusk"
        assert body["image_size"] == "1664x928"
        assert body["num_inference_steps"] == 30
        assert body["cfg"] == 4.0
        assert body["negative_prompt"] == "blurry, dark"
    assert len(MARKDOWN_IMAGE.findall(answer.choices[0].message.content)) == 2


def test_inline_model_size_and_guidance(client, fake):
    chat(
        client,
        "Qwen/Qwen-Image",
        [user("--model Kwai-Kolors/Kolors a fox --size 768x1024 --guidance 7.5")],
    )
    sent = fake.requests[-1].body
    assert sent["model"] == "Kwai-Kolors/Kolors"
    assert sent["prompt"] == "a fox"
    assert sent["image_size"] == "768x1024"
    assert sent["guidance_scale"] == 7.5


@pytest.mark.parametrize(
    ("text", "option"),
    [
        ("a cat --n x", "--n"),
        ("a cat --n 11", "--n"),
        ("a cat --ar wide", "--ar"),
        ("a cat --size huge", "--size"),
        ("a cat --steps 0", "--steps"),
        ("a cat --seed", "--seed"),
    ],
)
def test_malformed_inline_options_name_the_option(client, fake, text, option):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, "Qwen/Qwen-Image", [user(text)])
    assert option in caught.value.message
    assert fake.requests == []


def test_b64_markdown_is_png_or_jpeg_only(client, fake):
    fake.configure(image_format="webp")
    answer = chat(client, "Qwen/Qwen-Image", [user("webp upstream")], response_format="b64_json")
    (link,) = MARKDOWN_IMAGE.findall(answer.choices[0].message.content)
    assert link.startswith("data:image/png;base64,")
    assert decoded(link).startswith(b"\x89PNG")


def test_message_images_as_openrouter_returns_them(client):
    answer = chat(client, "Qwen/Qwen-Image", [user("two")], n=2)
    images = answer.choices[0].message.model_extra["images"]
    links = MARKDOWN_IMAGE.findall(answer.choices[0].message.content)
    assert [image["image_url"]["url"] for image in images] == links
    assert all(image["type"] == "image_url" for image in images)


def test_streamed_delta_carries_images_too(client):
    stream = client.chat.completions.create(
        model="Qwen/Qwen-Image", messages=[user("streamed images")], stream=True
    )
    deltas = [chunk.choices[0].delta for chunk in stream if chunk.choices]
    with_images = [delta for delta in deltas if (delta.model_extra or {}).get("images")]
    assert len(with_images) == 1
    url = with_images[0].model_extra["images"][0]["image_url"]["url"]
    assert url in with_images[0].content


def test_progress_as_reasoning_content(start):
    proxy = start(CHAT_PROGRESS="reasoning")
    with openai.OpenAI(base_url=proxy.api_base, api_key="x", max_retries=0) as sdk:
        stream = sdk.chat.completions.create(
            model="Qwen/Qwen-Image", messages=[user("progress")], stream=True, extra_body={"n": 2}
        )
        deltas = [chunk.choices[0].delta for chunk in stream if chunk.choices]
    reasoning = "".join(
        (delta.model_extra or {}).get("reasoning_content") or "" for delta in deltas
    )
    assert "generating 2 images with Qwen/Qwen-Image at 1328x1328" in reasoning
    assert "image 2/2 done" in reasoning
    # The thinking lines come before the answer.
    first_content = next(i for i, delta in enumerate(deltas) if delta.content)
    last_reasoning = max(
        i for i, delta in enumerate(deltas) if (delta.model_extra or {}).get("reasoning_content")
    )
    assert last_reasoning < first_content


def test_progress_is_off_by_default(proxy):
    body = {"model": "Qwen/Qwen-Image", "stream": True, "messages": [user("quiet")]}
    with httpx.stream(
        "POST", proxy.api_base + "/chat/completions", json=body, timeout=30
    ) as response:
        payloads = [
            orjson.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")
        ]
    assert not any(
        "reasoning_content" in p["choices"][0]["delta"] for p in payloads if p["choices"]
    )
