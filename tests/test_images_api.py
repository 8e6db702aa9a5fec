"""`POST /v1/images/generations`, driven by the official openai SDK against the running server."""

from __future__ import annotations

import base64
import io
import threading
import time

import httpx
import openai
import pytest
from PIL import Image

from .conftest import UPSTREAM_KEY


def fetch(url: str) -> httpx.Response:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return response


def test_generate_url(client, fake, proxy):
    result = client.images.generate(model="Qwen/Qwen-Image", prompt="a red panda", size="1024x1024")
    assert result.created > 0
    assert len(result.data) == 1
    image = result.data[0]
    assert image.b64_json is None
    assert image.url.startswith(proxy.url + "/v1/files/images/")
    picture = Image.open(io.BytesIO(fetch(image.url).content))
    # 1024x1024 is fitted to Qwen-Image's square size.
    assert picture.size == (1328, 1328)
    sent = fake.requests[-1].body
    assert sent["model"] == "Qwen/Qwen-Image"
    assert sent["prompt"] == "a red panda"
    assert sent["image_size"] == "1328x1328"


def test_generate_b64_json_takes_the_media_type_from_the_bytes(client, fake):
    fake.configure(image_format="jpeg")
    result = client.images.generate(
        model="Kwai-Kolors/Kolors", prompt="a lighthouse", response_format="b64_json"
    )
    data = base64.b64decode(result.data[0].b64_json)
    assert data.startswith(b"\xff\xd8\xff")
    assert result.data[0].url is None
    assert result.output_format == "jpeg"


def test_default_model_is_the_first_listed(client, fake):
    client.images.generate(prompt="no model given")
    assert fake.requests[-1].body["model"] == "Qwen/Qwen-Image"


def test_n_runs_calls_concurrently_in_order(client, fake):
    fake.configure(latency=0.5)
    started = time.monotonic()
    result = client.images.generate(
        model="Qwen/Qwen-Image", prompt="four cats", n=4, extra_body={"sf_seed": 100}
    )
    elapsed = time.monotonic() - started
    assert len(result.data) == 4
    # Four 0.5 s calls one after another would take 2 s.
    assert elapsed < 1.5
    seeds = sorted(request.body["seed"] for request in fake.requests)
    assert seeds == [100, 101, 102, 103]
    # Output order is call order: the seed reported with each image says which call made it.
    assert [image.model_extra["seed"] for image in result.data] == [100, 101, 102, 103]


def test_parallel_calls_1_runs_one_after_another(start, fake):
    proxy = start(PARALLEL_CALLS="1")
    fake.configure(latency=0.3)
    with openai.OpenAI(base_url=proxy.api_base, api_key="x", max_retries=0) as sdk:
        started = time.monotonic()
        result = sdk.images.generate(model="Qwen/Qwen-Image", prompt="in a row", n=3)
    assert len(result.data) == 3
    assert time.monotonic() - started >= 0.9


def test_without_seed_each_call_gets_its_own_random_seed(client, fake):
    client.images.generate(model="Qwen/Qwen-Image", prompt="three dogs", n=3)
    seeds = [request.body["seed"] for request in fake.requests]
    assert len(set(seeds)) == 3


def test_batch_size_with_n_1_is_one_batched_call(client, fake):
    result = client.images.generate(
        model="Kwai-Kolors/Kolors", prompt="batch", n=1, extra_body={"sf_batch_size": 3}
    )
    assert len(result.data) == 3
    assert len(fake.requests) == 1
    assert fake.requests[0].body["batch_size"] == 3


def test_every_extra_parameter_reaches_the_upstream(client, fake):
    client.images.generate(
        model="Kwai-Kolors/Kolors",
        prompt="tuned",
        extra_body={
            "sf_seed": 1234567890,
            "sf_num_steps": 28,
            "sf_guidance_scale": 7.5,
            "sf_negative_prompt": "low quality",
            "sf_image_size": "960x1280",
        },
    )
    sent = fake.requests[-1].body
    assert sent["seed"] == 1234567890
    assert sent["num_inference_steps"] == 28
    assert sent["guidance_scale"] == 7.5
    assert sent["negative_prompt"] == "low quality"
    assert sent["image_size"] == "960x1280"
    assert "cfg" not in sent  # Kolors has no cfg


