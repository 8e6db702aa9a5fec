"""What tests steer and inspect: config, queued faults, stored files, recorded requests, counters.

Tests call into this from their own thread while the server runs on another loop, so every piece is
guarded by a lock held only for a few dictionary operations.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .accounts import FakeAccounts
from .billing import FakeBilling
from .config import FakeConfig
from .faults import Fault, FaultQueue, make_fault
from .files import FileStore
from .video_jobs import FakeVideos


@dataclass(slots=True)
class RecordedRequest:
    """A generation request as it reached the fake. Header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    # The parsed JSON body, or None when the body was not JSON.
    body: Any
    time: float = field(default_factory=time.time)
    # None until answered, and for dropped connections.
    status: int | None = None
    fault: str | None = None

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "body": self.body,
            "time": self.time,
            "status": self.status,
            "fault": self.fault,
        }


COUNTERS = (
    "generate_requests",
    "generate_ok",
    "generate_errors",
    "generate_dropped",
    "images_generated",
    "downloads",
    "downloads_ok",
    "downloads_not_found",
    "downloads_dropped",
    "faults_applied",
    "oversized_cut_off",
    "renders",
    "render_cache_hits",
    "peak_in_flight",
    "video_submits",
    "video_status_calls",
    "video_downloads",
    "clips_rendered",
    "clip_cache_hits",
)


class FakeState:
    def __init__(self, config: FakeConfig | None = None, **changes: Any) -> None:
        self.config = config if config is not None else FakeConfig()
        self.config.update(**changes)
        self.faults = FaultQueue()
        self.files = FileStore()
        self.accounts = FakeAccounts(lambda: self.config.api_key)
        self.billing = FakeBilling(lambda: self.config.site)
        self.videos = FakeVideos(lambda: self.config, self.billing)
        self._lock = threading.Lock()
        self._requests: deque[RecordedRequest] = deque()
        self._downloads: deque[RecordedRequest] = deque()
        self._counters: Counter[str] = Counter()
        self._in_flight = 0

    def configure(self, **changes: Any) -> None:
        """Change config fields (validated, all or nothing); see FakeConfig."""
        with self._lock:
            self.config.update(**changes)

    def add_fault(
        self, kind: str, count: int = 1, target: str = "generate", **params: Any
    ) -> Fault:
        fault = make_fault(kind, count, target, params)
        self.faults.add(fault)
        return fault

    def clear_faults(self) -> int:
        return self.faults.clear()

    @property
    def pending_faults(self) -> list[Fault]:
        return self.faults.pending()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> int:
        with self._lock:
            cleared = len(self._requests)
            self._requests.clear()
            return cleared

    @property
    def downloads(self) -> list[RecordedRequest]:
        """Image downloads, recorded apart so `requests` holds generations only."""
        with self._lock:
            return list(self._downloads)

    def clear_downloads(self) -> int:
        with self._lock:
            cleared = len(self._downloads)
            self._downloads.clear()
            return cleared

    def expire_images(self) -> int:
        """Make every image URL handed out so far answer 404."""
        return self.files.clear()

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            stats = {name: self._counters[name] for name in COUNTERS}
            stats["in_flight"] = self._in_flight
        stats["stored_files"] = len(self.files)
        stats["pending_faults"] = sum(f.count for f in self.faults.pending())
        return stats

    def reset_stats(self) -> None:
        with self._lock:
            self._counters.clear()

    def record(self, recorded: RecordedRequest) -> None:
        self._append(self._requests, recorded)

    def record_download(self, recorded: RecordedRequest) -> None:
        self._append(self._downloads, recorded)

    def _append(self, records: deque[RecordedRequest], recorded: RecordedRequest) -> None:
        with self._lock:
            records.append(recorded)
            while len(records) > self.config.max_recorded_requests:
                records.popleft()

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] += amount

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        """Track concurrent generations; benchmarks check the proxy's concurrency cap with it."""
        with self._lock:
            self._in_flight += 1
            self._counters["peak_in_flight"] = max(
                self._counters["peak_in_flight"], self._in_flight
            )
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def config_json(self) -> dict[str, Any]:
        with self._lock:
            return self.config.to_json()

    def apply_config_json(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.config.update(**changes)
            return self.config.to_json()
