"""Commands: `serve` (production), `demo` (with the built-in fake SiliconFlow), `check-config`,
`upstream` (the SiliconFlow accounts and keys, as SiliconFlow sees them now), `mcp` (the MCP
tools over stdio, `cli_mcp.py`); `keys` and `db` are in cli_keys.py."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import SecretStr

from . import __version__, cli_keys
from .cli_mcp import add_parser as add_mcp_parser
from .cli_usage import add_usage_command
from .errors import ProxyError
from .links import link_warning
from .observability import configure_logging
from .server import GuardedHttpToolsProtocol
from .setting_values import ConfigError, mask
from .settings import Settings, load_settings

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
    except ConfigError as exc:
        print(f"sfproxy: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sfproxy",
        description="SiliconFlow image models behind an OpenAI-compatible API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the production server")
    serve.add_argument(
        "--host", default=os.environ.get("HOST", "0.0.0.0"), help="address (HOST, 0.0.0.0)"
    )
    serve.add_argument("--port", type=int, default=_env_int("PORT", 8000), help="port (PORT, 8000)")
    serve.add_argument(
        "--workers",
        type=int,
        default=_env_int("WORKERS", 1),
        help="worker processes (WORKERS, 1); see the README on scaling",
    )
    serve.set_defaults(handler=_serve)

    demo = commands.add_parser(
        "demo", help="run the server against the built-in fake SiliconFlow (no key needed)"
    )
    demo.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    demo.add_argument(
        "--latency", type=float, default=1.0, help="seconds the fake takes per image (1.0)"
    )
    demo.set_defaults(handler=_demo)

    check = commands.add_parser(
        "check-config", help="validate the environment and print the effective configuration"
    )
    check.set_defaults(handler=_check_config)

    upstream = commands.add_parser(
        "upstream", help="probe the SiliconFlow keys: accounts, key states, balances"
    )
    upstream.add_argument("--json", action="store_true", help="print JSON")
    upstream.set_defaults(handler=_upstream)

    add_usage_command(commands)

    fake = commands.add_parser(
        "fake-upstream", help="run only the built-in fake SiliconFlow (for tests and benchmarks)"
    )
    fake.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    fake.add_argument("--latency", type=float, default=0.0, help="seconds per generation")
    fake.add_argument("--api-key", default=None, help="the key it accepts (default: any)")
    fake.add_argument(
        "--max-render-side", type=int, default=None, help="cap image sides to cut rendering cost"
    )
    fake.add_argument(
        "--image-min-bytes", type=int, default=0, help="pad each image to at least this size"
    )
    fake.set_defaults(handler=_fake_upstream)
    cli_keys.register(commands)
    add_mcp_parser(commands)
    return parser


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit():
        raise SystemExit(f"sfproxy: {name} must be a whole number, not {value!r}")
    return int(value)


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "loop": "uvloop",
        # httptools, with read deadlines and the connection limit (settings from the app).
        "http": GuardedHttpToolsProtocol,
        # Connections the kernel queues before uvicorn accepts them (capped by
        # net.core.somaxconn): room for a burst twice the benchmark's held load of 2,000.
        "backlog": 4096,
        # Our own request log replaces uvicorn's access log.
        "access_log": False,
        "log_config": None,
        "server_header": False,
        # On SIGTERM uvicorn stops accepting, then lets requests in flight finish this long.
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
        # A load balancer reusing a connection the server is closing gets a 502 on a POST.
        "timeout_keep_alive": settings.http_keepalive_seconds,
        # X-Forwarded-* is read by the app itself, from FORWARDED_ALLOW_IPS only (`links.py`).
        "proxy_headers": False,
    }


def raise_open_file_limit() -> None:
    """Every concurrent generation holds a client and an upstream socket: lift the soft limit
    (often 1024) to the hard one, so thousands of them do not fail with EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


def _serve(args: argparse.Namespace) -> int:
    # Worker processes read their settings from the environment: they learn --host from it.
    os.environ["HOST"] = args.host
    settings = load_settings(host=args.host)
    settings.require_upstream_key()
    configure_logging(settings.log_level, settings.log_format)
    raise_open_file_limit()
    options = _uvicorn_options(settings)
    if args.workers > 1:
        # Each worker counts its own metrics; prometheus-client merges them from files here.
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            try:
                directory = tempfile.mkdtemp(prefix="sfproxy-metrics-")
            except OSError as exc:
                raise ConfigError(
                    f"--workers needs a writable temporary directory for the workers' merged "
                    f"metrics ({exc.strerror}): set TMPDIR or PROMETHEUS_MULTIPROC_DIR to one."
                ) from None
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        # Each worker process builds its own app (and settings) from the same environment.
        uvicorn.run(
            "sfproxy.app:app_factory",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            **options,
        )
    else:
        from .app import create_app

        uvicorn.run(create_app(settings), host=args.host, port=args.port, **options)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .app import create_app
    from .fake_upstream import FakeSiliconFlow

    environment = load_settings()
    fake = FakeSiliconFlow(latency=args.latency)
    fake_base = fake.start()
    overrides: dict[str, Any] = {"sf_base": fake_base, "siliconflow_api_key": fake.config.api_key}
    if "image_dir" not in environment.model_fields_set:
        # Demo images are kept apart from the ones a real deployment makes.
        overrides["image_dir"] = "./data/demo-images"
    settings = load_settings(**overrides)
    configure_logging(settings.log_level, "text")
    print(demo_banner(settings, args.port), flush=True)
    try:
        uvicorn.run(
            create_app(settings), host="127.0.0.1", port=args.port, **_uvicorn_options(settings)
        )
    finally:
        fake.stop()
    return 0


