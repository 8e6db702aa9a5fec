"""A service process that submits one video and then only polls: `kill -9` it mid-job.

Run as `python -m tests.support.video_worker`, configured by the environment as `sfproxy serve`
is; prints the job's id on a line of its own once the job is recorded, then runs until killed.
"""

from __future__ import annotations

import asyncio
import sys

from sfproxy.services import Services
from sfproxy.settings import load_settings
from tests.support.videos import ALICE, note, video


async def main() -> None:
    async with Services.running(load_settings()) as services:
        job = await services.videos.submit(ALICE, video("killed mid-job"), note(), endpoint="mcp")
        sys.stdout.write(f"{job.id}\n")
        sys.stdout.flush()
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