def test_siliconflow_names_work_too_and_sf_names_win(client, fake):
    client.images.generate(
        model="Qwen/Qwen-Image",
        prompt="names",
        size="1024x1024",
        extra_body={
            "seed": 7,
            "num_inference_steps": 50,
            "cfg": 4.0,
            "negative_prompt": "blur",
            "image_size": "1664x928",
            "sf_cfg": 3.5,
        },
    )
    sent = fake.requests[-1].body
    assert sent["seed"] == 7
    assert sent["num_inference_steps"] == 50
    assert sent["cfg"] == 3.5
    assert sent["negative_prompt"] == "blur"
    # image_size is sent as given and wins over size.
    assert sent["image_size"] == "1664x928"


def test_the_original_example_request(client, fake):
    result = client.images.generate(
        model="Qwen/Qwen-Image",
        prompt="a vintage camera on a wooden desk, warm light",
        size="1024x1024",
        n=2,
        response_format="url",
        extra_body={
            "sf_seed": 1234567890,
            "sf_num_steps": 28,
            "sf_guidance_scale": 7.5,
            "sf_cfg": 3.5,
            "sf_negative_prompt": "low quality",
            "sf_batch_size": 2,
        },
    )
    assert len(result.data) == 2
    for request in fake.requests:
        assert "guidance_scale" not in request.body  # Qwen-Image ignores it: not sent
        assert "batch_size" not in request.body  # Qwen-Image cannot batch
        assert request.body["cfg"] == 3.5


def test_openai_only_fields_are_ignored(client, fake):
    result = client.images.generate(
        model="Qwen/Qwen-Image",
        prompt="ignored fields",
        quality="hd",
        style="vivid",
        user="someone",
        background="transparent",
        output_format="webp",
        moderation="low",
        extra_body={"totally_unknown": {"nested": True}},
    )
    assert len(result.data) == 1
    sent = fake.requests[-1].body
    for field in ("quality", "style", "user", "background", "output_format", "moderation"):
        assert field not in sent


def test_client_credentials_never_reach_the_upstream(start, fake):
    proxy = start(ALLOW_CLIENT_KEYS="client-key-xyz-123")
    with openai.OpenAI(base_url=proxy.api_base, api_key="client-key-xyz-123", max_retries=0) as sdk:
        sdk.images.generate(prompt="whose key", extra_headers={"x-api-key": "client-key-xyz-123"})
    recorded = fake.requests[-1]
    assert recorded.authorization == f"Bearer {UPSTREAM_KEY}"
    assert "client-key-xyz-123" not in repr(recorded.to_json())


def test_partial_failure_returns_the_images_that_succeeded(client, fake):
    fake.add_fault("status", status=400, count=1)
    response = client.images.with_raw_response.generate(
        model="Qwen/Qwen-Image", prompt="some fail", n=3
    )
    result = response.parse()
    assert len(result.data) == 2
    assert response.headers["x-partial-failure"].startswith("1 of 3 upstream calls failed")
    assert response.headers["x-images-requested"] == "3"
    assert response.headers["x-images-returned"] == "2"


def test_all_calls_failing_returns_the_error(client, fake):
    fake.add_fault(
        "status",
        status=400,
        count=2,
        message="Model does not exist. Please check it carefully.",
    )
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="Qwen/Qwen-Image", prompt="all fail", n=2)
    assert "Model does not exist" in caught.value.message


def test_images_are_served_by_the_proxy_after_the_upstream_expires_them(client, fake):
    result = client.images.generate(model="Qwen/Qwen-Image", prompt="lasting")
    before = fetch(result.data[0].url).content
    fake.expire_images()
    assert fetch(result.data[0].url).content == before


def test_concurrent_clients_are_served(client):
    errors: list[BaseException] = []

    def one(index: int) -> None:
        try:
            client.images.generate(model="Qwen/Qwen-Image", prompt=f"parallel {index}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
