"""LiteLLM's proxy, the gateway most users would pick instead, installed in a venv of its own.

Pinned, and recorded in every run's versions: the newest release whose `[proxy]` extra resolved
from the package index when this was written (later ones require `litellm-proxy` or
`litellm-proxy-extras` releases that the index did not have).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .processes import UPSTREAM_KEY, Server, free_port, spawn, wait_ready

LITELLM_VERSION = "1.108.5"
VENV = Path(__file__).resolve().parent / ".litellm-venv"
# The model name clients send; LiteLLM strips `openai/` and forwards the rest upstream.
MODEL = "Qwen/Qwen-Image"


def installed_version(venv: Path = VENV) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def ensure_installed(venv: Path = VENV, version: str = LITELLM_VERSION) -> float:
    """Install the pinned LiteLLM if it is not there; return the seconds spent installing."""
    if installed_version(venv) == version and (venv / "bin" / "litellm").exists():
        return 0.0
    started = time.perf_counter()
    print(f"bench: installing litellm[proxy]=={version} into {venv} (once)", flush=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={version}"], check=True
    )
    return time.perf_counter() - started


def write_config(path: Path, upstream_url: str, master_key: str) -> None:
    """JSON is YAML, so the config needs no YAML library in the harness."""
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"{upstream_url}/openai/v1",
                    "api_key": UPSTREAM_KEY,
                },
            }
        ],
        "litellm_settings": {
            "drop_params": True,
            "set_verbose": False,
            "json_logs": False,
            "turn_off_message_logging": True,
        },
        # LiteLLM refuses to start without a master key; no database_url: no spend tracking.
        "general_settings": {"master_key": master_key, "disable_spend_logs": True},
    }
    path.write_text(json.dumps(config, indent=2))


async def start_litellm(
    fake: Server, workdir: Path, pin: Sequence[int], venv: Path = VENV
) -> tuple[Server, str]:
    """Start LiteLLM in front of the fake's OpenAI endpoint; return it and its master key."""
    master_key = f"sk-bench-{secrets.token_hex(16)}"
    directory = workdir / "litellm"
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "config.yaml"
    write_config(config, fake.url, master_key)
    port = free_port()
    server = spawn(
        "litellm",
        [
            str(venv / "bin" / "litellm"),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        url=f"http://127.0.0.1:{port}",
        env={
            # Without it LiteLLM fetches its model price list from GitHub at start.
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
        },
        workdir=directory,
        pin=pin,
    )
    return await wait_ready(server, "/health/liveliness", timeout=180), master_key