def demo_banner(settings: Settings, port: int) -> str:
    base = f"http://127.0.0.1:{port}"
    if settings.client_keys:
        key_note = "one of your ALLOW_CLIENT_KEYS"
        auth = ' \\\n     -H "Authorization: Bearer $YOUR_PROXY_KEY"'
    else:
        key_note = "none needed (no ALLOW_CLIENT_KEYS set); any value works in clients"
        auth = ""
    rule = "=" * 78
    return f"""{rule}
 siliconflow-img-proxy DEMO: images come from the built-in fake SiliconFlow
 (gradients with your prompt written on them), not from real models.
 For real images: set SILICONFLOW_API_KEY and run `sfproxy serve` (or `make run`).

 Playground:       {base}/   (open it in a browser)
 OpenAI base URL:  {base}/v1
 API key:          {key_note}
 Models:           {", ".join(spec.id for spec in settings.catalogue.listed)}

 Try it:
   curl {base}/v1/images/generations \\
     -H "Content-Type: application/json"{auth} \\
     -d '{{"model": "Qwen/Qwen-Image", "prompt": "a red panda reading a book", "n": 2}}'
{rule}"""


def _check_config(args: argparse.Namespace) -> int:
    settings = load_settings()
    shown = describe_settings(settings)
    width = max(len(name) for name in shown)
    for name, value in shown.items():
        print(f"{name:<{width}}  {value}")
    settings.require_upstream_key()
    warning = link_warning(settings)
    if warning is not None:
        print(f"\nwarning: {warning}")
    print("\nconfiguration is valid")
    return 0


def describe_settings(settings: Settings) -> dict[str, Any]:
    """The effective configuration, every secret masked, as `check-config` prints it."""
    shown: dict[str, Any] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if name in (
            "allow_client_key",
            "allow_client_keys",
            "access_token",
            "access_tokens",
            "access_keys",
            "siliconflow_api_keys",
            "admin_keys",
        ):
            continue
        if isinstance(value, SecretStr):
            value = mask(value.get_secret_value()) if value.get_secret_value() else None
        elif isinstance(value, Path):
            value = str(value)
        shown[name.upper()] = value
    shown["admin keys"] = [mask(key) for key in settings.admin_key_list] or "none (/admin off)"
    shown["upstream keys"] = [mask(key) for key in settings.upstream_keys] or "none"
    shown["client keys"] = [
        mask(key) for key in settings.client_keys
    ] or "none (public unless the database holds keys)"
    shown["site"] = settings.site
    shown["models"] = [spec.id for spec in settings.catalogue.listed]
    shown["model aliases"] = {
        alias: settings.catalogue.resolve(alias, edit=False) for alias in settings.catalogue.aliases
    }
    shown["video models"] = list(settings.video_models.ids)
    shown["IMAGES_RESPONSE_FORMAT"] = settings.images_default_format
    shown["CHAT_RESPONSE_FORMAT"] = settings.chat_default_format
    return shown


def _upstream(args: argparse.Namespace) -> int:
    """Exit 0 when some key is usable, 1 when none is."""
    settings = load_settings()
    settings.require_upstream_key()
    snapshot = asyncio.run(_probe_upstream(settings))
    if args.json:
        print(json.dumps(snapshot, indent=2))
    else:
        print(upstream_report(snapshot))
    states = [key["state"] for account in snapshot["accounts"] for key in account["keys"]]
    return 0 if "ok" in states else 1


async def _probe_upstream(settings: Settings) -> dict[str, Any]:
    from .siliconflow import SiliconFlowClient
    from .upstream_keys import KeyPool
    from .upstream_report import pool_snapshot

    keys = KeyPool(settings.upstream_keys, site=settings.site)
    client = SiliconFlowClient(
        settings.sf_base, keys, connect_timeout=settings.upstream_connect_timeout
    )
    async with client:
        await keys.probe_all(client.user_info)
        snapshot = await pool_snapshot(keys)
        try:
            snapshot["models"] = {"account": await client.list_models()}
        except ProxyError as exc:
            snapshot["models"] = {"account": None, "error": exc.message}
        return snapshot


def upstream_report(snapshot: dict[str, Any]) -> str:
    accounts = snapshot["accounts"]
    keys = sum(len(account["keys"]) for account in accounts)
    lines = [f"SiliconFlow ({snapshot['site']}): {keys} key(s) in {len(accounts)} account(s)"]
    for account in accounts:
        balance = account["balance"]
        lines.append(
            f"{account['account']}  balance {'unknown' if balance is None else f'{balance:.2f}'}"
            f"{'' if account['grouped'] else '  (account unknown)'}"
        )
        for key in account["keys"]:
            reasons = f" ({', '.join(key['reasons'])})" if key["reasons"] else ""
            lines.append(f"  {key['label']}  {key['state']}{reasons}")
    models = snapshot.get("models", {})
    if models.get("account") is not None:
        lines.append(f"image models of the account: {', '.join(models['account']) or 'none'}")
    elif "error" in models:
        lines.append(f"image models of the account: unknown ({models['error']})")
    return "\n".join(lines)


def _fake_upstream(args: argparse.Namespace) -> int:
    from .fake_upstream import run_fake_upstream

    run_fake_upstream(
        port=args.port,
        latency=args.latency,
        api_key=args.api_key,
        max_render_side=args.max_render_side,
        image_min_bytes=args.image_min_bytes,
    )
    return 0
