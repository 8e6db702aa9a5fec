"""`/v1/models`, CORS, `/healthz` and the image files route."""

from __future__ import annotations

import hashlib
import json

import httpx
import openai
import pytest

# The video models, listed after the image models whatever lists those (test_video_models.py).
VIDEO = ["Wan-AI/Wan2.2-T2V-A14B", "Wan-AI/Wan2.2-I2V-A14B"]


def test_models_list_shape(client):
    models = client.models.list()
    ids = [model.id for model in models.data]
    # The fake account's .cn models (discovered), in the site's order: Qwen-Image first; then
    # the video models (video_models.py, tested there).
    assert ids == [
        "Qwen/Qwen-Image",
        "Kwai-Kolors/Kolors",
        "Tongyi-MAI/Z-Image-Turbo",
        "Tongyi-MAI/Z-Image",
        "baidu/ERNIE-Image-Turbo",
        "Qwen/Qwen-Image-Edit",
        "Qwen/Qwen-Image-Edit-2509",
        *VIDEO,
    ]
    first = models.data[0]
    assert first.object == "model"
    assert first.owned_by == "siliconflow"
    assert isinstance(first.created, int)
    extra = first.model_extra
    assert extra["supported_endpoint_types"] == ["image-generation", "openai"]
    assert extra["default_size"] == "1328x1328"
    assert "1664x928" in extra["sizes"]


def test_models_are_configurable(start):
    proxy = start(MODELS="Kwai-Kolors/Kolors, acme/painter")
    body = httpx.get(proxy.api_base + "/models").json()
    assert body["object"] == "list"
    assert [model["id"] for model in body["data"]] == ["Kwai-Kolors/Kolors", "acme/painter", *VIDEO]


def test_models_json_wins_and_can_describe_models(start, fake):
    proxy = start(
        MODELS="Qwen/Qwen-Image",
        MODELS_JSON=json.dumps([{"id": "Kwai-Kolors/Kolors", "default_size": "768x1024"}]),
    )
    body = httpx.get(proxy.api_base + "/models").json()
    assert [model["id"] for model in body["data"]] == ["Kwai-Kolors/Kolors", *VIDEO]
    assert body["data"][0]["default_size"] == "768x1024"
    with openai.OpenAI(base_url=proxy.api_base, api_key="x", max_retries=0) as sdk:
        sdk.images.generate(prompt="default model and size")
    sent = fake.requests[-1].body
    assert sent["model"] == "Kwai-Kolors/Kolors"
    assert sent["image_size"] == "768x1024"


def test_retrieve_one_model(client):
    assert client.models.retrieve("Kwai-Kolors/Kolors").id == "Kwai-Kolors/Kolors"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nobody/nothing")


def test_cors_preflight_is_204_and_allows_the_requested_headers(proxy):
    response = httpx.options(
        proxy.api_base + "/chat/completions",
        headers={
            "Origin": "https://chat.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": (
                "authorization, x-api-key, x-stainless-os, content-type"
            ),
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    allowed = response.headers["access-control-allow-headers"].lower()
    for header in ("authorization", "x-api-key", "x-stainless-os", "content-type"):
        assert header in allowed
    assert "POST" in response.headers["access-control-allow-methods"]


def test_cors_headers_are_on_every_response(proxy):
    origin = {"Origin": "https://chat.example"}
    assert (
        httpx.get(proxy.api_base + "/models", headers=origin).headers["access-control-allow-origin"]
        == "*"
    )
    error = httpx.post(proxy.api_base + "/images/generations", json={}, headers=origin)
    assert error.status_code == 400
    assert error.headers["access-control-allow-origin"] == "*"
    assert "retry-after" in error.headers["access-control-expose-headers"].lower()


def test_cors_origins_can_be_restricted(start):
    proxy = start(CORS_ORIGINS="https://allowed.example")
    allowed = httpx.get(proxy.api_base + "/models", headers={"Origin": "https://allowed.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://allowed.example"
    other = httpx.get(proxy.api_base + "/models", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_preflight_needs_no_key(start):
    proxy = start(ALLOW_CLIENT_KEYS="secret-key-123")
    response = httpx.options(
        proxy.api_base + "/images/generations",
        headers={"Origin": "https://a.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 204


def test_healthz(proxy):
    response = httpx.get(proxy.url + "/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    # Uptime checkers often probe with HEAD.
    assert httpx.head(proxy.url + "/healthz").status_code == 200
    assert httpx.head(proxy.url + "/").status_code == 200


def test_image_files_route_caching_and_head(client, proxy):
    url = client.images.generate(prompt="cached").data[0].url
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    etag = response.headers["etag"]
    assert int(response.headers["content-length"]) == len(response.content)
    head = httpx.head(url)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == response.headers["content-length"]
    assert head.headers["etag"] == etag
    not_modified = httpx.get(url, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert httpx.get(url, headers={"If-None-Match": '"other"'}).status_code == 200


def test_image_names_are_unguessable(client):
    names = {
        image.url.rsplit("/", 1)[1].split(".")[0]
        for image in client.images.generate(prompt="names", n=3).data
    }
    assert len(names) == 3
    assert all(len(name) == 32 and int(name, 16) >= 0 for name in names)


def test_image_files_need_no_key(start):
    proxy = start(ALLOW_CLIENT_KEYS="the-only-key-123")
    with openai.OpenAI(base_url=proxy.api_base, api_key="the-only-key-123", max_retries=0) as sdk:
        url = sdk.images.generate(prompt="public link").data[0].url
    assert httpx.get(url).status_code == 200


@pytest.mark.parametrize(
    "name",
    [
        "../../../etc/passwd",
        "..%2f..%2fetc%2fpasswd",
        "%2e%2e/%2e%2e/etc/passwd",
        "0123456789abcdef0123456789abcdef.exe",
        "0123456789ABCDEF0123456789ABCDEF.png",
        "0123456789abcdef0123456789abcdef.png",
        "short.png",
        "",
    ],
)
def test_anything_but_a_stored_image_name_is_404(proxy, name):
    response = httpx.get(f"{proxy.api_base}/files/images/{name}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert b"root:" not in response.content


def test_public_base_url_and_forwarded_headers(start, client):
    forwarded = client.images.with_raw_response.generate(
        prompt="behind a proxy",
        extra_headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "img.example.com"},
    ).parse()
    assert forwarded.data[0].url.startswith("https://img.example.com/v1/files/images/")
    hostile = client.images.generate(
        prompt="hostile", extra_headers={"X-Forwarded-Host": "evil.com/)![x](http://x"}
    )
    assert "evil" not in hostile.data[0].url
    proxy = start(PUBLIC_BASE_URL="https://gateway.example.org/")
    with openai.OpenAI(base_url=proxy.api_base, api_key="x", max_retries=0) as sdk:
        url = sdk.images.generate(prompt="configured").data[0].url
    assert url.startswith("https://gateway.example.org/v1/files/images/")


def test_stored_bytes_match_what_the_upstream_made(client, fake):
    url = client.images.generate(prompt="same bytes").data[0].url
    served = httpx.get(url).content
    downloaded = fake.downloads[-1]
    assert downloaded.path.startswith("/files/")
    assert hashlib.sha256(served).hexdigest()
    assert served.startswith(b"\x89PNG")
