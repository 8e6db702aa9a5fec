"""`POST /v1/images/edits`: multipart in all three image-field forms, and JSON."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from .images import data_uri, decoded, image_bytes

PNG = image_bytes("PNG", (80, 60), "red")
JPEG = image_bytes("JPEG", (80, 60), "blue")


def test_single_image_with_the_sdk(client, fake):
    result = client.images.edit(
        model="Qwen/Qwen-Image-Edit",
        image=("photo.png", PNG, "image/png"),
        prompt="make it blue",
    )
    assert len(result.data) == 1
    sent = fake.requests[-1].body
    assert sent["model"] == "Qwen/Qwen-Image-Edit"
    assert sent["prompt"] == "make it blue"
    assert decoded(sent["image"]) == PNG
    # Edit models size from their input and must not get image_size.
    assert "image_size" not in sent
    # An edit with no response_format answers b64_json, as OpenAI's edit models do.
    assert result.data[0].url is None
    output = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or "")))
    assert output.size == (80, 60)


def test_several_images_with_the_sdk_as_image_array(client, fake):
    result = client.images.edit(
        model="Qwen/Qwen-Image-Edit-2509",
        image=[("a.png", PNG, "image/png"), ("b.jpg", JPEG, "image/jpeg")],
        prompt="put them together",
        n=2,
    )
    assert len(result.data) == 2
    for request in fake.requests:
        assert decoded(request.body["image"]) == PNG
        assert decoded(request.body["image2"]) == JPEG
        assert request.body["image2"].startswith("data:image/jpeg;base64,")
        assert "image3" not in request.body


def test_repeated_image_parts_as_cherry_studio_sends_them(proxy, fake):
    third = image_bytes("PNG", (30, 30), "green")
    response = httpx.post(
        proxy.api_base + "/images/edits",
        files=[
            ("image", ("1.png", PNG, "image/png")),
            ("image", ("2.jpg", JPEG, "image/jpeg")),
            ("image", ("3.png", third, "image/png")),
        ],
        data={"prompt": "three into one", "model": "Qwen/Qwen-Image-Edit-2509", "n": "1"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    sent = fake.requests[-1].body
    assert [decoded(sent[field]) for field in ("image", "image2", "image3")] == [PNG, JPEG, third]


def test_string_numbers_and_b64_json(proxy, fake):
    response = httpx.post(
        proxy.api_base + "/images/edits",
        files={"image": ("in.png", PNG, "image/png")},
        data={
            "prompt": "twice",
            "model": "Qwen/Qwen-Image-Edit",
            "n": "2",
            "response_format": "b64_json",
            "sf_seed": "10",
            "sf_cfg": "4.5",
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert [item.keys() >= {"b64_json"} for item in response.json()["data"]] == [True, True]
    assert sorted(request.body["seed"] for request in fake.requests) == [10, 11]
    assert all(request.body["cfg"] == 4.5 for request in fake.requests)


def test_empty_form_fields_count_as_unset(proxy, fake):
    response = httpx.post(
        proxy.api_base + "/images/edits",
        files={"image": ("in.png", PNG, "image/png")},
        data={"prompt": "blank fields", "model": "Qwen/Qwen-Image-Edit", "sf_seed": "", "n": ""},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 1


def test_kolors_image_to_image_gets_a_fitted_size(client, fake):
    result = client.images.edit(
        model="Kwai-Kolors/Kolors",
        image=("in.png", PNG, "image/png"),
        prompt="watercolour",
        size="1024x1536",
    )
    assert result.size == "960x1280"
    sent = fake.requests[-1].body
    assert sent["image_size"] == "960x1280"
    assert decoded(sent["image"]) == PNG


def test_json_body_with_a_data_uri_a_url_and_a_list(proxy, fake):
    response = httpx.post(
        proxy.api_base + "/images/edits",
        json={
            "model": "Qwen/Qwen-Image-Edit-2509",
            "prompt": "json edit",
            "image": [data_uri(PNG), "https://images.example.com/cat.png"],
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    sent = fake.requests[-1].body
    assert decoded(sent["image"]) == PNG
    # Foreign URLs go to SiliconFlow untouched: the proxy never fetches them.
    assert sent["image2"] == "https://images.example.com/cat.png"
    single = httpx.post(
        proxy.api_base + "/images/edits",
        json={
            "model": "Qwen/Qwen-Image-Edit",
            "prompt": "one",
            "image": data_uri(JPEG, "image/jpeg"),
        },
        timeout=30,
    )
    assert single.status_code == 200, single.text


def test_hosted_images_are_read_from_the_store(client, proxy, fake):
    url = client.images.generate(model="Qwen/Qwen-Image", prompt="original").data[0].url
    stored = httpx.get(url).content
    fake.clear_downloads()
    response = httpx.post(
        proxy.api_base + "/images/edits",
        json={"model": "Qwen/Qwen-Image-Edit", "prompt": "edit the hosted one", "image": url},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert decoded(fake.requests[-1].body["image"]) == stored
    # Only the new result was downloaded from the upstream: the input came from the store.
    assert len(fake.downloads) == 1


def test_gif_input_is_converted_to_png(client, fake):
    client.images.edit(
        model="Qwen/Qwen-Image-Edit",
        image=("anim.gif", image_bytes("GIF"), "image/gif"),
        prompt="from a gif",
    )
    sent = fake.requests[-1].body["image"]
    assert sent.startswith("data:image/png;base64,")
    assert decoded(sent).startswith(b"\x89PNG")


def post_form(proxy, files, data):
    return httpx.post(proxy.api_base + "/images/edits", files=files, data=data, timeout=30)


def error_of(response: httpx.Response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_too_many_images_for_the_model(proxy, fake):
    error = error_of(
        post_form(
            proxy,
            [("image", ("1.png", PNG, "image/png")), ("image", ("2.png", PNG, "image/png"))],
            {"prompt": "two", "model": "Qwen/Qwen-Image-Edit"},
        )
    )
    assert error["param"] == "image"
    assert "at most 1" in error["message"]
    assert fake.requests == []


def test_more_than_three_images(proxy):
    files = [("image[]", (f"{i}.png", PNG, "image/png")) for i in range(4)]
    error = error_of(
        post_form(proxy, files, {"prompt": "four", "model": "Qwen/Qwen-Image-Edit-2509"})
    )
    assert "At most 3" in error["message"]


def test_no_image(proxy):
    error = error_of(post_form(proxy, None, {"prompt": "nothing", "model": "Qwen/Qwen-Image-Edit"}))
    assert error["param"] == "image"


def test_a_model_that_takes_no_images_names_the_ones_that_do(proxy):
    error = error_of(
        post_form(
            proxy,
            {"image": ("1.png", PNG, "image/png")},
            {"prompt": "x", "model": "Qwen/Qwen-Image"},
        )
    )
    assert "Qwen/Qwen-Image-Edit" in error["message"]
    assert "Kwai-Kolors/Kolors" in error["message"]


@pytest.mark.parametrize(
    "content",
    [b"this is not an image", b"\x89PNG\r\n\x1a\n truncated", b""],
)
def test_unreadable_files(proxy, content):
    error = error_of(
        post_form(
            proxy,
            {"image": ("x.png", content, "image/png")},
            {"prompt": "x", "model": "Qwen/Qwen-Image-Edit"},
        )
    )
    assert error["param"] == "image"
    assert "image" in error["message"]


def test_files_over_the_limit(start):
    proxy = start(MAX_IMAGE_MB="0.001")
    big = image_bytes("PNG", (400, 400), "white") + b"\0" * 2000
    error = error_of(
        post_form(
            proxy,
            {"image": ("big.png", big, "image/png")},
            {"prompt": "x", "model": "Qwen/Qwen-Image-Edit"},
        )
    )
    assert "MAX_IMAGE_MB" in error["message"]


def test_masks_are_refused_clearly(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(
            model="Qwen/Qwen-Image-Edit",
            image=("in.png", PNG, "image/png"),
            mask=("mask.png", PNG, "image/png"),
            prompt="masked",
        )
    assert "mask" in caught.value.message
    assert caught.value.body["param"] == "mask"


def test_bad_json_edits(proxy):
    for body, param in [
        ({"prompt": "x", "model": "Qwen/Qwen-Image-Edit"}, "image"),
        ({"image": data_uri(PNG), "model": "Qwen/Qwen-Image-Edit"}, "prompt"),
        ({"prompt": "x", "image": "ftp://host/file.png", "model": "Qwen/Qwen-Image-Edit"}, "image"),
        (
            {"prompt": "x", "image": "data:image/png;base64,!!!!", "model": "Qwen/Qwen-Image-Edit"},
            "image",
        ),
    ]:
        error = error_of(httpx.post(proxy.api_base + "/images/edits", json=body, timeout=30))
        assert error["param"] == param, (body, error)


def test_other_content_types_are_refused(proxy):
    response = httpx.post(
        proxy.api_base + "/images/edits",
        content=b"prompt=x",
        headers={"content-type": "text/plain"},
    )
    assert "multipart/form-data" in error_of(response)["message"]
