"""A real S3-compatible server for tests: moto's server in its own process, on loopback.

It runs as a separate process, as MinIO or R2 would, so that proxies started by the tests (also
separate processes) can share it. Fixtures:

- `s3_server` (session): one running server with one bucket, shared by every test.
- `s3_bucket` (function): the same server, bound to a new, empty bucket of its own.

`S3Server.env(prefix)` gives the settings a proxy needs to use the bucket as its image store.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from sfproxy.store.s3 import S3ImageStore

from .proxy import free_port, stop_process, wait_until_serving

_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
_S3_NAMESPACE = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def new_bucket_name() -> str:
    return f"images-{secrets.token_hex(6)}"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str
    access_key: str
    # Distinctive, so a test can assert that no error message ever shows it.
    secret_key: str
    region: str = "us-east-1"
    process: subprocess.Popen[bytes] | None = field(default=None, compare=False, repr=False)
    log_path: Path | None = field(default=None, compare=False, repr=False)

    def create_bucket(self, name: str | None = None) -> str:
        # moto accepts unsigned requests, so plain HTTP is enough for the setup steps.
        name = name or new_bucket_name()
        response = httpx.put(f"{self.endpoint_url}/{name}", timeout=10)
        response.raise_for_status()
        return name

    def with_new_bucket(self) -> S3Server:
        return replace(self, bucket=self.create_bucket())

    def allow_public_reads(self) -> str:
        """Let anyone GET the bucket's objects, as a public bucket or CDN would; return its URL."""
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{self.bucket}/*",
                }
            ],
        }
        response = httpx.put(
            f"{self.endpoint_url}/{self.bucket}?policy",
            content=json.dumps(policy),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        response.raise_for_status()
        return f"{self.endpoint_url}/{self.bucket}"

    def keys(self, prefix: str = "") -> list[str]:
        """Every key in the bucket under `prefix`, in order (no more than one page is expected)."""
        response = httpx.get(
            f"{self.endpoint_url}/{self.bucket}",
            params={"list-type": "2", "prefix": prefix},
            timeout=10,
        )
        response.raise_for_status()
        root = ElementTree.fromstring(response.content)
        return [
            element.text or ""
            for element in root.iter(f"{_S3_NAMESPACE}Key")
            if element.text is not None
        ]

    def put_object(self, key: str, data: bytes) -> None:
        """An object written behind the image store's back (a neighbour in a shared bucket)."""
        httpx.put(
            f"{self.endpoint_url}/{self.bucket}/{key}", content=data, timeout=10
        ).raise_for_status()

    def env(self, prefix: str = "") -> dict[str, str]:
        """The settings that make a proxy keep its images in this bucket under `prefix`."""
        location = f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"
        return {
            "IMAGE_STORE": location,
            "S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def store(self, prefix: str = "", **options: Any) -> S3ImageStore:
        """An image store on this bucket, not yet started."""
        return S3ImageStore(
            self.bucket,
            prefix,
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            **options,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, timeout: float = 10.0) -> None:
        # Copies made by `with_new_bucket` share the process: this stops it for all of them.
        if self.process is not None:
            stop_process(self.process, timeout)


def _start(log_path: Path, timeout: float) -> S3Server:
    port = free_port()
    env = {name: os.environ[name] for name in _INHERITED if name in os.environ}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = S3Server(
        endpoint_url=f"http://127.0.0.1:{port}",
        bucket="",
        access_key="moto-access-key",
        secret_key=f"moto-secret-{secrets.token_hex(8)}",
        process=process,
        log_path=log_path,
    )
    wait_until_serving(
        f"{server.endpoint_url}/moto-api/data.json",
        process,
        name="moto",
        log=server.log,
        timeout=timeout,
        ok=lambda response: True,
    )
    return server


@contextmanager
def running_s3_server(timeout: float = 30.0) -> Iterator[S3Server]:
    """A moto S3 server with one empty bucket, stopped on exit."""
    handle, name = tempfile.mkstemp(prefix="moto-", suffix=".log")
    os.close(handle)
    log_path = Path(name)
    server: S3Server | None = None
    try:
        # Another process may take the free port before moto binds it; a second try settles it.
        for attempt in range(3):
            try:
                server = _start(log_path, timeout)
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        assert server is not None
        server = server.with_new_bucket()
        yield server
    finally:
        if server is not None:
            server.stop()
        log_path.unlink(missing_ok=True)


@asynccontextmanager
async def started(store: S3ImageStore) -> AsyncIterator[S3ImageStore]:
    await store.start()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> S3Server:
    return s3_server.with_new_bucket()
