"""The upstream client's own rules: proxies from the environment, and answers read bounded."""

from __future__ import annotations

import pytest

from sfproxy.errors import UpstreamBadResponseError
from sfproxy.fake_upstream import FakeSiliconFlow
from sfproxy.siliconflow import MAX_ANSWER_BYTES, SiliconFlowClient
from sfproxy.upstream_transport import EnvironmentProxies
from sfproxy.upstream_video import VideoUpstream

from .support.inprocess import eventually


def test_proxies_come_from_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    proxies = EnvironmentProxies()
    assert proxies.proxy_for("https://api.siliconflow.cn/v1/images/generations") == (
        "http://proxy.example:3128"
    )
    assert proxies.proxy_for("http://127.0.0.1:8000/v1/images/generations") is None
    assert proxies.proxy_for("http://other.example/x") is None


def test_no_proxy_variables_means_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert EnvironmentProxies().proxy_for("https://api.siliconflow.cn/v1") is None


@pytest.fixture
def fake():
    """A fake of this test's own: the session's also answers the model refreshes of the
    services other tests left running, which could take a `models` fault queued here."""
    with FakeSiliconFlow(api_key="sk-bounded-answers") as upstream:
        yield upstream


async def test_an_answer_without_a_length_is_read_no_further_than_its_limit(fake):
    """SiliconFlow's JSON answers are read to MAX_ANSWER_BYTES at most, whether or not they say
    how long they are: the fake streams 64 MiB, chunked, and is hung up on."""
    fake.add_fault("oversized", target="models")
    fake.add_fault("oversized", target="video_status")
    too_large = f"SiliconFlow's answer is larger than allowed ({MAX_ANSWER_BYTES} bytes)."
    async with SiliconFlowClient(fake.base_url, fake.config.api_key) as client:
        videos = VideoUpstream(client, max_bytes=1024)
        with pytest.raises(UpstreamBadResponseError) as listing:
            await client.list_models()
        assert listing.value.message == too_large
        with pytest.raises(UpstreamBadResponseError) as status:
            await videos.status(client.keys.keys[0], "a-request-id")
        assert status.value.message == too_large
        await eventually(lambda: fake.stats["oversized_cut_off"] == 2, what="both hung up on")

        # The same answers, under the limit, are read whole.
        fake.add_fault("oversized", target="models", bytes=MAX_ANSWER_BYTES // 2)
        fake.add_fault("oversized", target="video_status", bytes=1000)
        assert await client.list_models() == []
        assert (await videos.status(client.keys.keys[0], "a-request-id")).status == "InQueue"
    assert fake.stats["oversized_cut_off"] == 2
