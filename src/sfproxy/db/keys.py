"""Client keys kept in the database: created, listed, changed and revoked at run time.

A key (`sk-sfp-…`) is shown once, when it is created; the table keeps its SHA-256 (hex), its
first characters (`prefix`, to tell keys apart) and a public id (`ck_…`) that logs, limits
and reports name it by. The request path never reads this table: `auth.KeyCache` holds the
live keys in memory and refreshes them in the background.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy import func, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import ConflictError, NotFoundError
from .tables import client_keys

KEY_PREFIX = "sk-sfp-"
ID_PREFIX = "ck_"
# Shown in listings: "sk-sfp-" and four random characters, too few to guess the rest from.
SHOWN_CHARACTERS = len(KEY_PREFIX) + 4


def _not_an_id(name: str) -> str:
    if name.startswith(ID_PREFIX):
        raise PydanticCustomError(
            "key_name", "a key's name may not start with {prefix}", {"prefix": ID_PREFIX}
        )
    return name


# Letters, digits and . _ @ -: a name is typed on command lines and shown in tables. It may
# not start like an id, so `keys show ck_…` is never ambiguous.
KeyName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._@-]+$"),
    AfterValidator(_not_an_id),
]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
# The table holds amounts to a millionth.
Amount = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=6)]


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def as_expiry(value: datetime | date) -> datetime:
    """A date means midnight UTC at its start; a datetime without a zone is UTC."""
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(), tzinfo=UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class KeyLimits(BaseModel):
    """What a key may do. Unset (None): CLIENT_LIMITS and the defaults apply; no models:
    any model. Shared by the CLI and `/admin/keys`; extra fields are refused, because a
    misspelt limit silently ignored would leave a key unlimited."""

    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(default=None, ge=0, le=1_000_000)
    images_per_day: int | None = Field(default=None, ge=0, le=100_000_000)
    daily_budget: Amount | None = None
    monthly_budget: Amount | None = None
    models: list[ModelName] | None = Field(default=None, min_length=1, max_length=100)
    expires_at: datetime | date | None = None

    @field_validator("expires_at")
    @classmethod
    def _utc(cls, value: datetime | date | None) -> datetime | None:
        return None if value is None else as_expiry(value)

    def columns(self) -> dict[str, Any]:
        """The fields that were given (None included: it clears one), as columns."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class NewKey(KeyLimits):
    name: KeyName


class KeyChange(KeyLimits):
    name: KeyName | None = None

    def columns(self) -> dict[str, Any]:
        columns = super().columns()
        if columns.get("name", "") is None:
            columns.pop("name")
        return columns


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A row of `client_keys`, without its hash."""

    id: str
    name: str
    prefix: str
    rpm: int | None
    images_per_day: int | None
    daily_budget: Decimal | None
    monthly_budget: Decimal | None
    models: tuple[str, ...] | None
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: RowMapping) -> KeyRecord:
        return cls(
            id=row["id"],
            name=row["name"],
            prefix=row["prefix"],
            rpm=row["rpm"],
            images_per_day=row["images_per_day"],
            daily_budget=_amount(row["daily_budget"]),
            monthly_budget=_amount(row["monthly_budget"]),
            models=tuple(row["models"]) if row["models"] is not None else None,
            expires_at=_utc(row["expires_at"]),
            created_at=_utc(row["created_at"]) or datetime.now(UTC),
            updated_at=_utc(row["updated_at"]) or datetime.now(UTC),
            revoked_at=_utc(row["revoked_at"]),
        )

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expired(now) else "active"

    def to_json(self, now: datetime | None = None) -> dict[str, Any]:
        """What the CLI and /admin/keys show: everything but the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "state": self.state(now or datetime.now(UTC)),
            "rpm": self.rpm,
            "images_per_day": self.images_per_day,
            "daily_budget": _text(self.daily_budget),
            "monthly_budget": _text(self.monthly_budget),
            "models": list(self.models) if self.models is not None else None,
            "expires_at": _iso(self.expires_at),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "revoked_at": _iso(self.revoked_at),
        }


