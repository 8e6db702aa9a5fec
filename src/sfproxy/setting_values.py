"""The values settings are read into, and the parsers that read them from the environment's text.

Lists split on commas or whitespace and key lists merged; the settings with a shape to check
(base URLs, IMAGE_STORE, FORWARDED_ALLOW_IPS, CHAT_TASK_PATTERNS); the JSON settings (MODELS_JSON,
MODEL_LIMITS, CLIENT_LIMITS, PRICES_JSON) and the value types they parse into (`ModelPacing`,
`ClientQuota`); `mask` for secrets shown by `check-config`; and `ConfigError`, raised for a
configuration the service cannot run with. `Settings` (settings.py) validates its fields through
them; pacing, limits and budgets take the value types.
"""

from __future__ import annotations

import ipaddress
import json
import re
from decimal import Decimal
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError

from .catalogue import ModelSpec

_SPLIT = re.compile(r"[\s,]+")


def split_list(value: str | None) -> list[str]:
    return [item for item in _SPLIT.split(value or "") if item]


def merged_keys(*fields: SecretStr | None) -> tuple[str, ...]:
    """The keys the fields list (each one or more, split as `split_list`), in order, each once."""
    merged: dict[str, None] = {}
    for field in fields:
        if field is not None:
            merged.update(dict.fromkeys(split_list(field.get_secret_value())))
    return tuple(merged)


def split_patterns(value: str) -> list[str]:
    """CHAT_TASK_PATTERNS: a JSON list of strings, or one pattern per comma or line."""
    # Patterns may hold spaces, so they are not split as `split_list` splits.
    if value.lstrip().startswith("["):
        try:
            items = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"is not a JSON list of strings: {exc}") from None
        if not isinstance(items, list):
            raise ValueError("must be a JSON list of strings")
        return [item.strip() for item in items if isinstance(item, str) and item.strip()]
    return [item.strip() for item in re.split(r"[,\n]", value) if item.strip()]


def check_networks(entries: list[str]) -> list[str]:
    """FORWARDED_ALLOW_IPS: each entry an IP address, a network or `*`."""
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(
                f"{entry!r} is not an IP address, a network such as 10.0.0.0/8, or *"
            ) from None
    return entries


def base_url(value: str | None) -> str | None:
    """SF_BASE and the public base URLs: an http(s) URL without its trailing slash, or None."""
    if value is None:
        return None
    value = value.strip().rstrip("/")
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


def image_store_kind(value: str) -> str:
    """IMAGE_STORE: local, off, or s3://bucket/prefix."""
    value = value.strip()
    if value in ("local", "off") or re.fullmatch(r"s3://[a-z0-9][a-z0-9.\-]{1,62}(/.*)?", value):
        return value
    raise ValueError("must be local, off, or s3://bucket/prefix")


# Characters of a secret `mask` may show at most, and then never more than a quarter of it:
# enough to tell two keys apart in a log, too few to shorten a guess by much.
MASK_SHOWN_MAX = 4


def mask(secret: str) -> str:
    """Enough of a secret to tell two apart, never enough to use one."""
    shown = min(MASK_SHOWN_MAX, len(secret) // 4)
    if len(secret) <= 8 or shown < 2:
        return "***"
    head = shown - shown // 2
    return f"{secret[:head]}…{secret[len(secret) - shown // 2 :]}"


class ConfigError(ValueError):
    """The environment does not describe a configuration the service can run with."""


class ModelPacing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_in_flight: int | None = Field(default=None, ge=0)
    images_per_minute: int | None = Field(default=None, ge=0)


class ClientQuota(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(default=None, ge=0)
    images_per_day: int | None = Field(default=None, ge=0)
    # In the site's currency; a number or a string of one (JSON then loses no digits).
    daily_budget: Decimal | None = Field(default=None, ge=0, decimal_places=6)
    monthly_budget: Decimal | None = Field(default=None, ge=0, decimal_places=6)


_MODEL_ENTRIES: TypeAdapter[list[ModelSpec | str]] = TypeAdapter(list[ModelSpec | str])
# A price is a decimal number (or a string of one, as JSON loses no digits that way) and not
# negative; null makes a built-in price unknown.
_PRICES: TypeAdapter[dict[str, Annotated[Decimal, Field(ge=0)] | None]] = TypeAdapter(
    dict[str, Annotated[Decimal, Field(ge=0)] | None]
)
_MODEL_PACING: TypeAdapter[dict[str, ModelPacing]] = TypeAdapter(dict[str, ModelPacing])
_CLIENT_QUOTAS: TypeAdapter[dict[str, ClientQuota]] = TypeAdapter(dict[str, ClientQuota])


def parse_model_entries(models_json: str | None, models: str | None) -> list[ModelSpec | str]:
    """MODELS_JSON's entries when it is set, else MODELS' names; `ValueError` names a bad one."""
    if models_json and models_json.strip():
        try:
            raw = json.loads(models_json)
        except json.JSONDecodeError as exc:
            raise ValueError(f"MODELS_JSON is not valid JSON: {exc}") from None
        if not isinstance(raw, list) or not raw:
            raise ValueError(
                'MODELS_JSON must be a non-empty JSON array, e.g. ["Qwen/Qwen-Image"] '
                'or [{"id": "Qwen/Qwen-Image"}]'
            )
        try:
            return _MODEL_ENTRIES.validate_python(raw)
        except ValidationError as exc:
            details = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'][:3])}: {err['msg']}"
                for err in exc.errors()[:3]
            )
            raise ValueError(f"MODELS_JSON has an invalid entry ({details})") from None
    return list(split_list(models))


def parse_model_pacing(raw: str | None) -> dict[str, ModelPacing]:
    """MODEL_LIMITS: `{"model": {"max_in_flight": ..., "images_per_minute": ...}}`."""
    return _parse_json_object("MODEL_LIMITS", raw, _MODEL_PACING)


def parse_client_quotas(raw: str | None) -> dict[str, ClientQuota]:
    """CLIENT_LIMITS: `{"key or key label": {"rpm": ..., ...}}`; errors never show a key."""
    return _parse_json_object("CLIENT_LIMITS", raw, _CLIENT_QUOTAS, secret_keys=True)


def parse_prices(raw: str | None) -> dict[str, Decimal | None]:
    """PRICES_JSON: `{"model": price per image}`, null for a price to count as unknown."""
    return _parse_json_object("PRICES_JSON", raw, _PRICES)


_Value = TypeVar("_Value")


def _parse_json_object(
    name: str,
    raw: str | None,
    adapter: TypeAdapter[dict[str, _Value]],
    *,
    secret_keys: bool = False,
) -> dict[str, _Value]:
    if not raw or not raw.strip():
        return {}
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        # CLIENT_LIMITS may be keyed by client keys: never echo them.
        location = error["loc"][1:] if secret_keys else error["loc"]
        where = ".".join(str(part) for part in location)
        raise ValueError(
            f"{name} is invalid{' at ' + where if where else ''}: {error['msg']}"
        ) from None
