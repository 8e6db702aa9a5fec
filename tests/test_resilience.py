"""Upstream faults injected at the fake: retried to success, or the documented error; no 500."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest

from .support.inprocess import eventually


@pytest.fixture
def retrying(start, tmp_path_factory):
    # The suite's default proxy has retries off; this one keeps the default of 2.
    return start(UPSTREAM_RETRIES="2", UPSTREAM_TIMEOUT="1")


def generate(proxy, **body) -> httpx.Response:
    return httpx.post(
        proxy.api_base + "/images/generations", json={"prompt": "resilient", **body}, timeout=60
    )


def test_an_overloaded_model_is_retried_to_success(retrying, fake):
    # A 503 says the work was not done: nothing was billed, so trying again is free.
    fake.add_fault("status", status=503)
    response = generate(retrying)
    assert response.status_code == 200, response.text
    assert len(fake.requests) == 2


UNSURE_FAULTS = [
    ("status", {"status": 500}, 502),
    ("status", {"status": 502}, 502),
    ("status", {"status": 504}, 503),
    ("hang", {"seconds": 5}, 504),
    ("drop", {}, 502),
]


@pytest.mark.parametrize(("fault", "params", "status"), UNSURE_FAULTS)
def test_a_call_that_may_have_been_billed_is_not_retried(retrying, fake, fault, params, status):
    fake.add_fault(fault, **params)
    response = generate(retrying)
    assert response.status_code == status, response.text
    assert len(fake.requests) == 1
    # The service did not retry, and says so: an SDK retry could pay for a second image.
    assert response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize(("fault", "params", "status"), UNSURE_FAULTS)
def test_unsure_calls_are_retried_when_the_operator_allows_it(start, fake, fault, params, status):
    proxy = start(UPSTREAM_RETRIES="2", UPSTREAM_TIMEOUT="1", UPSTREAM_RETRY_UNSURE="true")
    fake.add_fault(fault, **params)
    response = generate(proxy)
    assert response.status_code == 200, response.text
    assert len(fake.requests) == 2


def test_429_retry_after_is_honoured(retrying, fake):
    fake.add_fault("status", status=429, retry_after=1)
    started = time.monotonic()
    response = generate(retrying)
    assert response.status_code == 200
    assert time.monotonic() - started >= 1.0
    assert len(fake.requests) == 2


def test_giving_up_after_the_retries_tells_sdks_not_to_retry(retrying, fake):
    fake.add_fault("status", status=503, count=3)
    response = generate(retrying)
    assert response.status_code == 503
    assert response.headers["x-should-retry"] == "false"
    assert len(fake.requests) == 3
    fake.add_fault("status", status=503, count=3)
    # The SDK obeys the header: with max_retries=2 it still makes one request only.
    with openai.OpenAI(base_url=retrying.api_base, api_key="x", max_retries=2) as sdk:
        with pytest.raises(openai.InternalServerError):
            sdk.images.generate(prompt="once")
    assert len(fake.requests) == 6


@pytest.mark.parametrize(
    ("fault", "params"),
    [
        ("malformed", {}),  # answered, but not JSON: the image may have been made
        ("expired_images", {}),  # made and billed; its URL was gone before it was read
    ],
)
def test_a_502_that_may_have_been_billed_is_not_retried_by_the_sdk(retrying, fake, fault, params):
    # The service does not retry these, and an SDK (which retries a 502 by default) must not
    # either: a second request would pay for a second image.
    fake.add_fault(fault, **params)
    with openai.OpenAI(base_url=retrying.api_base, api_key="x", max_retries=2) as sdk:
        with pytest.raises(openai.InternalServerError) as failed:
            sdk.images.generate(prompt="once")
    assert failed.value.status_code == 502
    assert failed.value.response.headers["x-should-retry"] == "false"
    assert len([r for r in fake.requests if r.path.endswith("/images/generations")]) == 1


def test_rate_limit_after_retries_keeps_retry_after(retrying, fake):
    fake.add_fault("status", status=429, retry_after=1, count=3)
    response = generate(retrying)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(
    ("status", "answered", "code"),
    [
        (400, 400, "upstream_rejected"),
        # SiliconFlow refusing the server's own key is not the client's fault.
        (401, 502, "upstream_auth_failed"),
        (403, 403, "upstream_permission_denied"),
    ],
)
def test_client_side_failures_are_never_retried(retrying, fake, status, answered, code):
    fake.add_fault("status", status=status)
    response = generate(retrying)
    assert response.status_code == answered
    assert response.json()["error"]["code"] == code
    assert len(fake.requests) == 1


def test_malformed_json_is_502_without_retry(retrying, fake):
    fake.add_fault("malformed")
    response = generate(retrying)
    assert response.status_code == 502
    assert "not valid JSON" in response.json()["error"]["message"]
    assert len(fake.requests) == 1


def test_image_download_failures_are_retried(retrying, fake):
    fake.add_fault("status", status=503, target="download")
    assert generate(retrying).status_code == 200
    # aiohttp itself re-sends an idempotent GET once on a dropped connection: drop twice.
    fake.add_fault("drop", target="download", count=2)
    assert generate(retrying).status_code == 200


def test_an_image_url_that_404s_is_the_documented_502(retrying, fake):
    fake.add_fault("expired_images")
    response = generate(retrying)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_bad_response"


async def test_an_endless_answer_is_cut_off_at_its_limit_and_not_sent_again(retrying, fake):
    # 64 MiB, chunked, no Content-Length: read no further than 1 MiB. The call was answered,
    # so SiliconFlow may have billed it: never sent again, whatever the retries allow.
    fake.add_fault("oversized")
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(
            retrying.api_base + "/images/generations", json={"prompt": "resilient"}
        )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_bad_response"
    assert response.headers["x-should-retry"] == "false"
    assert len(fake.requests) == 1
    await eventually(lambda: fake.stats["oversized_cut_off"] == 1, what="the fake hung up on")


def test_timeouts_without_retries_left_are_504(start, fake):
    proxy = start(UPSTREAM_RETRIES="1", UPSTREAM_TIMEOUT="0.5")
    fake.add_fault("hang", seconds=5, count=2)
    response = generate(proxy)
    assert response.status_code == 504
    assert response.headers["x-should-retry"] == "false"


def test_nothing_half_written_after_faults(retrying, fake):
    # Two calls, each with 1 + UPSTREAM_RETRIES downloads: 3 drops cannot exhaust one (aiohttp
    # re-sends a dropped GET once), 6 cut-off downloads exhaust both, and one call's image
    # URLs gone fail that call alone.
    # The outcome: the number of images of a 200, the error code otherwise. A cut-off body is
    # a broken transfer (aiohttp's payload error), not a bad answer.
    for fault, params, status, outcome in [
        ("drop", {"target": "download", "count": 3}, 200, 2),
        ("malformed", {"target": "download", "count": 6}, 502, "upstream_connection_failed"),
        ("expired_images", {}, 200, 1),
    ]:
        fake.add_fault(fault, **params)
        response = generate(retrying, n=2)
        assert response.status_code == status, (fault, response.text)
        if status == 200:
            assert len(response.json()["data"]) == outcome, fault
        else:
            assert response.json()["error"]["code"] == outcome
    assert fake.stats["pending_faults"] == 0
    image_dir = Path(retrying.env["IMAGE_DIR"])
    leftovers = [path for path in image_dir.rglob("*") if path.is_file()]
    assert not [path for path in leftovers if path.suffix == ".tmp"]
    for path in leftovers:
        assert path.read_bytes()[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0", b"RIFF")


def test_a_truncated_image_download_is_never_stored(retrying, fake):
    before = set(Path(retrying.env["IMAGE_DIR"]).rglob("*.png"))
    fake.add_fault("malformed", target="download", count=3)
    response = generate(retrying)
    assert response.status_code == 502
    assert set(Path(retrying.env["IMAGE_DIR"]).rglob("*.png")) == before