@dataclass(frozen=True, slots=True)
class LiveKeys:
    """The keys that may still authenticate (not revoked), by hash; `exists` says whether the
    table has any row at all, revoked ones included (see `auth.ClientKeys.required`)."""

    by_digest: Mapping[str, KeyRecord]
    exists: bool


class KeyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(self, new: NewKey) -> tuple[KeyRecord, str]:
        """The new key's record, and the key itself: the only time it is known."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        values = {
            **new.columns(),
            "name": new.name,
            "id": ID_PREFIX + secrets.token_hex(8),
            "key_hash": key_digest(key),
            "prefix": key[:SHOWN_CHARACTERS],
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self.engine.begin() as connection:
                await connection.execute(client_keys.insert().values(**values))
        except IntegrityError:
            raise self._taken(new.name) from None
        return await self.get(values["id"]), key

    async def list(self) -> list[KeyRecord]:
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                select(*_PUBLIC_COLUMNS).order_by(client_keys.c.created_at, client_keys.c.id)
            )
            return [KeyRecord.from_row(row) for row in rows.mappings()]

    async def get(self, ident: str) -> KeyRecord:
        """The key with this id (`ck_…`) or name; 404 when there is none."""
        column = client_keys.c.id if ident.startswith(ID_PREFIX) else client_keys.c.name
        async with self.engine.connect() as connection:
            row = (
                (await connection.execute(select(*_PUBLIC_COLUMNS).where(column == ident)))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFoundError(f"No client key has the id or name '{ident[:100]}'.", param="id")
        return KeyRecord.from_row(row)

    async def update(self, ident: str, change: KeyChange) -> KeyRecord:
        record = await self.get(ident)
        columns = change.columns()
        if columns:
            try:
                async with self.engine.begin() as connection:
                    await connection.execute(
                        client_keys.update()
                        .where(client_keys.c.id == record.id)
                        .values(**columns, updated_at=datetime.now(UTC))
                    )
            except IntegrityError:
                raise self._taken(columns["name"]) from None
        return await self.get(record.id)

    async def revoke(self, ident: str) -> KeyRecord:
        """Revoked for good (a key cannot be restored: create a new one). Revoking twice keeps
        the first time."""
        record = await self.get(ident)
        if record.revoked_at is None:
            now = datetime.now(UTC)
            async with self.engine.begin() as connection:
                await connection.execute(
                    client_keys.update()
                    .where(client_keys.c.id == record.id, client_keys.c.revoked_at.is_(None))
                    .values(revoked_at=now, updated_at=now)
                )
        return await self.get(record.id)

    async def live(self) -> LiveKeys:
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                select(client_keys.c.key_hash, *_PUBLIC_COLUMNS).where(
                    client_keys.c.revoked_at.is_(None)
                )
            )
            by_digest = {row["key_hash"]: KeyRecord.from_row(row) for row in rows.mappings()}
            exists = bool(by_digest) or bool(
                (await connection.execute(select(func.count()).select_from(client_keys))).scalar()
            )
        return LiveKeys(by_digest=by_digest, exists=exists)

    @staticmethod
    def _taken(name: str) -> ConflictError:
        return ConflictError(f"A client key named '{name}' already exists.", param="name")


_PUBLIC_COLUMNS = tuple(column for column in client_keys.c if column.name != "key_hash")


def _utc(value: datetime | None) -> datetime | None:
    # SQLite gives back naive datetimes; everything stored is UTC.
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _amount(value: Decimal | None) -> Decimal | None:
    # 0.900000 from the column reads as 0.9; adding 0 turns normalize's 1E+2 back into 100.
    return None if value is None else Decimal(value).normalize() + Decimal(0)


def _text(value: Decimal | None) -> str | None:
    # Money as a string: JSON numbers lose digits in some clients.
    return None if value is None else format(value, "f")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")
