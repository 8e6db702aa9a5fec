"""Starting, pinning, watching and stopping the servers under test, all on loopback."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

# Only what a process needs to run: the developer's shell settings must not leak in.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
UPSTREAM_KEY = "sk-bench-upstream-0123456789"
# Wanted so that 2,000 client connections plus as many upstream ones fit in each process.
WANTED_OPEN_FILES = 65536


def raise_open_file_limit(wanted: int = WANTED_OPEN_FILES) -> int:
    """Raise this process's soft limit (children inherit it); return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(frozen=True, slots=True)
class Pinning:
    """Which CPUs each party runs on; empty tuples mean unpinned.

    The gateway under test gets a core of its own, so the load generator and the fake upstream
    (which share the other) never steal its CPU, and it is measured as it would run alone.
    """

    proxy: tuple[int, ...] = ()
    upstream: tuple[int, ...] = ()
    load: tuple[int, ...] = ()

    @classmethod
    def for_this_machine(cls, enabled: bool = True) -> Pinning:
        cpus = sorted(os.sched_getaffinity(0))
        if not enabled or len(cpus) < 2 or shutil.which("taskset") is None:
            return cls()
        return cls(proxy=(cpus[0],), upstream=tuple(cpus[1:]), load=tuple(cpus[1:]))

    @staticmethod
    def prefix(cpus: Sequence[int]) -> list[str]:
        return ["taskset", "-c", ",".join(map(str, cpus))] if cpus else []

    def describe(self) -> dict[str, Any]:
        if not self.proxy:
            return {"enabled": False}
        return {
            "enabled": True,
            "gateway_cpus": list(self.proxy),
            "upstream_cpus": list(self.upstream),
            "wrk_and_harness_cpus": list(self.load),
            "how": "taskset -c for each server and wrk; sched_setaffinity for the harness",
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    started_at: float = 0.0
    ready_seconds: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def peak_rss_mb(self) -> float:
        """VmHWM: the most resident memory the process has held since it started."""
        return _status_kb(self.pid, "VmHWM") / 1024

    def rss_mb(self) -> float:
        return _status_kb(self.pid, "VmRSS") / 1024

    def cpu_seconds(self) -> float:
        """User plus system CPU time of all the process's threads so far: unlike latency, it
        barely moves when other tenants load the machine."""
        with open(f"/proc/{self.pid}/stat") as stat:
            # The command name may hold spaces; the fields after its closing parenthesis do not.
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _status_kb(pid: int, field_name: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not found for pid {pid}")


def spawn(
    name: str,
    command: Sequence[str],
    *,
    url: str,
    env: Mapping[str, str],
    workdir: Path,
    pin: Sequence[int] = (),
) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    full_env = {key: os.environ[key] for key in _INHERITED if key in os.environ}
    full_env.update(env)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*Pinning.prefix(pin), *command],
            env=full_env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Server(name, url, process, log_path, dict(env), started_at=time.perf_counter())


async def wait_ready(server: Server, path: str, timeout: float = 60.0) -> Server:
    """Poll `path` until it answers 200; record how long the start took."""
    deadline = time.perf_counter() + timeout
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}"
                )
            try:
                async with session.get(
                    server.url + path, timeout=aiohttp.ClientTimeout(total=1)
                ) as response:
                    if response.status == 200:
                        server.ready_seconds = time.perf_counter() - server.started_at
                        return server
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.01)
    server.stop()
    raise RuntimeError(f"{server.name} was not ready within {timeout:g} s:\n{server.log_tail()}")


async def start_fake(workdir: Path, pin: Sequence[int]) -> Server:
    port = free_port()
    server = spawn(
        "fake-upstream",
        [
            sys.executable,
            "-m",
            "sfproxy",
            "fake-upstream",
            "--port",
            str(port),
            "--api-key",
            UPSTREAM_KEY,
            # Rendering is the fake's cost, not the gateway's: keep every image tiny.
            "--max-render-side",
            "64",
        ],
        url=f"http://127.0.0.1:{port}",
        env={},
        workdir=workdir,
        pin=pin,
    )
    return await wait_ready(server, "/_fake/stats")


