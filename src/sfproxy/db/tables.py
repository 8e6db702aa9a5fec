"""The database's tables: client keys, the usage ledger and video jobs (Alembic migrates them).

Times are stored in UTC. Money is a `Numeric`, never a float: a ledger's totals must equal what
SiliconFlow billed, to the fen. A cost that the price table does not know is NULL, not zero.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)

# Names for constraints and indexes, so that migrations are the same on SQLite and PostgreSQL.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Amounts in the site's currency (CNY on .cn, USD on .com), to a millionth: SiliconFlow's
# cheapest image costs $0.005.
Money = Numeric(18, 6, asdecimal=True)

client_keys = Table(
    "client_keys",
    metadata,
    # The key's public id ("ck_…"): what reports, logs and the admin API name it by.
    Column("id", String(32), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    # SHA-256 of the key, hex: the key itself is shown once, at creation, and never stored.
    Column("key_hash", String(64), nullable=False, unique=True),
    # The key's first characters, so that an operator can tell keys apart.
    Column("prefix", String(16), nullable=False),
    Column("rpm", Integer, nullable=True),
    Column("images_per_day", Integer, nullable=True),
    Column("daily_budget", Money, nullable=True),
    Column("monthly_budget", Money, nullable=True),
    # The models the key may use (a JSON list); NULL means any.
    Column("models", JSON, nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

ledger = Table(
    "ledger",
    metadata,
    # SQLite autoincrements only an INTEGER primary key.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("request_id", String(64), nullable=False),
    # A database key's id, or the label of an ALLOW_CLIENT_KEYS key ("key-…"), or "anonymous".
    Column("client", String(64), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("model_requested", String(200), nullable=True),
    Column("model", String(200), nullable=False),
    Column("images_requested", Integer, nullable=False),
    # Made by this request's upstream calls, so billed by SiliconFlow, received or not.
    Column("images_made", Integer, nullable=False),
    # Sent to the client: what it is charged for (an image taken over from an earlier,
    # abandoned request is delivered here but was made, and billed, there).
    Column("images_delivered", Integer, nullable=False),
    Column("images_refunded", Integer, nullable=False),
    Column("size", String(32), nullable=True),
    # The SiliconFlow account's label ("acct-…"), never its id or a key.
    Column("upstream_account", String(32), nullable=True),
    Column("upstream_ms", Integer, nullable=True),
    Column("status", Integer, nullable=False),
    # What SiliconFlow billed for the images made (the operator's cost), and what the client
    # is charged for the images delivered (its budget); NULL when the price is unknown.
    Column("cost", Money, nullable=True),
    Column("charged", Money, nullable=True),
    Column("currency", String(3), nullable=True),
    Index(None, "at"),
    Index(None, "client", "at"),
)

# One row per video submitted to SiliconFlow (jobs/): what its owner sees, what the poller needs
# to follow it after any restart, and what settling its money needs. Never a key's secret.
video_jobs = Table(
    "video_jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    # The owning client's label (who may see it), and the ledger's name for it.
    Column("owner", String(64), nullable=False),
    Column("client", String(64), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("endpoint", String(16), nullable=False),
    Column("model", String(200), nullable=False),
    Column("model_requested", String(200), nullable=True),
    Column("prompt", Text, nullable=False),
    Column("size", String(32), nullable=False),
    Column("seconds", String(8), nullable=False),
    Column("has_image", Boolean, nullable=False),
    # queued, in_progress, completed or failed (the video object's statuses).
    Column("status", String(16), nullable=False),
    Column("progress", Integer, nullable=False),
    # SiliconFlow's requestId, and the account and key that submitted it, by label: its status
    # can only be read with that account's key, found again in the pool by its label.
    Column("upstream_id", String(128), nullable=False),
    Column("upstream_account", String(32), nullable=True),
    Column("upstream_key", String(32), nullable=False),
    Column("error_code", String(64), nullable=True),
    Column("error_message", Text, nullable=True),
    # The image store's names of the MP4 and its poster frame, once completed.
    Column("video", String(64), nullable=True),
    Column("poster", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    # Instants the pollers compare, in Unix milliseconds: the same on both engines, no zones.
    Column("next_poll_ms", BigInteger, nullable=False),
    Column("polls", Integer, nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until_ms", BigInteger, nullable=False),
    # What was reserved, so that any instance settles it exactly after any restart: the price
    # (millionths of `currency`; NULL: unknown), the budget counters it was held in, and the
    # images-per-day counter's key and entry.
    Column("price_micros", BigInteger, nullable=True),
    Column("currency", String(3), nullable=True),
    Column("budget_keys", JSON, nullable=False),
    Column("ipd_key", String(128), nullable=True),
    Column("ipd_token", String(64), nullable=True),
    Column("settled", Boolean, nullable=False),
    # The pollers' question: which unfinished jobs are due.
    Index(None, "settled", "next_poll_ms"),
    # A client's list, by creation time.
    Index(None, "owner", "created_at"),
)
