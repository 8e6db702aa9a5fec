"""Bad input, authentication and upstream failures: OpenAI error objects with the right status."""

from __future__ import annotations

import httpx
import openai
import pytest

from .conftest import CLIENT_KEYS, UPSTREAM_KEY, keyed


def post(proxy, path: str, **kwargs) -> httpx.Response:
    return httpx.post(proxy.api_base + path, timeout=30, **kwargs)


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param, error
        assert param.split(".")[0] in error["message"]
    return error


# Bad input


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": ["a"]}, "prompt"),
        ({"prompt": "x", "n": 0}, "n"),
        ({"prompt": "x", "n": 11}, "n"),
        ({"prompt": "x", "n": "x"}, "n"),
        ({"prompt": "x", "size": "abc"}, "size"),
        ({"prompt": "x", "size": "0x0"}, "size"),
        ({"prompt": "x", "size": "99999x99999"}, "size"),
        ({"prompt": "x", "response_format": "png"}, "response_format"),
        ({"prompt": "x", "sf_seed": -1}, "sf_seed"),
        ({"prompt": "x", "sf_num_steps": 500}, "sf_num_steps"),
        ({"prompt": "x", "sf_batch_size": 0}, "sf_batch_size"),
    ],
)
def test_bad_image_requests_are_400_naming_the_field(proxy, fake, body, param):
    error = assert_error(post(proxy, "/images/generations", json=body), 400, param)
    assert error["type"] == "invalid_request_error"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"a string"', "JSON object"),
        (b"", "missing"),
    ],
)
def test_bodies_that_are_not_json_objects(proxy, content, message):
    response = post(
        proxy, "/images/generations", content=content, headers={"content-type": "application/json"}
    )
    error = assert_error(response, 400)
    assert message in error["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"model": "Qwen/Qwen-Image"},
        {"model": "Qwen/Qwen-Image", "messages": []},
        {"model": "Qwen/Qwen-Image", "messages": [{"role": "system", "content": "hi"}]},
        {"model": "Qwen/Qwen-Image", "messages": "draw a cat"},
    ],
)
def test_bad_chat_requests_name_messages(proxy, body):
    error = assert_error(post(proxy, "/chat/completions", json=body), 400)
    assert error["param"] == "messages"


def test_body_over_the_limit_is_413(start):
    proxy = start(MAX_BODY_MB="0.01")
    response = post(proxy, "/images/generations", json={"prompt": "x" * 20_000})
    error = assert_error(response, 413)
    assert "MAX_BODY_MB" in error["message"]
    # A chunked body without Content-Length is cut off the same way.
    chunks = iter([b'{"prompt": "', b"x" * 20_000, b'"}'])
    response = post(
        proxy, "/images/generations", content=chunks, headers={"content-type": "application/json"}
    )
    assert_error(response, 413)


def test_unknown_routes_and_methods_are_json(proxy):
    assert_error(httpx.get(proxy.api_base + "/nope"), 404)
    error = assert_error(httpx.get(proxy.api_base + "/images/generations"), 405)
    assert "GET" in error["message"]


def test_the_server_keeps_serving_after_bad_input(proxy, client):
    for _ in range(3):
        post(
            proxy, "/images/generations", content=b"{", headers={"content-type": "application/json"}
        )
    assert len(client.images.generate(prompt="still here").data) == 1


# Authentication


@pytest.fixture
def locked(start):
    return keyed(start)


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"Authorization": f"Bearer {CLIENT_KEYS[0]}"}, {}),
        ({"authorization": f"bearer {CLIENT_KEYS[1]}"}, {}),
        ({"x-api-key": CLIENT_KEYS[0]}, {}),
        ({"api-key": CLIENT_KEYS[1]}, {}),
        ({}, {"access_token": CLIENT_KEYS[0]}),
        ({}, {"key": CLIENT_KEYS[0]}),
        ({}, {"token": CLIENT_KEYS[1]}),
        ({}, {"apikey": CLIENT_KEYS[0]}),
        # Cherry Studio sends both headers.
        ({"Authorization": f"Bearer {CLIENT_KEYS[0]}", "x-api-key": CLIENT_KEYS[0]}, {}),
    ],
)
def test_a_key_is_accepted_in_every_form(locked, headers, params):
    response = httpx.get(locked.api_base + "/models", headers=headers, params=params)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"x-api-key": "nope"},
        {"Authorization": "Basic abc"},
    ],
)
def test_missing_or_wrong_keys_are_401(locked, headers):
    response = httpx.get(locked.api_base + "/models", headers=headers)
    error = assert_error(response, 401)
    assert error["type"] == "authentication_error"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_the_sdk_sees_authentication_errors(locked):
    with openai.OpenAI(base_url=locked.api_base, api_key="wrong", max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError):
            sdk.images.generate(prompt="x")
    with openai.OpenAI(base_url=locked.api_base, api_key=CLIENT_KEYS[1], max_retries=0) as sdk:
        assert sdk.models.list().data


