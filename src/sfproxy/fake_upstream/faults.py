"""Queued failures: each fault is used by the next requests of its target, first queued first."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

FaultKind = Literal[
    "status", "hang", "drop", "malformed", "corrupt", "no_images", "expired_images", "oversized"
]
FaultTarget = Literal[
    "generate", "download", "models", "video_submit", "video_status", "video_download"
]

_KINDS_BY_TARGET: dict[str, frozenset[str]] = {
    "generate": frozenset(get_args(FaultKind)) - {"corrupt"},
    # Downloads have no JSON to empty, and `malformed` there means a truncated image;
    # `corrupt`, an image whole in its structure whose pixels no decoder can read.
    "download": frozenset({"status", "hang", "drop", "malformed", "corrupt"}),
    # `GET /v1/models`; `malformed` there is a body that is not JSON.
    "models": frozenset({"status", "hang", "drop", "malformed", "oversized"}),
    # The video API: `malformed` is a JSON answer cut short (a download's: an MP4 cut short).
    # `oversized`, as for generations and models: a 200 answer of `bytes` bytes, chunked.
    "video_submit": frozenset({"status", "hang", "drop", "malformed", "oversized"}),
    "video_status": frozenset({"status", "hang", "drop", "malformed", "oversized"}),
    "video_download": frozenset({"status", "hang", "drop", "malformed"}),
}
_PARAMS: dict[str, frozenset[str]] = {
    "status": frozenset({"status", "message", "body", "retry_after"}),
    "hang": frozenset({"seconds"}),
    "oversized": frozenset({"bytes"}),
}
# An `oversized` answer's default size: more than any client buffers on loopback.
OVERSIZED_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class Fault:
    kind: FaultKind
    target: FaultTarget = "generate"
    count: int = 1
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "count": self.count,
            "params": dict(self.params),
        }


def make_fault(kind: str, count: int, target: str, params: Mapping[str, Any]) -> Fault:
    """Validate a fault's description up front, so a typo fails in the test, not mid-request."""
    if target not in _KINDS_BY_TARGET:
        raise ValueError(f"fault target must be one of {sorted(_KINDS_BY_TARGET)}")
    if kind not in _KINDS_BY_TARGET[target]:
        raise ValueError(
            f"fault kind for {target} must be one of {sorted(_KINDS_BY_TARGET[target])}"
        )
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError("fault count must be an integer >= 1")
    unknown = set(params) - _PARAMS.get(kind, frozenset())
    if unknown:
        raise ValueError(f"unknown parameters for a {kind} fault: {sorted(unknown)}")
    checked = dict(params)
    if kind == "status":
        status = checked.get("status")
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError("a status fault needs status: an integer in [400, 599]")
        for name in ("message", "body"):
            if checked.get(name) is not None and not isinstance(checked[name], str):
                raise ValueError(f"{name} must be a string")
        retry_after = checked.get("retry_after")
        if retry_after is not None and (
            isinstance(retry_after, bool) or not isinstance(retry_after, int | float | str)
        ):
            raise ValueError("retry_after must be a number of seconds or a string")
    if kind == "hang":
        seconds = checked.setdefault("seconds", 3600.0)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError("hang seconds must be a number >= 0")
    if kind == "oversized":
        size = checked.setdefault("bytes", OVERSIZED_BYTES)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError("oversized bytes must be an integer >= 1")
    return Fault(cast(FaultKind, kind), cast(FaultTarget, target), count, checked)


class FaultQueue:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> int:
        with self._lock:
            cleared = len(self._faults)
            self._faults.clear()
            return cleared

    def pending(self) -> list[Fault]:
        with self._lock:
            return [Fault(f.kind, f.target, f.count, dict(f.params)) for f in self._faults]

    def take(self, target: FaultTarget) -> Fault | None:
        """Use up one request's worth of the first fault queued for `target`."""
        with self._lock:
            for fault in self._faults:
                if fault.target == target:
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                    return Fault(fault.kind, fault.target, 1, dict(fault.params))
            return None
