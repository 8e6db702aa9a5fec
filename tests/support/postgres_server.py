"""A throwaway PostgreSQL (Debian's `postgresql` package) on a free loopback port, for the tests
(`postgres.py` holds their fixtures) and the benchmark (`bench/ledger_scenario.py`): no pytest here.

PostgreSQL refuses to run as root, so as root (CI machines are) the server runs as the
package's `postgres` user, in a directory that user owns.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_names = itertools.count(1)


def _free_port() -> int:
    # Not tests/support/proxy.py's: that one needs httpx, which the benchmark does not install.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin_dir() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed (Debian package postgresql; .ci/run installs it)"
        )
    return Path(found[-1]).parent


def _as_owner(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@dataclass
class PostgresServer:
    port: int
    bin_dir: Path
    workdir: Path
    process: subprocess.Popen[bytes]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def run(self, tool: str, *args: str) -> str:
        command = [str(self.bin_dir / tool), "-h", "127.0.0.1", "-p", str(self.port)]
        done = subprocess.run(
            [*command, "-U", "postgres", *args], capture_output=True, text=True, timeout=30
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr.strip()}")
        return done.stdout

    def create_database(self) -> str:
        """A new, empty database's URL."""
        name = f"test_{os.getpid()}_{next(_names)}"
        self.run("createdb", name)
        return self.url(name)

    def psql(self, database_url: str, sql: str) -> str:
        """Rows of `sql`, tab-separated, as psql prints them unaligned."""
        database = database_url.rsplit("/", 1)[1]
        return self.run("psql", "-d", database, "-At", "-F", "\t", "-c", sql)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_postgres(pin: Sequence[str] = ()) -> PostgresServer:
    """A fresh cluster, started; `pin` prefixes the server's command (the benchmark's taskset)."""
    bin_dir = _bin_dir()
    # Not under pytest's tmp directory: as root that is closed to the postgres user.
    workdir = Path(tempfile.mkdtemp(prefix="sfproxy-pg-"))
    workdir.chmod(0o755)
    data = workdir / "data"
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres", "postgres")
    subprocess.run(
        _as_owner(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
            + ["-E", "UTF8", "--no-sync", "--no-instructions"]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = _free_port()
    settings = {
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(workdir),
        # Throwaway data: durability only slows the tests down.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
    }
    options = [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]
    process = subprocess.Popen(
        [*pin, *_as_owner([str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), *options])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = PostgresServer(port=port, bin_dir=bin_dir, workdir=workdir, process=process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready = subprocess.run(
            [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"], timeout=10
        )
        if ready.returncode == 0:
            return server
        if process.poll() is not None:
            break
        time.sleep(0.1)
    server.stop()
    raise RuntimeError("PostgreSQL did not start")
