"""A stand-in for SiliconFlow's image and video API, served over real HTTP on loopback.

Used by the `demo` command, the test suite and the benchmarks. It checks requests per model the
way the documented upstream does, draws real images, hands out expiring links to them, and fails
on demand through a queue of faults. `OPENAI_GENERATIONS_PATH` answers in OpenAI's format, for
gateways that speak only that. Video jobs run on a clock tests steer (`fake.videos`, see
video_jobs.py) and end in small, playable MP4s (clips.py):

    with FakeSiliconFlow(latency=0.05) as fake:
        fake.add_fault("status", status=429, retry_after=1)
        ...  # point the proxy at fake.base_url
        assert fake.requests[0].body["model"] == "Qwen/Qwen-Image"
        fake.videos.hold()
"""

from .config import BUILTIN_MODELS, FakeConfig, ModelRule
from .fake import FakeSiliconFlow, run_fake_upstream
from .faults import Fault, FaultKind, FaultTarget
from .images import ImageFormat
from .openai_images import OPENAI_GENERATIONS_PATH
from .server import TRACE_ID_HEADER
from .state import RecordedRequest
from .video_jobs import FakeVideos, VideoJobRecord

__all__ = [
    "BUILTIN_MODELS",
    "FakeConfig",
    "FakeSiliconFlow",
    "FakeVideos",
    "Fault",
    "FaultKind",
    "FaultTarget",
    "ImageFormat",
    "ModelRule",
    "OPENAI_GENERATIONS_PATH",
    "RecordedRequest",
    "TRACE_ID_HEADER",
    "VideoJobRecord",
    "run_fake_upstream",
]
