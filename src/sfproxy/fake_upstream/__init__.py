"""A stand-in for SiliconFlow's image API, served over real HTTP on loopback.

Used by the `demo` command, the test suite and the benchmarks. It checks requests per model the
way the documented upstream does, draws real images, hands out expiring links to them, and fails
on demand through a queue of faults. `OPENAI_GENERATIONS_PATH` answers in OpenAI's format, for
gateways that speak only that:

    with FakeSiliconFlow(latency=0.05) as fake:
        fake.add_fault("status", status=429, retry_after=1)
        ...  # point the proxy at fake.base_url
        assert fake.requests[0].body["model"] == "Qwen/Qwen-Image"
"""

from .config import BUILTIN_MODELS, FakeConfig, ModelRule
from .fake import FakeSiliconFlow, run_fake_upstream
from .faults import Fault, FaultKind, FaultTarget
from .images import ImageFormat
from .openai_images import OPENAI_GENERATIONS_PATH
from .server import TRACE_ID_HEADER
from .state import RecordedRequest

__all__ = [
    "BUILTIN_MODELS",
    "FakeConfig",
    "FakeSiliconFlow",
    "Fault",
    "FaultKind",
    "FaultTarget",
    "ImageFormat",
    "ModelRule",
    "OPENAI_GENERATIONS_PATH",
    "RecordedRequest",
    "TRACE_ID_HEADER",
    "run_fake_upstream",
]
