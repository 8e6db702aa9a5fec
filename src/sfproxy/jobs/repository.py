"""The `video_jobs` rows, and the lease by which exactly one poller follows each job at a time.

A poller claims a due job by setting the lease (`lease_owner`, `lease_until_ms`) only where no
live lease is: on PostgreSQL with `SELECT … FOR UPDATE SKIP LOCKED`, so that instances claiming
together skip each other's rows instead of waiting; on SQLite with one conditional `UPDATE`
per job (SQLite's writers take turns, so the condition is what makes it atomic). Every later
write by the poller is conditional on still holding the lease: an instance that paused past
its lease (and whose job another instance took over) changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..db.tables import ledger, video_jobs

logger = logging.getLogger(__name__)

# A job's row, as read (or as about to be written).
Row = dict[str, Any]
# A query that takes longer is a database in trouble: the caller answers 503, or polls later.
QUERY_TIMEOUT = 10.0
# A submitted job's row is written this many times at most, backing off from half a second:
# SiliconFlow has the video and will bill it, so a job nobody records is money lost.
INSERT_ATTEMPTS = 3


def now_ms() -> int:
    return int(time.time() * 1000)


def aware(moment: datetime | None) -> datetime | None:
    """SQLite gives datetimes back without their zone; they were written in UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


class JobRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @property
    def _postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    async def insert(self, values: Mapping[str, Any]) -> None:
        """Write a new job's row, tried again when the database fails in passing. An attempt
        that was written but whose answer was lost shows on the next as the row being there."""
        for attempt in range(INSERT_ATTEMPTS):
            try:
                async with asyncio.timeout(QUERY_TIMEOUT):
                    async with self.engine.begin() as connection:
                        await connection.execute(video_jobs.insert().values(**values))
                return
            except IntegrityError:
                if attempt == 0 or await self.get(values["id"]) is None:
                    raise
                return
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                if attempt + 1 == INSERT_ATTEMPTS:
                    raise
                logger.warning(
                    "video job %s: not recorded yet (%s); trying again",
                    values["id"],
                    exc.__class__.__name__,
                )
                await asyncio.sleep(0.5 * 2**attempt)

    async def get(self, job_id: str) -> Row | None:
        async with asyncio.timeout(QUERY_TIMEOUT):
            async with self.engine.connect() as connection:
                result = await connection.execute(
                    select(video_jobs).where(video_jobs.c.id == job_id)
                )
                row = result.mappings().first()
                return None if row is None else dict(row)

    async def page(
        self, owner: str | None, after: Row | None, limit: int, descending: bool
    ) -> list[Row]:
        """Up to `limit` jobs of `owner` (None: everyone's) by creation time, past `after`."""
        query = select(video_jobs)
        if owner is not None:
            query = query.where(video_jobs.c.owner == owner)
        created, job_id = video_jobs.c.created_at, video_jobs.c.id
        if after is not None:
            mark, mark_id = after["created_at"], after["id"]
            if descending:
                query = query.where(or_(created < mark, and_(created == mark, job_id < mark_id)))
            else:
                query = query.where(or_(created > mark, and_(created == mark, job_id > mark_id)))
        order = (created.desc(), job_id.desc()) if descending else (created.asc(), job_id.asc())
        async with asyncio.timeout(QUERY_TIMEOUT):
            async with self.engine.connect() as connection:
                result = await connection.execute(query.order_by(*order).limit(limit))
                return [dict(row) for row in result.mappings()]

    async def delete(self, job_id: str) -> bool:
        async with asyncio.timeout(QUERY_TIMEOUT):
            async with self.engine.begin() as connection:
                result = await connection.execute(
                    video_jobs.delete().where(
                        video_jobs.c.id == job_id, video_jobs.c.settled.is_(True)
                    )
                )
        return result.rowcount == 1

    async def claim_due(self, owner: str, lease_seconds: float, limit: int) -> list[Row]:
        """Lease up to `limit` unfinished jobs whose next poll is due and whose lease is free."""
        now = now_ms()
        until = now + int(lease_seconds * 1000)
        due = and_(
            video_jobs.c.settled.is_(False),
            video_jobs.c.next_poll_ms <= now,
            video_jobs.c.lease_until_ms < now,
        )
        claim = {"lease_owner": owner, "lease_until_ms": until}
        async with asyncio.timeout(QUERY_TIMEOUT):
            async with self.engine.begin() as connection:
                if self._postgres:
                    chosen = (
                        select(video_jobs.c.id)
                        .where(due)
                        .order_by(video_jobs.c.next_poll_ms)
                        .limit(limit)
                        .with_for_update(skip_locked=True)
                        .scalar_subquery()
                    )
                    result = await connection.execute(
                        update(video_jobs)
                        .where(video_jobs.c.id.in_(chosen))
                        .values(**claim)
                        .returning(*video_jobs.c)
                    )
                    return [dict(row) for row in result.mappings()]
                ids = (
                    await connection.execute(
                        select(video_jobs.c.id)
                        .where(due)
                        .order_by(video_jobs.c.next_poll_ms)
                        .limit(limit)
                    )
                ).scalars()
                claimed = []
                for job_id in list(ids):
                    result = await connection.execute(
                        update(video_jobs)
                        .where(video_jobs.c.id == job_id, due)
                        .values(**claim)
                        .returning(*video_jobs.c)
                    )
                    row = result.mappings().first()
                    if row is not None:
                        claimed.append(dict(row))
                return claimed

    async def renew(self, job_id: str, owner: str, lease_seconds: float) -> bool:
        """Extend this poller's lease; False when it no longer holds it."""
        return await self.update(
            job_id, owner, {"lease_until_ms": now_ms() + int(lease_seconds * 1000)}
        )

    async def update(self, job_id: str, owner: str, values: Mapping[str, Any]) -> bool:
        """Change an unfinished job this poller holds the lease of; False when it does not."""
        async with asyncio.timeout(QUERY_TIMEOUT):
            async with self.engine.begin() as connection:
                result = await connection.execute(self._held(job_id, owner).values(**values))
        return result.rowcount == 1

    async def finish(
        self,
        job_id: str,
        owner: str,
        values: Mapping[str, Any],
        record: Mapping[str, Any] | None,
    ) -> bool:
        """Mark the job finished and settled, and write its ledger record, in one transaction:
        a job is settled once, whatever happens to the process after it."""
        async with asyncio.timeout(QUERY_TIMEOUT):
            async with self.engine.begin() as connection:
                result = await connection.execute(
                    self._held(job_id, owner).values(
                        **values, settled=True, lease_owner=None, lease_until_ms=0
                    )
                )
                if result.rowcount != 1:
                    return False
                if record is not None:
                    await connection.execute(ledger.insert().values(**record))
        return True

    async def unfinished(self) -> int:
        async with asyncio.timeout(QUERY_TIMEOUT):
            async with self.engine.connect() as connection:
                result = await connection.execute(
                    select(func.count()).where(video_jobs.c.settled.is_(False))
                )
                return int(result.scalar_one())

    @staticmethod
    def _held(job_id: str, owner: str) -> Any:
        return update(video_jobs).where(
            video_jobs.c.id == job_id,
            video_jobs.c.lease_owner == owner,
            video_jobs.c.settled.is_(False),
        )
