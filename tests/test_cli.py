"""The commands as a user runs them: serve, demo, check-config."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from .support.proxy import free_port, start_proxy

BIN = Path(sys.executable).parent


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [sys.executable, "-m", "sfproxy", *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_console_scripts_are_installed():
    for name in ("sfproxy", "siliconflow-img-proxy"):
        path = shutil.which(name, path=str(BIN))
        assert path is not None
        result = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0
        for command in ("serve", "demo", "check-config"):
            assert command in result.stdout


def test_serve_without_the_upstream_key_exits_2_saying_what_to_set(tmp_path):
    result = run("serve", "--port", str(free_port()), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "SILICONFLOW_API_KEY" in lines[0]


def test_serve_with_invalid_models_json_stops_at_start(tmp_path):
    result = run(
        "serve",
        env={"SILICONFLOW_API_KEY": "sk-x", "MODELS_JSON": "[not json"},
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "MODELS_JSON" in result.stderr


def test_check_config_masks_secrets(tmp_path):
    env = {
        "SILICONFLOW_API_KEY": "sk-supersecretupstream",
        "ALLOW_CLIENT_KEYS": "client-secret-aaaa,client-secret-bbbb",
        "SF_BASE": "https://api.siliconflow.com/v1/",
    }
    result = run("check-config", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for secret in ("sk-supersecretupstream", "client-secret-aaaa", "client-secret-bbbb"):
        assert secret not in output
    assert "https://api.siliconflow.com/v1" in output
    assert "configuration is valid" in output


@pytest.mark.parametrize(
    "env",
    [
        {"SILICONFLOW_API_KEY": "sk-x", "MODELS_JSON": "{}"},
        {"SILICONFLOW_API_KEY": "sk-x", "PARALLEL_CALLS": "zero"},
        {},
    ],
)
def test_check_config_exits_2_on_invalid_configuration(tmp_path, env):
    assert run("check-config", env=env, cwd=tmp_path).returncode == 2


def test_dotenv_is_read_from_the_working_directory(tmp_path):
    (tmp_path / ".env").write_text(
        "SILICONFLOW_API_KEY=sk-from-dotenv-file\nPROVIDER_LABEL=Dotenv\n"
    )
    result = run("check-config", cwd=tmp_path)
    assert result.returncode == 0
    assert "Dotenv" in result.stdout
    assert "sk-from-dotenv-file" not in result.stdout


def test_demo_serves_images_from_the_fake_and_prints_how_to_use_it(tmp_path):
    port = free_port()
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    process = subprocess.Popen(
        [sys.executable, "-m", "sfproxy", "demo", "--port", str(port), "--latency", "0"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        with openai.OpenAI(base_url=base + "/v1", api_key="anything", max_retries=0) as sdk:
            image = sdk.images.generate(prompt="demo works").data[0]
        assert httpx.get(image.url).content.startswith(b"\x89PNG")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    assert "DEMO" in output
    assert f"Playground:       {base}/" in output
    assert f"{base}/v1" in output
    assert re.search(rf"curl {re.escape(base)}/v1/images/generations", output)
    # Demo images are kept apart from a real deployment's.
    assert any((tmp_path / "data" / "demo-images").rglob("*.png"))


def test_serve_with_workers(tmp_path, fake):
    proxy = start_proxy(
        {"SF_BASE": fake.base_url, "SILICONFLOW_API_KEY": fake.config.api_key or "x"},
        tmp_path,
        args=("--workers", "2"),
    )
    try:
        with openai.OpenAI(base_url=proxy.api_base, api_key="x", max_retries=0) as sdk:
            assert [sdk.images.generate(prompt=f"w{index}").data for index in range(4)]
    finally:
        assert proxy.stop() == 0


def test_port_host_and_workers_from_the_environment(tmp_path, fake):
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "SF_BASE": fake.base_url,
        "SILICONFLOW_API_KEY": fake.config.api_key or "x",
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "sfproxy", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and status != 200:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/healthz").status_code
            except httpx.TransportError:
                time.sleep(0.1)
        assert status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    bad = run("serve", env={"SILICONFLOW_API_KEY": "sk-x", "WORKERS": "many"}, cwd=tmp_path)
    assert bad.returncode != 0
    assert "WORKERS must be a whole number" in bad.stderr
