"""What the figures were measured on, and with which versions: numbers mean nothing without it."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from .litellm import installed_version
from .wrk import wrk_version

REPO = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "memory_gb": round(_meminfo_kb("MemTotal") / 1024 / 1024, 1),
        # Other tenants' load at the start: the machines are shared.
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "sfproxy": _package("siliconflow-img-proxy")}
    found["git"] = _git_revision()
    found["litellm"] = installed_version() or "missing"
    found["wrk"] = wrk_version()
    for name in ("fastapi", "starlette", "uvicorn", "aiohttp", "pydantic", "orjson"):
        found[name] = _package(name)
    return found


def _package(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _git_revision() -> str:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""

    revision = git("rev-parse", "--short", "HEAD") or "unknown"
    # Uncommitted changes to the service make the revision alone misleading.
    dirty = git("status", "--porcelain", "--", "src")
    return f"{revision}+dirty" if dirty else revision


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _meminfo_kb(name: str) -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
