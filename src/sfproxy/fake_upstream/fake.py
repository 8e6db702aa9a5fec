"""Running the fake: on a thread of its own, inside an existing event loop, or as a command."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import threading
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from .config import FakeConfig
from .images import ImageRenderer
from .server import create_app
from .state import FakeState

# Long enough for answers already being written; hangs and latencies are woken by `closing`.
_SHUTDOWN_TIMEOUT = 1.0


class FakeSiliconFlow(FakeState):
    """A SiliconFlow image API on loopback, steered from Python or over `/_fake/...`.

    Sync: `with FakeSiliconFlow(latency=0.1) as fake: base_url = fake.base_url`, or
    `start()` / `stop()`. Async, inside a running loop: `await start_async()` /
    `await stop_async()`, or `async with`.
    """

    def __init__(self, config: FakeConfig | None = None, **changes: Any) -> None:
        super().__init__(config, **changes)
        self._runner: web.AppRunner | None = None
        self._renderer: ImageRenderer | None = None
        self._closing: asyncio.Event | None = None
        self._base_url: str | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        """Like `http://127.0.0.1:43125/v1`: what SiliconFlow's `SF_BASE` would be."""
        if self._base_url is None:
            raise RuntimeError("the fake upstream is not running")
        return self._base_url

    @property
    def origin(self) -> str:
        return self.base_url.removesuffix("/v1")

    async def start_async(self, host: str = "127.0.0.1", port: int = 0) -> str:
        host = _loopback_host(host)
        if self._runner is not None:
            raise RuntimeError("the fake upstream is already running")
        self._closing = asyncio.Event()
        self._renderer = ImageRenderer(self.count)
        app = create_app(self, self._renderer, self._closing)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            self._renderer.close()
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        url_host = f"[{host}]" if ":" in host else host
        self._base_url = f"http://{url_host}:{bound_port}/v1"
        return self._base_url

    async def stop_async(self) -> None:
        runner, renderer = self._runner, self._renderer
        if runner is None or renderer is None or self._closing is None:
            return
        self._closing.set()
        await runner.cleanup()
        # Shut down off the loop: it waits for a render that may still be running.
        await asyncio.get_running_loop().run_in_executor(None, renderer.close)
        self._runner = self._renderer = None
        self._base_url = None

    async def __aenter__(self) -> Self:
        await self.start_async()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop_async()

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve from a daemon thread with its own event loop; return the base URL."""
        _loopback_host(host)
        if self._thread is not None:
            raise RuntimeError("the fake upstream is already running")
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            self._thread_loop = asyncio.get_running_loop()
            self._thread_stop = asyncio.Event()
            try:
                await self.start_async(host, port)
            except BaseException as error:
                failure.append(error)
                return
            finally:
                ready.set()
            try:
                await self._thread_stop.wait()
            finally:
                await self.stop_async()

        self._thread = threading.Thread(
            target=asyncio.run, args=(serve(),), name="fake-upstream", daemon=True
        )
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self.base_url

    def stop(self) -> None:
        thread, loop, stop = self._thread, self._thread_loop, self._thread_stop
        if thread is None or loop is None or stop is None:
            return
        loop.call_soon_threadsafe(stop.set)
        thread.join()
        self._thread = self._thread_loop = self._thread_stop = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def run_fake_upstream(host: str = "127.0.0.1", port: int = 0, **config: Any) -> None:
    """Serve until interrupted; print only the base URL, once listening."""
    fake = FakeSiliconFlow(**config)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # SIGINT is asyncio.run's: it cancels this coroutine, and the finally clause cleans up.
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        try:
            print(await fake.start_async(host, port), flush=True)
            await stop.wait()
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            await fake.stop_async()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


def _loopback_host(host: str) -> str:
    """The fake has unauthenticated control endpoints, so it must never face a network."""
    if host == "localhost":
        # An explicit address: "localhost" may resolve to two addresses that get two ports.
        return "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the fake upstream binds loopback addresses only, not {host!r}")
    return host
