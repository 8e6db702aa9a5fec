"""Making the images of a plan: upstream calls, their retries, and keeping what they made.

A `Plan` (see `corridor.py`) is run as its upstream calls (batched where the model allows),
concurrently up to `PARALLEL_CALLS`; each resulting image is downloaded once, converted to the
asked `output_format` (or `IMAGE_FORMAT`) unless the model made that format itself, and put in
the image store. Calls that fail are reported beside the images that succeeded.

Money is decided here, call by call: a generation is tried again only when the failure proves
nothing was made (`RetryPolicy.allows`), never past the request's deadline, and never once
its client has left. When the client leaves, calls still waiting for a concurrency or pacing
slot (or in back-off) are cancelled before they reach SiliconFlow; a call already there runs
to its end and its image is kept, for an identical request to take over.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from .catalogue import Catalogue, CatalogueSource, FixedCatalogue, ModelSpec, fit_size
from .errors import (
    ImageStoreError,
    InvalidRequestError,
    ProxyError,
    UpstreamError,
)
from .formats import OutputFormats
from .plan import INPUT_IMAGE_FIELDS, MAX_SEED, ImageJob, Plan
from .retries import MAX_RETRY_WAIT
from .siliconflow import SiliconFlowClient
from .store import ImageStore
from .timing import Clock
from .upstream_wire import UpstreamImages


@dataclass(slots=True)
class GeneratedImage:
    seed: int | None
    media_type: str | None = None
    # The bytes, when the image was downloaded (always, unless IMAGE_STORE=off and url format).
    data: bytes | None = None
    # Its name in the image store, or SiliconFlow's own URL when nothing is kept.
    name: str | None = None
    upstream_url: str | None = None
    # From the image's header, when its bytes are at hand.
    width: int | None = None
    height: int | None = None

    @property
    def size(self) -> str | None:
        """WIDTHxHEIGHT, when known."""
        if self.width is None or self.height is None:
            return None
        return f"{self.width}x{self.height}"


@dataclass(slots=True)
class Generation:
    model: str
    size: str | None
    images: list[GeneratedImage]
    requested: int
    calls: int
    failures: list[ProxyError] = field(default_factory=list)
    # Wall time with a SiliconFlow call (or download) in flight, and waiting for pacing.
    upstream_seconds: float = 0.0
    queue_seconds: float = 0.0

    @property
    def failed_calls(self) -> int:
        return len(self.failures)


class Pacer(Protocol):
    """Holds a call back until the model's upstream limits allow it (see `pacing.py`).

    The slot gives the seconds the call waited for it.
    """

    def slot(self, model: str, images: int) -> AbstractAsyncContextManager[float]: ...

    def answered(self, model: str, overloaded: bool, retry_after: float | None = None) -> None:
        """Told how SiliconFlow answered each call: overloaded (503) or not."""
        ...


class NoWait:
    """The slot of a call nothing holds back (no awaits, no generator: it is on every call)."""

    async def __aenter__(self) -> float:
        return 0.0

    async def __aexit__(self, *exc_info: object) -> None:
        pass


NO_WAIT = NoWait()


class _Unpaced:
    def slot(self, model: str, images: int) -> AbstractAsyncContextManager[float]:
        return NO_WAIT

    def answered(self, model: str, overloaded: bool, retry_after: float | None = None) -> None:
        pass


class Observer(Protocol):
    def generated(self, model: str, images: int) -> None: ...

    def queued(self, model: str, seconds: float) -> None:
        """A call waited this long for its pacing and in-flight slots."""
        ...

    def store_failed(self, operation: str) -> None: ...


class _Unobserved:
    def generated(self, model: str, images: int) -> None:
        pass

    def queued(self, model: str, seconds: float) -> None:
        pass

    def store_failed(self, operation: str) -> None:
        pass


Progress = Callable[[str], None]


def _silent(line: str) -> None:
    pass


class Abandoned(Exception):
    """A call that did not start because nobody waits for its images any more."""


@dataclass(slots=True)
class Calls:
    """One plan's calls in progress: their shared limit, clocks, deadline and progress.

    `abandon()` is what happens when the last client waiting for them leaves.
    """

    plan: Plan
    deadline: float
    limit: asyncio.Semaphore
    report: Progress = _silent
    upstream: Clock = field(default_factory=lambda: Clock())
    queue: Clock = field(default_factory=lambda: Clock())
    trace_ids: list[str] = field(default_factory=list)
    done: int = 0
    # Images SiliconFlow made for these calls (and so billed), kept or not, by account label.
    made: dict[str | None, int] = field(default_factory=dict)
    abandoned: bool = False
    # Tasks of calls not yet at SiliconFlow: queued for a slot, or waiting to retry.
    _waiting: set[asyncio.Task[Any]] = field(default_factory=set)

    def abandon(self) -> None:
        self.abandoned = True
        for task in list(self._waiting):
            task.cancel()

    def resume(self) -> None:
        """A client took the calls over: retries may go on (cancelled calls stay cancelled)."""
        self.abandoned = False

    def billed(self, result: UpstreamImages) -> None:
        self.made[result.account] = self.made.get(result.account, 0) + len(result.urls)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    @contextmanager
    def cancellable(self) -> Iterator[Callable[[], None]]:
        """Inside, `abandon()` cancels the current task (a call not yet at SiliconFlow); the
        function it gives ends that early, once the call is sent."""
        if self.abandoned:
            raise Abandoned
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)
        try:
            yield lambda: self._waiting.discard(task)
        finally:
            self._waiting.discard(task)


class ImageGenerator:
    def __init__(
        self,
        client: SiliconFlowClient,
        store: ImageStore,
        catalogue: Catalogue | CatalogueSource,
        *,
        parallel_calls: int = 4,
        pacer: Pacer | None = None,
        observer: Observer | None = None,
        random_seed: Callable[[], int] = lambda: random.randint(0, MAX_SEED),
        formats: OutputFormats | None = None,
    ) -> None:
        self.client = client
        self.store = store
        # Discovery may replace the catalogue: it is read through its holder on each request.
        self._catalogues: CatalogueSource = (
            FixedCatalogue(catalogue) if isinstance(catalogue, Catalogue) else catalogue
        )
        self.parallel_calls = parallel_calls
        # IMAGE_FORMAT and IMAGE_COMPRESSION: for requests that ask for no format or quality.
        self.formats = formats or OutputFormats()
        self.pacer: Pacer = pacer or _Unpaced()
        self.observer: Observer = observer or _Unobserved()
        self._random_seed = random_seed

    @property
    def catalogue(self) -> Catalogue:
        return self._catalogues.current

    def payload_for(self, job: ImageJob, spec: ModelSpec) -> tuple[dict[str, Any], str | None]:
        """The upstream body shared by every call of the job, and the image_size it holds."""
        payload: dict[str, Any] = {"model": job.model, "prompt": job.prompt}
        size = (job.image_size or fit_size(spec, job.size)) if spec.takes_image_size else None
        if size is not None:
            payload["image_size"] = size
        for param in (
            "num_inference_steps",
            "guidance_scale",
            "cfg",
            "negative_prompt",
            "prompt_enhancement",
        ):
            value = getattr(job, param)
            if value is not None and spec.accepts(param):
                payload[param] = value
        for name, image in zip(INPUT_IMAGE_FIELDS, job.images, strict=False):
            payload[name] = image
        wanted = self.formats.wanted(job)
        if wanted is not None and spec.makes(wanted):
            payload["output_format"] = wanted
        elif (
            job.output_format is not None
            and job.response_format == "url"
            and not self.store.keeps_images
        ):
            # Without a store a url answer is SiliconFlow's own link, which cannot point at
            # converted bytes; answering b64_json instead would break a client reading `url`.
            raise InvalidRequestError(
                f"output_format '{job.output_format}' with response_format 'url' needs the "
                f"image store, and IMAGE_STORE is off: {job.model} cannot make "
                f"{job.output_format} itself. Ask for response_format 'b64_json', or send no "
                "output_format.",
                param="output_format",
                code="output_format_needs_image_store",
            )
        return payload, size

    def calls_for(self, plan: Plan, deadline: float, progress: Progress | None = None) -> Calls:
        return Calls(
            plan=plan,
            deadline=deadline,
            limit=asyncio.Semaphore(self.parallel_calls),
            report=progress or _silent,
        )

    async def run(self, calls: Calls) -> Generation:
        plan = calls.plan
        job = plan.job
        calls.report(
            f"generating {plan.requested} image{'s' if plan.requested > 1 else ''} with "
            f"{job.model}{f' at {plan.size}' if plan.size else ''}…"
        )
        outcomes: list[list[GeneratedImage] | BaseException]
        if len(plan.batches) == 1:
            # The common case: awaited in place, without a task to schedule.
            try:
                outcomes = [await self._call(calls, 0, plan.batches[0])]
            except (ProxyError, Abandoned) as exc:
                outcomes = [exc]
        else:
            outcomes = await asyncio.gather(
                *(self._call(calls, index, count) for index, count in enumerate(plan.batches)),
                return_exceptions=True,
            )
        images: list[GeneratedImage] = []
        failures: list[ProxyError] = []
        for outcome in outcomes:
            if isinstance(outcome, ProxyError):
                failures.append(outcome)
            elif isinstance(outcome, Abandoned | asyncio.CancelledError):
                continue
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                images.extend(outcome)
        if not images:
            if failures:
                raise failures[0]
            raise Abandoned
        self.observer.generated(job.model, len(images))
        return Generation(
            model=job.model,
            # Edit models size from their input, so the plan has no size: the image tells it.
            size=plan.size or images[0].size,
            images=images,
            requested=plan.requested,
            calls=len(plan.batches),
            failures=failures,
            upstream_seconds=calls.upstream.total(),
            queue_seconds=calls.queue.total(),
        )

    async def _call(self, calls: Calls, index: int, count: int) -> list[GeneratedImage]:
        """One upstream call of a plan (`count` images), its retries, and keeping what it made."""
        job = calls.plan.job
        body = dict(calls.plan.payload)
        if count > 1:
            body["batch_size"] = count
        if calls.plan.spec.accepts("seed"):
            # Seed + i keeps a seeded request reproducible while its images differ.
            body["seed"] = (
                (job.seed + index) % (MAX_SEED + 1) if job.seed is not None else self._random_seed()
            )
        try:
            result = await self._generate(calls, body, count)
            seed = result.seed if result.seed is not None else body.get("seed")
            urls = result.urls[:count]
            kept = (
                [await self._keep(urls[0], job, seed, calls.upstream)]
                if len(urls) == 1
                else await asyncio.gather(
                    *(self._keep(url, job, seed, calls.upstream) for url in urls)
                )
            )
        except ProxyError as exc:
            calls.report(f"an image request failed: {exc.message}")
            raise
        calls.done += len(kept)
        calls.report(
            f"image {calls.done}/{calls.plan.requested} done"
            if count == 1
            else f"{calls.done}/{calls.plan.requested} images done"
        )
        return list(kept)

    async def _generate(self, calls: Calls, body: dict[str, Any], count: int) -> UpstreamImages:
        """The upstream generation, tried again only when that cannot pay twice."""
        model = calls.plan.job.model
        policy = self.client.retry
        attempt = 0
        while True:
            with calls.cancellable() as sent:
                async with calls.limit:
                    queued_at = time.monotonic()

                    def sending(queued_at: float = queued_at) -> None:
                        # From here the call is SiliconFlow's: it is no longer cancelled.
                        sent()
                        waited = time.monotonic() - queued_at
                        calls.queue.add(waited)
                        self.observer.queued(model, waited)

                    async with self.pacer.slot(model, count):
                        try:
                            with calls.upstream.measure():
                                result = await self.client.generate(
                                    body, sending=sending, queued_at=queued_at
                                )
                        except UpstreamError as exc:
                            failure = exc
                            self.pacer.answered(model, exc.upstream_status == 503, exc.retry_after)
                        else:
                            self.pacer.answered(model, False)
                            calls.billed(result)
                            if result.trace_id:
                                calls.trace_ids.append(result.trace_id)
                            return result
            if failure.trace_id:
                calls.trace_ids.append(failure.trace_id)
            wait = policy.delay(attempt, failure.retry_after)
            if (
                calls.abandoned
                or not policy.allows(failure, attempt)
                or wait > min(MAX_RETRY_WAIT, calls.remaining())
            ):
                raise failure.given_up()
            attempt += 1
            self.client.note_retry("generate", model, failure, attempt, wait)
            with calls.cancellable():
                await asyncio.sleep(wait)

    async def _keep(
        self, url: str, job: ImageJob, seed: int | None, clock: Clock
    ) -> GeneratedImage:
        if not self.store.keeps_images and job.response_format == "url":
            return GeneratedImage(seed=seed, upstream_url=url)
        with clock.measure():
            data, media_type = await self.client.download(url, model=job.model)
        data, media_type, dimensions = await self.formats.apply(data, media_type, job)
        image = GeneratedImage(seed=seed, media_type=media_type, data=data)
        if dimensions is not None:
            image.width, image.height = dimensions
        if self.store.keeps_images:
            try:
                image.name = await self.store.put(data, media_type)
            except ImageStoreError:
                self.observer.store_failed("put")
                raise
        else:
            image.upstream_url = url
        return image

    def url_for(self, image: GeneratedImage, base_url: str) -> str:
        """Where a client fetches the image: this service, the store's CDN, or SiliconFlow."""
        if image.name is None:
            assert image.upstream_url is not None
            return image.upstream_url
        return self.store.public_url(image.name) or f"{base_url}/v1/files/images/{image.name}"
