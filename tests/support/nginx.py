"""The load balancer of deploy/compose.yml, run for real: nginx with deploy/nginx.conf on loopback.

`render_config` rewrites only what differs outside a container: the upstream addresses, the
listening port, where logs, the pid file and temporary files go, and (as root) the user of the
worker processes. Everything else is the shipped file, so the tests check what users run.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .proxy import free_port, stop_process, wait_until_serving

NGINX_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
# deploy/compose.yml's names for the instances and the port nginx listens on in its container.
UPSTREAM_SERVER = re.compile(r"^(\s*server\s+)(proxy\d+):8000\b", re.MULTILINE)
LISTEN = re.compile(r"^(\s*listen\s+)8080;", re.MULTILINE)


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def render_config(
    upstreams: dict[str, str], port: int, workdir: Path, changes: dict[str, str] | None = None
) -> str:
    """deploy/nginx.conf with `server proxyN:8000` replaced by `upstreams["proxyN"]`.

    `changes` replaces other text of the file (e.g. a shorter timeout); each must be found.
    """
    text = NGINX_CONF.read_text()
    for old, new in (changes or {}).items():
        if old not in text:
            raise ValueError(f"nginx.conf no longer contains {old!r}")
        text = text.replace(old, new)
    names = {match[2] for match in UPSTREAM_SERVER.finditer(text)}
    if names != set(upstreams):
        raise ValueError(f"nginx.conf names the instances {sorted(names)}, not {sorted(upstreams)}")
    text = UPSTREAM_SERVER.sub(lambda match: match[1] + upstreams[match[2]], text)
    text, listens = LISTEN.subn(rf"\g<1>127.0.0.1:{port};", text)
    if listens != 1:
        raise ValueError("nginx.conf no longer has exactly one `listen 8080;`")
    text = text.replace("access_log /dev/stdout", f"access_log {workdir / 'access.log'}")
    text = text.replace("error_log /dev/stderr", f"error_log {workdir / 'error.log'}")
    temp_paths = "".join(
        f"    {directive} {workdir / 'temp' / name};\n"
        for directive, name in (
            ("client_body_temp_path", "body"),
            ("proxy_temp_path", "proxy"),
            ("fastcgi_temp_path", "fastcgi"),
            ("uwsgi_temp_path", "uwsgi"),
            ("scgi_temp_path", "scgi"),
        )
    )
    text = text.replace("http {\n", "http {\n" + temp_paths, 1)
    head = f"pid {workdir / 'nginx.pid'};\ndaemon off;\n"
    if os.geteuid() == 0:
        # Workers would otherwise drop to `nobody`, who cannot use the test's private tmp dir.
        head += f"user {pwd.getpwuid(os.geteuid()).pw_name};\n"
    return head + text


@dataclass
class NginxProcess:
    url: str
    process: subprocess.Popen[bytes]
    workdir: Path

    def access_log(self) -> list[str]:
        path = self.workdir / "access.log"
        return path.read_text().splitlines() if path.exists() else []

    def error_log(self) -> str:
        path = self.workdir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        # SIGTERM is nginx's fast shutdown: the tests have no requests left in flight.
        stop_process(self.process, timeout)


def start_nginx(
    binary: str,
    upstreams: dict[str, str],
    workdir: Path,
    changes: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> NginxProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "temp").mkdir(exist_ok=True)
    port = free_port()
    config = workdir / "nginx.conf"
    config.write_text(render_config(upstreams, port, workdir, changes))
    checked = subprocess.run(
        [binary, "-t", "-q", "-c", str(config), "-p", str(workdir), "-e", "stderr"],
        capture_output=True,
        text=True,
    )
    if checked.returncode != 0:
        raise RuntimeError(f"nginx rejects the rendered config:\n{checked.stderr}")
    with open(workdir / "stderr.log", "wb") as stderr:
        process = subprocess.Popen(
            [binary, "-c", str(config), "-p", str(workdir), "-e", "stderr"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    nginx = NginxProcess(url=f"http://127.0.0.1:{port}", process=process, workdir=workdir)
    wait_until_serving(
        nginx.url + "/nginx-health",
        process,
        name="nginx",
        log=lambda: (workdir / "stderr.log").read_text(errors="replace") + nginx.error_log(),
        timeout=timeout,
    )
    return nginx