def service_command(port: int) -> list[str]:
    return [sys.executable, "-m", "sfproxy", "serve", "--host", "127.0.0.1", "--port", str(port)]


def service_env(fake: Server, workdir: Path, **settings: str) -> dict[str, str]:
    env = {
        "SF_BASE": f"{fake.url}/v1",
        "SILICONFLOW_API_KEY": UPSTREAM_KEY,
        "IMAGE_DIR": str(workdir / "images"),
        # Per-request logging would be measured too; LiteLLM runs as quiet.
        "LOG_LEVEL": "warning",
    }
    env.update(settings)
    return env


async def start_service(
    name: str, fake: Server, workdir: Path, pin: Sequence[int], **settings: str
) -> Server:
    port = free_port()
    service_dir = workdir / name
    server = spawn(
        name,
        service_command(port),
        url=f"http://127.0.0.1:{port}",
        env=service_env(fake, service_dir, **settings),
        workdir=service_dir,
        pin=pin,
    )
    return await wait_ready(server, "/healthz")


class FakeControl:
    """The fake's `/_fake/...` control surface."""

    def __init__(self, session: aiohttp.ClientSession, fake: Server) -> None:
        self._session = session
        self._url = fake.url + "/_fake"

    async def configure(self, **changes: Any) -> None:
        async with self._session.put(self._url + "/config", json=changes) as response:
            if response.status != 200:
                raise RuntimeError(f"the fake refused {changes}: {await response.text()}")

    async def stats(self) -> dict[str, int]:
        async with self._session.get(self._url + "/stats") as response:
            stats: dict[str, int] = await response.json()
            return stats

    async def reset_stats(self) -> None:
        async with self._session.delete(self._url + "/stats"):
            pass

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait out generations still sleeping in the fake: wrk stops with requests in flight,
        and those would otherwise overlap the next measurement."""
        deadline = time.perf_counter() + timeout
        while (await self.stats())["in_flight"] > 0:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the fake still has generations in flight after {timeout} s")
            await asyncio.sleep(0.1)

    async def last_request_body(self, path: str) -> dict[str, Any]:
        """The body of the latest generation the fake saw on `path` (what a gateway sent)."""
        async with self._session.get(self._url + "/requests") as response:
            recorded: list[dict[str, Any]] = await response.json()
        for request in reversed(recorded):
            if request["path"] == path and isinstance(request["body"], dict):
                body: dict[str, Any] = request["body"]
                return body
        raise RuntimeError(f"the fake saw no generation on {path}")

    async def set_accounts(
        self, accounts: Mapping[str, Sequence[str]], also: str
    ) -> list[dict[str, Any]]:
        """Accounts with these keys, unlimited and well funded; `also` joins the first account,
        since once accounts exist the fake takes only their keys."""
        for index, (account_id, keys) in enumerate(accounts.items()):
            body: dict[str, Any] = {
                "id": account_id,
                "keys": [*keys, *([also] if index == 0 else [])],
                "balance": 1_000_000.0,
                "images_per_minute": None,
                "images_per_day": None,
            }
            async with self._session.post(self._url + "/accounts", json=body) as response:
                if response.status != 201:
                    raise RuntimeError(f"the fake refused {body}: {await response.text()}")
        async with self._session.get(self._url + "/accounts") as response:
            listed: list[dict[str, Any]] = await response.json()
            return listed

    async def clear_accounts(self) -> None:
        async with self._session.delete(self._url + "/accounts"):
            pass

    async def keys_seen(self, path: str) -> dict[str, int]:
        """Recorded requests on `path` per Bearer key."""
        async with self._session.get(self._url + "/requests") as response:
            recorded: list[dict[str, Any]] = await response.json()
        seen: dict[str, int] = {}
        for request in recorded:
            if request["path"] == path:
                key = request["headers"].get("authorization", "").removeprefix("Bearer ")
                seen[key] = seen.get(key, 0) + 1
        return dict(sorted(seen.items()))

    async def clear_requests(self) -> None:
        async with self._session.delete(self._url + "/requests"):
            pass
