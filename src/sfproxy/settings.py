"""Typed settings, read once from the environment and an optional `.env`, then passed in.

`Settings` holds every setting, its validation and the views derived from it (the catalogue,
prices, merged key lists, ...); `load_settings` builds it and turns any error into one
`ConfigError`. The parsers and value types behind the fields are in setting_values.py.

The names users already deploy with (`SILICONFLOW_API_KEY`, `SF_BASE`, `ALLOW_CLIENT_KEYS`,
`MODELS_JSON`, ...) are a contract; new settings get defaults that suit one small VPS.
"""

from __future__ import annotations

from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .aliases import parse_aliases
from .catalogue import SITE_HOSTS, Catalogue, ModelSpec, Site
from .images import DEFAULT_QUALITY
from .prices import Prices
from .setting_values import (
    ClientQuota,
    ConfigError,
    ModelPacing,
    base_url,
    check_networks,
    image_store_kind,
    merged_keys,
    parse_client_quotas,
    parse_model_entries,
    parse_model_pacing,
    parse_prices,
    split_list,
    split_patterns,
)
from .video_models import VideoModels


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    siliconflow_api_key: SecretStr | None = None
    # More keys (comma or whitespace), merged with SILICONFLOW_API_KEY: see upstream_keys.py.
    siliconflow_api_keys: SecretStr | None = None
    # How often keys taken out (401, 403, no balance) are probed again with /user/info.
    upstream_probe_seconds: float = Field(default=300.0, gt=0)
    # How long an account rests after a 429 that gave no Retry-After.
    upstream_key_cooldown_seconds: float = Field(default=10.0, ge=0)
    # With several keys: how often each account's balance is read, and the level to warn at.
    balance_refresh_seconds: float = Field(default=600.0, gt=0)
    low_balance_warning: float | None = Field(default=None, ge=0)
    sf_base: str = "https://api.siliconflow.cn/v1"
    # cn or com; unset: from SF_BASE's host (`site`).
    sf_site: Literal["cn", "com"] | None = None
    # Re-read the account's image models this often (0: only at start).
    model_refresh_seconds: float = Field(default=3600.0, ge=0)
    provider_label: str = "SiliconFlow"

    # Proxy access keys. All five names are merged; each holds one or more keys.
    allow_client_key: SecretStr | None = None
    allow_client_keys: SecretStr | None = None
    access_token: SecretStr | None = None
    access_tokens: SecretStr | None = None
    access_keys: SecretStr | None = None

    models_json: str | None = None
    models: str | None = None
    # `{"alias": "model"}` or `alias=model` pairs, over the built-in aliases (catalogue.py).
    model_aliases: str | None = None
    list_model_aliases: bool = False
    # The default text-to-video model (video_models.py); unset: the site's first.
    video_model: str | None = None

    parallel_calls: int = Field(default=4, ge=1, le=64)
    upstream_connect_timeout: float = Field(default=10.0, gt=0)
    upstream_timeout: float = Field(default=300.0, gt=0)
    upstream_retries: int = Field(default=2, ge=0, le=10)
    # Retry generations that may already have been made and billed (timeouts, connections
    # lost after sending, 500/502/504). Off: SiliconFlow bills every image it makes.
    upstream_retry_unsure: bool = False
    # One deadline per request for queueing, every attempt and every back-off together:
    # below Cloudflare's 100 s and the 120 s many client libraries and proxies allow.
    request_timeout_seconds: float = Field(default=90.0, gt=0)
    # How long the images of a request whose client left wait for an identical retry.
    handover_seconds: float = Field(default=300.0, ge=0)
    # 0: as many connections as calls in flight. A cap queues calls inside aiohttp, where the
    # pacing settings below cannot see or bound the wait.
    upstream_max_connections: int = Field(default=0, ge=0)
    max_body_mb: float = Field(default=32.0, gt=0)
    max_image_mb: float = Field(default=10.0, gt=0)
    # Input images are refused above this many pixels, read from the header before decoding.
    max_input_pixels: int = Field(default=40_000_000, ge=1)
    max_chat_messages: int = Field(default=1000, ge=1)
    cors_origins: Annotated[list[str], NoDecode] = Field(default=["*"])
    # The answer's format when a request names none. DEFAULT_RESPONSE_FORMAT (the original's
    # name) sets both, unless the specific setting is set: see `images_default_format`.
    default_response_format: Literal["url", "b64_json"] = "url"
    images_response_format: Literal["auto", "url", "b64_json"] | None = None
    chat_response_format: Literal["url", "b64_json"] | None = None
    stream_keepalive_seconds: float = Field(default=15.0, gt=0)
    chat_progress: Literal["off", "reasoning"] = "off"
    # Chat clients' background prompts (titles, tags, ...) answered without an image (tasks.py).
    chat_tasks: Literal["answer", "generate"] = "answer"
    chat_task_patterns: Annotated[list[str], NoDecode] = Field(default=[])
    # MCP tool results: image blocks as made, downscaled previews, or links only (mcp_server.py).
    mcp_image_content: Literal["full", "thumbnail", "off"] = "thumbnail"
    mcp_thumbnail_size: int = Field(default=512, ge=16, le=4096)

    public_base_url: str | None = None
    # The address `serve` listens on (its --host); links need PUBLIC_BASE_URL beyond loopback.
    host: str = "0.0.0.0"
    image_store: str = "local"
    image_dir: Path = Path("./data/images")
    image_public_base_url: str | None = None
    image_retention_days: float | None = Field(default=None, gt=0)
    # The format of answered images when a request names no `output_format` (keep: as
    # SiliconFlow made them), and the JPEG/WebP quality when it names no `output_compression`.
    image_format: Literal["keep", "png", "jpeg", "webp"] = "keep"
    image_compression: int = Field(default=DEFAULT_QUALITY, ge=0, le=100)
    s3_endpoint_url: str | None = Field(
        default=None, validation_alias=AliasChoices("s3_endpoint_url", "aws_endpoint_url")
    )
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    aws_region: str | None = Field(
        default=None, validation_alias=AliasChoices("aws_region", "aws_default_region")
    )

    # Pacing of upstream calls per model, and client limits; 0 means no limit.
    upstream_max_in_flight: int = Field(default=0, ge=0)
    upstream_images_per_minute: int = Field(default=0, ge=0)
    model_limits: str | None = None
    queue_timeout: float = Field(default=60.0, ge=0)
    # After a call met 503 through all its retries, leave the model alone this long (0: never).
    upstream_cooldown_seconds: float = Field(default=10.0, ge=0)
    client_rpm: int = Field(default=0, ge=0)
    client_images_per_day: int = Field(default=0, ge=0)
    # Spend per key per UTC day and month, in the site's currency (budgets.py); unset: none.
    client_daily_budget: Decimal | None = Field(default=None, ge=0, decimal_places=6)
    client_monthly_budget: Decimal | None = Field(default=None, ge=0, decimal_places=6)
    client_limits: SecretStr | None = None
    redis_url: SecretStr | None = None
    # Client keys and the usage ledger: sqlite:///PATH or postgresql://…; unset, a SQLite file
    # beside the image directory (`database_target`).
    database_url: SecretStr | None = None
    # How often each instance reloads the database's client keys: a revoked key works at most
    # this much longer (plus the load's own time).
    keys_refresh_seconds: float = Field(default=2.0, gt=0, le=3600)
    # `{"model": price per image}` in the site's currency, over the built-in table (prices.py).
    prices_json: str | None = None
    ledger_retention_days: int | None = Field(default=None, gt=0)
    # Ledger records held in memory while the database is slow or unreachable (ledger.py).
    ledger_buffer: int = Field(default=10000, ge=1)
    # "off" writes no ledger records (the spend metrics still count): for an operator who wants
    # no record of requests, and the benchmark's baseline for what the ledger costs.
    ledger: Literal["on", "off"] = "on"
    # Video jobs (jobs/): the first status poll after a submit and the back-off's start, its
    # ceiling, how long a job may take in all, the largest MP4 downloaded, and how long a
    # poller's claim on a job lasts when its instance stops renewing it (it died).
    video_poll_seconds: float = Field(default=5.0, gt=0)
    video_poll_max_seconds: float = Field(default=30.0, gt=0)
    video_timeout_seconds: float = Field(default=3600.0, gt=0)
    video_max_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    video_lease_seconds: float = Field(default=60.0, ge=1)

    metrics_token: SecretStr | None = None
    # Keys for /admin/... (commas/whitespace), distinct from client keys; none: /admin is 404.
    admin_keys: SecretStr | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    log_prompt_chars: int = Field(default=100, ge=0)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    # Longer than load balancers keep idle connections (AWS ALB: 60 s), so they close first.
    http_keepalive_seconds: float = Field(default=75.0, gt=0)
    # Slowloris holds a connection by never finishing its request: the headers must arrive this
    # soon, and a body then at least this fast (`server.py`).
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_min_bytes_per_second: int = Field(default=1024, gt=0)
    # 0: a third of the open-file limit, since each connection may also hold upstream sockets.
    max_connections: int = Field(default=0, ge=0)
    # Peers whose X-Forwarded-For uvicorn believes (its own default: loopback only).
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(default=["127.0.0.1", "::1"])
    # Below this much free space on IMAGE_DIR's file system, /readyz says not ready.
    min_free_disk_mb: float = Field(default=100.0, ge=0)
    # Swagger UI loads its scripts from a CDN, on the origin where the playground keeps its key.
    docs_enabled: bool = False

    @field_validator("sf_base", "public_base_url", "image_public_base_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str | None) -> str | None:
        return base_url(value)

    @field_validator("cors_origins", "forwarded_allow_ips", mode="before")
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        return split_list(value) if isinstance(value, str) else value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _check_addresses(cls, value: list[str]) -> list[str]:
        return check_networks(value)

    @field_validator("chat_task_patterns", mode="before")
    @classmethod
    def _split_patterns(cls, value: Any) -> Any:
        return split_patterns(value) if isinstance(value, str) else value

    @field_validator(
        "log_level", "log_format", "chat_progress", "chat_tasks", "mcp_image_content", mode="before"
    )
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("sf_site", mode="before")
    @classmethod
    def _site_name(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return value.strip().lower().removeprefix(".") or None

    @field_validator("image_format", mode="before")
    @classmethod
    def _format_name(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        value = value.strip().lower()
        return "jpeg" if value == "jpg" else value or "keep"

    @field_validator("image_store")
    @classmethod
    def _store_kind(cls, value: str) -> str:
        return image_store_kind(value)

    @model_validator(mode="after")
    def _parse_json_settings(self) -> Settings:
        # Touching the properties parses the JSON settings now, so a bad value stops the start.
        _ = self.model_entries, self.model_pacing, self.client_overrides, self.catalogue
        _ = self.prices, self.video_models
        if set(self.admin_key_list) & set(self.client_keys):
            # A client must never reach /admin, so no key may be both.
            raise ValueError("ADMIN_KEYS must differ from every client key (ALLOW_CLIENT_KEYS)")
        return self

    @property
    def images_default_format(self) -> Literal["auto", "url", "b64_json"]:
        """The images API's format for a request that names none ("auto": the README's rule)."""
        if self.images_response_format is not None:
            return self.images_response_format
        if "default_response_format" in self.model_fields_set:
            return self.default_response_format
        return "auto"

    @property
    def chat_default_format(self) -> Literal["url", "b64_json"]:
        return self.chat_response_format or self.default_response_format

    @cached_property
    def alias_entries(self) -> dict[str, str | None]:
        """MODEL_ALIASES: alias to model; None (an empty target or JSON null) switches one off."""
        return parse_aliases(self.model_aliases)

    @cached_property
    def model_pacing(self) -> dict[str, ModelPacing]:
        """MODEL_LIMITS: per-model upstream caps, over the UPSTREAM_* defaults."""
        return parse_model_pacing(self.model_limits)

    @cached_property
    def client_overrides(self) -> dict[str, ClientQuota]:
        """CLIENT_LIMITS: per-key limits (by key or key label), over the CLIENT_* defaults."""
        raw = self.client_limits.get_secret_value() if self.client_limits else None
        return parse_client_quotas(raw)

    @cached_property
    def model_entries(self) -> list[ModelSpec | str]:
        return parse_model_entries(self.models_json, self.models)

    @property
    def site(self) -> Site:
        """The SiliconFlow site: SF_SITE, else `com` for a siliconflow.com host, else `cn`."""
        if self.sf_site is not None:
            return self.sf_site
        host = (urlsplit(self.sf_base).hostname or "").lower()
        com = SITE_HOSTS["com"]
        return "com" if host == com or host.endswith("." + com) else "cn"

    @property
    def database_target(self) -> str:
        """DATABASE_URL, or a SQLite file in the data directory (beside IMAGE_DIR)."""
        if self.database_url is not None and self.database_url.get_secret_value().strip():
            return self.database_url.get_secret_value().strip()
        return f"sqlite:///{self.image_dir.parent / 'sfproxy.db'}"

    @cached_property
    def prices(self) -> Prices:
        """The price table for the site: built in, with PRICES_JSON over it."""
        return Prices(self.site, parse_prices(self.prices_json))

    @property
    def models_configured(self) -> bool:
        """MODELS or MODELS_JSON lists the models: discovery then only warns."""
        return bool(self.model_entries)

    @cached_property
    def catalogue(self) -> Catalogue:
        """The configured models, or the site's built-in list (before, or without, discovery)."""
        return Catalogue(self.model_entries, self.alias_entries, site=self.site)

    @cached_property
    def video_models(self) -> VideoModels:
        """The site's video models, VIDEO_MODEL the default (`ValueError` names a bad one)."""
        return VideoModels(self.site, self.video_model)

    @cached_property
    def client_keys(self) -> tuple[str, ...]:
        return merged_keys(
            self.allow_client_key,
            self.allow_client_keys,
            self.access_token,
            self.access_tokens,
            self.access_keys,
        )

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_image_bytes(self) -> int:
        return int(self.max_image_mb * 1024 * 1024)

    @cached_property
    def admin_key_list(self) -> tuple[str, ...]:
        return merged_keys(self.admin_keys)

    @cached_property
    def upstream_keys(self) -> tuple[str, ...]:
        """SILICONFLOW_API_KEY and SILICONFLOW_API_KEYS, merged in order, each key once."""
        return merged_keys(self.siliconflow_api_key, self.siliconflow_api_keys)

    def require_upstream_key(self) -> SecretStr:
        """The first upstream key; ConfigError when none is set."""
        if not self.upstream_keys:
            raise ConfigError(
                "SILICONFLOW_API_KEY is not set: set it (or SILICONFLOW_API_KEYS, for several) "
                "to your SiliconFlow API key (https://cloud.siliconflow.cn/account/ak), or run "
                "`sfproxy demo` to try the service with the built-in fake SiliconFlow."
            )
        return SecretStr(self.upstream_keys[0])


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, turning validation errors into one ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ".".join(str(part) for part in err["loc"]).upper()
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"{name}: {message}" if name else message)
        raise ConfigError("; ".join(lines)) from None
