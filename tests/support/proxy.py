"""The service under test, run as users run it: `sfproxy serve` in its own process, on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# Only what a process needs to run: the tests' own settings must not leak in from the shell.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`; the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def wait_until_serving(
    url: str,
    process: subprocess.Popen[bytes],
    *,
    name: str,
    log: Callable[[], str],
    timeout: float,
    ok: Callable[[httpx.Response], bool] = lambda response: response.status_code == 200,
) -> None:
    """Poll `url` until it answers as `ok` says; fail early, with the log, if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log()}")
        try:
            if ok(httpx.get(url, timeout=1.0)):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    stop_process(process)
    raise RuntimeError(f"{name} did not answer within {timeout} s:\n{log()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ProxyProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def api_base(self) -> str:
        return f"{self.url}/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        return stop_process(self.process, timeout)


def start_proxy(
    env: dict[str, str],
    workdir: Path,
    *,
    args: tuple[str, ...] = (),
    ready_path: str = "/healthz",
    timeout: float = 30.0,
) -> ProxyProcess:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"proxy-{port}.log"
    full_env = {name: os.environ[name] for name in _INHERITED if name in os.environ}
    full_env.update(env)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sfproxy",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *args,
            ],
            env=full_env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    proxy = ProxyProcess(
        url=f"http://127.0.0.1:{port}", process=process, log_path=log_path, env=env
    )
    wait_until_serving(
        proxy.url + ready_path, process, name="the proxy", log=proxy.log, timeout=timeout
    )
    return proxy