def test_healthz_needs_no_key(locked):
    assert httpx.get(locked.url + "/healthz").status_code == 200


def test_secrets_never_appear_in_logs_or_responses(locked, fake):
    fake.add_fault("status", status=401)
    response = post(
        locked,
        "/images/generations",
        json={"prompt": "x"},
        headers={"Authorization": f"Bearer {CLIENT_KEYS[0]}"},
    )
    assert_error(response, 502)
    assert UPSTREAM_KEY not in response.text
    log = locked.log()
    for secret in (UPSTREAM_KEY, *CLIENT_KEYS):
        assert secret not in log


# Upstream failures


@pytest.mark.parametrize(
    ("fault", "status", "error_type", "sdk_error"),
    [
        ({"status": 400}, 400, "invalid_request_error", openai.BadRequestError),
        ({"status": 401}, 502, "upstream_error", openai.InternalServerError),
        ({"status": 403}, 403, "permission_error", openai.PermissionDeniedError),
        ({"status": 429, "retry_after": 7}, 429, "rate_limit_error", openai.RateLimitError),
        ({"status": 500}, 502, "upstream_error", openai.InternalServerError),
        ({"status": 503}, 503, "upstream_error", openai.InternalServerError),
        ({"status": 504}, 503, "upstream_error", openai.InternalServerError),
    ],
)
def test_upstream_statuses_keep_their_meaning(
    proxy, client, fake, fault, status, error_type, sdk_error
):
    fake.add_fault("status", **fault)
    response = post(proxy, "/images/generations", json={"prompt": "x"})
    error = assert_error(response, status)
    assert error["type"] == error_type
    if status == 429:
        assert response.headers["retry-after"] == "7"
    fake.add_fault("status", **fault)
    with pytest.raises(sdk_error):
        client.images.generate(prompt="x")


def test_upstream_401_blames_the_servers_key_not_the_client(proxy, fake):
    fake.add_fault("status", status=401)
    error = assert_error(post(proxy, "/images/generations", json={"prompt": "x"}), 502)
    assert "SILICONFLOW_API_KEY" in error["message"]


def test_upstream_400_keeps_siliconflows_message(proxy):
    error = assert_error(
        post(proxy, "/images/generations", json={"prompt": "x", "model": "nobody/no-such-model"}),
        400,
    )
    assert "Model does not exist" in error["message"]
    assert error["param"] == "model"


@pytest.mark.parametrize(
    ("kind", "status"),
    [("drop", 502), ("malformed", 502), ("no_images", 502)],
)
def test_broken_upstream_answers_are_502(proxy, fake, kind, status):
    fake.add_fault(kind)
    assert_error(post(proxy, "/images/generations", json={"prompt": "x"}), status)


def test_upstream_timeout_is_504(start, fake):
    proxy = start(UPSTREAM_TIMEOUT="0.5")
    fake.add_fault("hang", seconds=5)
    error = assert_error(post(proxy, "/images/generations", json={"prompt": "x"}), 504)
    assert "0.5" in error["message"]


def test_unreachable_upstream_is_502(start):
    proxy = start(SF_BASE="http://127.0.0.1:9/v1")
    error = assert_error(post(proxy, "/images/generations", json={"prompt": "x"}), 502)
    assert error["code"] == "upstream_connection_failed"


def test_expired_image_url_is_502(proxy, fake):
    fake.add_fault("expired_images")
    error = assert_error(post(proxy, "/images/generations", json={"prompt": "x"}), 502)
    assert "expired" in error["message"]
