from __future__ import annotations

from collections.abc import Callable, Iterator

import openai
import pytest

from sfproxy.fake_upstream import FakeSiliconFlow

from .support.proxy import ProxyProcess, start_proxy

pytest_plugins = ["tests.support.s3", "tests.support.redis", "tests.support.postgres"]

UPSTREAM_KEY = "sk-upstream-secret-0123456789"
CLIENT_KEYS = ("proxy-key-alpha-123456", "proxy-key-beta-654321")

# The sizes OpenAI clients offer, which every model's table must absorb.
OPENAI_SIZES = [
    "256x256",
    "512x512",
    "1024x1024",
    "1536x1024",
    "1024x1536",
    "1792x1024",
    "1024x1792",
]

StartProxy = Callable[..., ProxyProcess]


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeSiliconFlow]:
    with FakeSiliconFlow(api_key=UPSTREAM_KEY) as upstream:
        yield upstream


@pytest.fixture(autouse=True)
def _fresh_fake(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts with no queued faults, no recorded requests and default knobs."""
    if "fake" not in request.fixturenames:
        yield
        return
    upstream: FakeSiliconFlow = request.getfixturevalue("fake")
    upstream.clear_faults()
    upstream.clear_requests()
    upstream.clear_downloads()
    upstream.configure(latency=0.0, download_latency=0.0, image_format="png", image_min_bytes=0)
    upstream.configure(
        video_queue_seconds=0.0, video_progress_seconds=0.3, video_url_ttl_seconds=600.0
    )
    upstream.videos.reset()
    yield
    upstream.clear_faults()


@pytest.fixture(scope="session")
def start(fake: FakeSiliconFlow, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartProxy]:
    """Start (or reuse) a proxy process with the given settings on top of the test defaults."""
    running: dict[tuple[tuple[str, str], ...], ProxyProcess] = {}

    def start_with(**settings: str) -> ProxyProcess:
        env = {
            "SF_BASE": fake.base_url,
            "SILICONFLOW_API_KEY": UPSTREAM_KEY,
            "UPSTREAM_RETRIES": "0",
            # Tests inject 503s; a cool-down would carry them into the next test's requests.
            "UPSTREAM_COOLDOWN_SECONDS": "0",
            "LOG_LEVEL": "info",
        }
        env.update(settings)
        key = tuple(sorted(env.items()))
        if key not in running or running[key].process.poll() is not None:
            workdir = tmp_path_factory.mktemp("proxy")
            env.setdefault("IMAGE_DIR", str(workdir / "images"))
            running[key] = start_proxy(env, workdir)
        return running[key]

    yield start_with
    for proxy in running.values():
        proxy.stop()


@pytest.fixture
def proxy(start: StartProxy) -> ProxyProcess:
    """A public proxy (no client keys), retries off, local image store."""
    return start()


@pytest.fixture
def client(proxy: ProxyProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=proxy.api_base, api_key="unused", max_retries=0) as sdk:
        yield sdk


def keyed(start: StartProxy, **settings: str) -> ProxyProcess:
    return start(ALLOW_CLIENT_KEYS=",".join(CLIENT_KEYS), **settings)
