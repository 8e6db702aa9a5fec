"""Deployment files: the Dockerfile, the compose stack, Kubernetes, and nginx run for real.

No container engine is needed. What a container would do is checked where it can be done
outside one: the compose and Kubernetes settings are loaded by the service's own settings
class, the healthcheck commands run against a live proxy, the bucket-creation step runs against
a real S3-compatible server, and deploy/nginx.conf balances two live proxy processes.
"""

from __future__ import annotations

import base64
import inspect
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
import yaml

from sfproxy.cli import _parser, _uvicorn_options
from sfproxy.settings import Settings, load_settings

from .support.nginx import NGINX_CONF, NginxProcess, nginx_binary, start_nginx
from .support.proxy import free_port
from .support.s3 import S3Server

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SERVE = ["sfproxy", "serve", "--host", "0.0.0.0", "--port", "8000"]
MARKDOWN_IMAGE = re.compile(r"!\[image\]\(([^)]+)\)")


def load_all(path: Path) -> list[Any]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def compose() -> dict[str, Any]:
    document = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object under deploy/kubernetes/, by kind (one of each is expected)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in load_all(path):
            if document.get("kind") == "Kustomization":
                continue
            assert document["kind"] not in found, f"two {document['kind']} objects"
            found[document["kind"]] = document
    return found


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}`, as `docker compose` does."""

    def substitute(match: re.Match[str]) -> str:
        name, operator, operand = match["name"], match["op"], match["operand"] or ""
        if variables.get(name):
            return variables[name]
        if operator == ":?":
            raise AssertionError(f"{name} is required but deploy/.env.example lacks it")
        return operand if operator == ":-" else ""

    pattern = r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:-|:\?)(?P<operand>[^}]*))?\}"
    return re.sub(pattern, substitute, value)


def settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a process started with exactly this environment would run with."""
    for name in list(Settings.model_fields) + ["aws_endpoint_url", "aws_default_region"]:
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return load_settings(_env_file=None)


def known_setting(name: str) -> bool:
    fields = {field.upper() for field in Settings.model_fields}
    return name in fields | {"AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"}


# Static checks: every file parses and says what the service needs.


def test_every_yaml_file_parses():
    paths = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
    assert len(paths) >= 7
    for path in paths:
        assert load_all(path), f"{path} is empty"


class Dockerfile:
    """The instructions of each stage, continuation lines joined and comments dropped."""

    def __init__(self, text: str) -> None:
        logical: list[str] = []
        pending = ""
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("#") or not line:
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            logical.append(pending + line)
            pending = ""
        self.arguments: dict[str, str] = {}
        self.stages: list[list[tuple[str, str]]] = []
        for line in logical:
            keyword, _, rest = line.partition(" ")
            keyword = keyword.upper()
            if keyword == "ARG" and not self.stages:
                name, _, default = rest.partition("=")
                self.arguments[name] = default
            if keyword == "FROM":
                self.stages.append([])
            if self.stages:
                self.stages[-1].append((keyword, rest.strip()))

    def final(self, keyword: str) -> list[str]:
        return [rest for key, rest in self.stages[-1] if key == keyword]

    def base_images(self) -> list[str]:
        bases = []
        for stage in self.stages:
            image = stage[0][1].split()[0]
            for name, default in self.arguments.items():
                image = image.replace("${" + name + "}", default)
            bases.append(image)
        return bases

    def exec_form(self, keyword: str) -> list[str]:
        (rest,) = self.final(keyword)
        if keyword == "HEALTHCHECK":
            rest = rest[rest.index("CMD ") + 4 :]
        value = json.loads(rest)
        assert isinstance(value, list)
        return value


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile((ROOT / "Dockerfile").read_text())


def test_dockerfile_builds_a_wheel_on_slim_and_runs_serve_as_a_user(dockerfile):
    assert dockerfile.base_images() == ["python:3.11-slim", "python:3.11-slim"]
    assert any(key == "RUN" and "pip wheel" in rest for key, rest in dockerfile.stages[0])
    # The final stage gets wheels only, never a compiler.
    final_runs = " ".join(dockerfile.final("RUN"))
    assert "--no-index" in final_runs
    assert not re.search(r"\b(gcc|build-essential|apt-get install)\b", final_runs)
    (user,) = dockerfile.final("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert dockerfile.exec_form("CMD") == SERVE
    assert dockerfile.final("EXPOSE") == ["8000"]
    assert dockerfile.final("STOPSIGNAL") == ["SIGTERM"]
    environment = " ".join(dockerfile.final("ENV"))
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "IMAGE_DIR=/data/images"):
        assert setting in environment
    assert "chown" in final_runs and "/data" in final_runs


def test_the_cli_accepts_the_image_command(dockerfile):
    args = _parser().parse_args(dockerfile.exec_form("CMD")[1:])
    assert (args.command, args.host, args.port, args.workers) == ("serve", "0.0.0.0", 8000, 1)


def test_dockerignore_keeps_local_state_and_secrets_out():
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", ".env", "data", "**/__pycache__", ".pytest_cache"} <= patterns
    # What the build copies must stay in the context.
    assert not patterns & {"*", "src", "pyproject.toml", "README.md", "README*"}


def test_compose_runs_nginx_two_proxies_redis_and_minio():
    services = compose()["services"]
    assert {"nginx", "proxy1", "proxy2", "redis", "minio", "minio-init"} <= set(services)
    nginx = services["nginx"]
    assert any(str(port).endswith(":8080") for port in nginx["ports"])
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert nginx["depends_on"] == {
        "proxy1": {"condition": "service_healthy"},
        "proxy2": {"condition": "service_healthy"},
    }
    for name in ("proxy1", "proxy2"):
        proxy = services[name]
        assert proxy["build"] == {"context": "..", "dockerfile": "Dockerfile"}
        environment = proxy["environment"]
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        assert environment["IMAGE_STORE"] == "s3://images/generated"
        assert environment["S3_ENDPOINT_URL"] == "http://minio:9000"
        assert "${SILICONFLOW_API_KEY:?" in environment["SILICONFLOW_API_KEY"]
        assert proxy["depends_on"]["redis"] == {"condition": "service_healthy"}
        assert proxy["depends_on"]["minio-init"] == {"condition": "service_completed_successfully"}
        assert "/readyz" in " ".join(proxy["healthcheck"]["test"])
        grace = float(environment["SHUTDOWN_GRACE_SECONDS"])
        assert float(proxy["stop_grace_period"].removesuffix("s")) > grace
    assert services["minio-init"]["environment"]["BUCKET"] == "images"
    for name in ("redis", "minio"):
        assert services[name]["healthcheck"]["test"]


def test_compose_environment_is_a_configuration_the_service_accepts(monkeypatch):
    variables = env_example()
    for name in ("proxy1", "proxy2"):
        environment = {
            key: interpolate(str(value), variables)
            for key, value in compose()["services"][name]["environment"].items()
        }
        assert all(known_setting(key) for key in environment), environment
        settings = settings_from(environment, monkeypatch)
        assert settings.redis_url is not None
        assert settings.image_store == "s3://images/generated"
        assert settings.public_base_url == "http://localhost:8080"
        assert settings.client_keys
        settings.require_upstream_key()


def test_every_variable_compose_requires_is_in_the_env_example():
    text = (DEPLOY / "compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert {"SILICONFLOW_API_KEY", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"} <= required
    assert required <= set(env_example())


def test_compose_nginx_config_points_at_the_compose_services():
    services = compose()["services"]
    conf = (DEPLOY / "nginx.conf").read_text()
    upstreams = re.findall(r"^\s*server\s+([a-z0-9-]+):8000\b", conf, re.MULTILINE)
    assert upstreams == ["proxy1", "proxy2"]
    assert set(upstreams) <= set(services)
    limit = re.search(r"client_max_body_size\s+(\d+)m;", conf)
    assert limit is not None and float(limit[1]) == Settings.model_fields["max_body_mb"].default


def test_nginx_drops_idle_upstream_connections_before_the_service_does(monkeypatch):
    settings = settings_from({"SILICONFLOW_API_KEY": "sk-test"}, monkeypatch)
    default = inspect.signature(uvicorn.Config).parameters["timeout_keep_alive"].default
    service_idle = _uvicorn_options(settings).get("timeout_keep_alive", default)
    upstream = re.search(r"upstream sfproxy \{(.*?)\n    \}", NGINX_CONF.read_text(), re.DOTALL)
    assert upstream is not None
    idle = re.search(r"keepalive_timeout (\d+)s;", upstream[1])
    assert idle is not None and int(idle[1]) < service_idle


def test_kubernetes_deployment_probes_secrets_and_security(dockerfile, monkeypatch):
    objects = manifests()
    deployment, service = objects["Deployment"], objects["Service"]
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]
    assert (
        pod["metadata"]["labels"].items() >= deployment["spec"]["selector"]["matchLabels"].items()
    )
    (container,) = pod["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8000}
    assert container.get("command", dockerfile.exec_form("CMD")) == SERVE
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}

    secret = objects["Secret"]
    secret_refs = {
        variable["name"]: variable["valueFrom"]["secretKeyRef"]
        for variable in container["env"]
        if "secretKeyRef" in variable.get("valueFrom", {})
    }
    for name in ("SILICONFLOW_API_KEY", "ALLOW_CLIENT_KEYS", "AWS_SECRET_ACCESS_KEY", "REDIS_URL"):
        assert secret_refs[name]["name"] == secret["metadata"]["name"]
        assert secret_refs[name]["key"] in secret["stringData"]
        assert not secret_refs[name].get("optional", False)
    config_map = objects["ConfigMap"]
    (source,) = container["envFrom"]
    assert source["configMapRef"]["name"] == config_map["metadata"]["name"]
    # Nothing secret sits in the ConfigMap, and together they make a valid configuration.
    assert not set(config_map["data"]) & set(secret["stringData"])
    assert all(known_setting(name) for name in [*config_map["data"], *secret_refs])
    settings = settings_from(
        {
            **config_map["data"],
            **{name: secret["stringData"][ref["key"]] for name, ref in secret_refs.items()},
        },
        monkeypatch,
    )
    assert settings.image_store.startswith("s3://")
    assert settings.redis_url is not None

    grace = float(config_map["data"]["SHUTDOWN_GRACE_SECONDS"])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    pause = float(pre_stop[-1]) if pre_stop[0] == "sleep" else 0.0
    assert pod["spec"]["terminationGracePeriodSeconds"] > grace + pause

    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    (user,) = dockerfile.final("USER")
    assert str(pod["spec"]["securityContext"]["runAsUser"]) == user.split(":")[0]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert container["resources"]["requests"]["cpu"]

    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in (*ports, *ports.values())
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()

    # The optional Ingress gives streams and bodies what deploy/nginx.conf gives them.
    annotations = objects["Ingress"]["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert annotations[prefix + "proxy-buffering"] == "off"
    assert annotations[prefix + "proxy-body-size"] == f"{config_map['data']['MAX_BODY_MB']}m"
    backend = objects["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": "http"}}
    assert service_port["name"] == "http"


def test_kubernetes_autoscaler_and_disruption_budget_target_the_deployment():
    objects = manifests()
    deployment = objects["Deployment"]
    target = objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sfproxy"}
    assert deployment["metadata"]["name"] == target["name"]
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["minReplicas"] >= 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()


def test_kustomization_applies_everything_but_the_example_secret():
    (kustomization,) = load_all(KUBERNETES / "kustomization.yaml")
    resources = set(kustomization["resources"])
    assert all((KUBERNETES / resource).exists() for resource in resources)
    assert "secret.example.yaml" not in resources
    assert {"deployment.yaml", "service.yaml", "hpa.yaml", "configmap.yaml"} <= resources
    images = {image["name"] for image in kustomization["images"]}
    assert manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"] in images


# The commands the container engines run, run here against a live proxy.


def run_python_command(command: list[str], port: int) -> subprocess.CompletedProcess[str]:
    assert command[:3] == ["CMD", "python", "-c"] or command[:2] == ["python", "-c"]
    code = command[-1].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)


def test_healthchecks_pass_on_a_live_proxy_and_fail_without_one(dockerfile, proxy):
    port = int(proxy.url.rsplit(":", 1)[1])
    image_check = ["CMD", *dockerfile.exec_form("HEALTHCHECK")]
    compose_check = compose()["services"]["proxy1"]["healthcheck"]["test"]
    for command in (image_check, compose_check):
        assert run_python_command(command, port).returncode == 0
        assert run_python_command(command, free_port()).returncode != 0


def test_bucket_creation_step_against_a_real_s3_server(s3_server: S3Server, tmp_path):
    bucket = f"init-{time.time_ns()}"
    environment = {
        "BUCKET": bucket,
        "S3_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_REGION": s3_server.region,
        "PATH": "/usr/bin:/bin",
    }
    script = [sys.executable, str(DEPLOY / "create_bucket.py")]
    first = subprocess.run(script, env=environment, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "created" in first.stdout
    # Idempotent: compose runs it on every `up`.
    again = subprocess.run(
        script,
        env={**environment, "PUBLIC_READ_PREFIX": "generated/"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stderr
    assert "exists" in again.stdout
    policy = httpx.get(f"{s3_server.endpoint_url}/{bucket}?policy", timeout=10)
    assert policy.status_code == 200
    statement = policy.json()["Statement"][0]
    assert statement["Resource"] == [f"arn:aws:s3:::{bucket}/generated/*"]
    missing = subprocess.run(
        script, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2


# nginx with deploy/nginx.conf in front of two live proxy processes sharing one S3 bucket.


@pytest.fixture(scope="module")
def nginx_path() -> str:
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (Debian package `nginx`): deploy/nginx.conf not run")
    return binary


@pytest.fixture(scope="module")
def instances(start, s3_server: S3Server) -> list[str]:
    """Two proxy processes sharing one bucket, as compose's proxy1 and proxy2: their addresses."""
    bucket = s3_server.with_new_bucket()
    shared = {**bucket.env("generated"), "STREAM_KEEPALIVE_SECONDS": "0.25"}
    # Different environments, so `start` gives two processes; started side by side.
    with ThreadPoolExecutor(2) as pool:
        started = list(
            pool.map(lambda name: start(SFPROXY_INSTANCE=name, **shared), ("proxy1", "proxy2"))
        )
    return [instance.url.removeprefix("http://") for instance in started]


@pytest.fixture(scope="module")
def balanced(
    nginx_path: str, instances: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[NginxProcess, list[str]]]:
    nginx = start_nginx(
        nginx_path,
        {"proxy1": instances[0], "proxy2": instances[1]},
        tmp_path_factory.mktemp("nginx"),
    )
    yield nginx, instances
    nginx.stop()


def test_health_through_the_load_balancer(balanced):
    nginx, _ = balanced
    assert httpx.get(nginx.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(nginx.url + "/readyz").status_code == 200
    assert httpx.get(nginx.url + "/nginx-health").text == "ok\n"


def test_requests_are_spread_over_both_instances_and_carry_a_request_id(balanced):
    nginx, addresses = balanced
    ids = []
    with httpx.Client(base_url=nginx.url) as http:
        for _ in range(6):
            response = http.get("/v1/models")
            assert response.status_code == 200
            ids.append(response.headers["x-request-id"])
        kept = http.get("/v1/models", headers={"X-Request-ID": "client-chosen-id-1"})
    assert kept.headers["x-request-id"] == "client-chosen-id-1"
    # nginx made the ids the service echoed, and logged them with the instance that answered.
    lines = {line.rsplit("request_id=", 1)[1]: line for line in nginx.access_log()}
    assert all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in ids)
    served_by = {re.search(r"upstream=(\S+)", lines[request_id])[1] for request_id in ids}
    assert served_by == set(addresses)


def stream_chat(url: str, body: dict[str, Any]) -> list[tuple[float, str]]:
    lines: list[tuple[float, str]] = []
    started = time.monotonic()
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line:
                lines.append((time.monotonic() - started, line))
    return lines


def test_a_streamed_chat_is_not_buffered_and_its_image_is_served_by_any_instance(balanced, fake):
    nginx, _ = balanced
    fake.configure(latency=2.0)
    lines = stream_chat(
        nginx.url,
        {
            "model": "Qwen/Qwen-Image",
            "stream": True,
            "messages": [{"role": "user", "content": "a lighthouse through nginx"}],
        },
    )
    first_at, first = lines[0]
    assert first.startswith("data: ") and first_at < 1.0
    keepalives = [at for at, line in lines if line == ": keepalive"]
    # Keepalives arrive while the generation runs, not in one burst at its end.
    assert len(keepalives) >= 3 and keepalives[0] < 1.0
    assert lines[-1][1] == "data: [DONE]" and lines[-1][0] >= 1.9
    content = "".join(
        orjson.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for _, line in lines
        if line.startswith("data: {") and orjson.loads(line[6:])["choices"]
    )
    (link,) = MARKDOWN_IMAGE.findall(content)
    assert link.startswith(nginx.url + "/v1/files/images/")
    # Either instance serves it: the image store is shared.
    for _ in range(4):
        image = httpx.get(link)
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"


def test_image_links_follow_the_address_nginx_was_reached_at(balanced, fake):
    nginx, _ = balanced
    body = {"model": "Qwen/Qwen-Image", "prompt": "links", "response_format": "url"}
    plain = httpx.post(nginx.url + "/v1/images/generations", json=body, timeout=30)
    assert plain.json()["data"][0]["url"].startswith(nginx.url + "/v1/files/images/")
    # A client's own forwarding headers are replaced by nginx's, which come from the request.
    renamed = httpx.post(
        nginx.url + "/v1/images/generations",
        json=body,
        headers={
            "Host": "images.example.test:8443",
            "X-Forwarded-Host": "attacker.example",
            "X-Forwarded-Proto": "https",
        },
        timeout=30,
    )
    url = renamed.json()["data"][0]["url"]
    assert url.startswith("http://images.example.test:8443/v1/files/images/")


def test_a_twenty_megabyte_chat_history_passes(balanced, fake):
    nginx, _ = balanced
    picture = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * (15 * 1024 * 1024)).decode()
    body = {
        "model": "Qwen/Qwen-Image",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "an earlier turn"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{picture}"}},
                ],
            },
            {"role": "assistant", "content": "![image](https://example.com/earlier.png)"},
            {"role": "user", "content": "the latest turn"},
        ],
    }
    payload = orjson.dumps(body)
    assert len(payload) > 20 * 1000 * 1000
    response = httpx.post(
        nginx.url + "/v1/chat/completions",
        content=payload,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert fake.requests[-1].body["prompt"] == "the latest turn"


def test_a_body_over_the_limit_gets_an_openai_error_from_nginx(balanced):
    nginx, _ = balanced
    response = httpx.post(
        nginx.url + "/v1/chat/completions",
        content=b"x" * (33 * 1024 * 1024),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_an_instance_that_is_down_is_skipped(nginx_path, instances, tmp_path, fake):
    nginx = start_nginx(
        nginx_path, {"proxy1": instances[0], "proxy2": f"127.0.0.1:{free_port()}"}, tmp_path
    )
    try:
        body = {"model": "Qwen/Qwen-Image", "prompt": "failover", "response_format": "url"}
        for _ in range(4):
            response = httpx.post(nginx.url + "/v1/images/generations", json=body, timeout=30)
            assert response.status_code == 200
    finally:
        nginx.stop()
    # nginx tried the dead one, and answered from the live one every time.
    assert "Connection refused" in nginx.error_log()
    assert len(fake.requests) == 4


def test_no_instance_up_is_an_openai_error_clients_may_retry(nginx_path, tmp_path):
    dead = {"proxy1": f"127.0.0.1:{free_port()}", "proxy2": f"127.0.0.1:{free_port()}"}
    nginx = start_nginx(nginx_path, dead, tmp_path)
    try:
        response = httpx.post(nginx.url + "/v1/images/generations", json={"prompt": "x"})
    finally:
        nginx.stop()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"]["code"] == "service_unavailable"


def test_a_load_balancer_timeout_tells_sdks_not_to_retry(nginx_path, instances, tmp_path, fake):
    fake.configure(latency=1.5)
    nginx = start_nginx(
        nginx_path,
        {"proxy1": instances[0], "proxy2": instances[1]},
        tmp_path,
        changes={"proxy_read_timeout 1200s;": "proxy_read_timeout 500ms;"},
    )
    try:
        response = httpx.post(
            nginx.url + "/v1/images/generations",
            json={"model": "Qwen/Qwen-Image", "prompt": "slow"},
            timeout=30,
        )
    finally:
        nginx.stop()
    assert response.status_code == 504
    # The generation may have gone ahead: OpenAI SDKs must not pay for it twice.
    assert response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["code"] == "timeout"
