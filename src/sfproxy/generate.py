"""The one path from an image request to kept images, shared by every endpoint.

An `ImageJob` (what the client wants, already validated) is checked against the model's
catalogue entry, planned into upstream calls (batched where the model allows), run
concurrently up to `PARALLEL_CALLS`, and each resulting image is downloaded once and put in
the image store. Calls that fail are reported beside the images that succeeded.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from .catalogue import Catalogue, ModelSpec, fit_size, plan_batches
from .errors import ImageStoreError, InvalidRequestError, ProxyError
from .protocol import ImageParams, ResponseFormat
from .siliconflow import SiliconFlowClient
from .store import ImageStore

MAX_SEED = 9_999_999_999
_INPUT_IMAGE_FIELDS = ("image", "image2", "image3")


@dataclass(frozen=True, slots=True)
class ImageJob:
    """A validated request for images, whichever endpoint it came from."""

    model: str
    prompt: str
    n: int = 1
    response_format: ResponseFormat = "url"
    size: str | None = None
    image_size: str | None = None
    batch_size: int | None = None
    seed: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    cfg: float | None = None
    negative_prompt: str | None = None
    # Input images for editing: data URIs or http(s) URLs, in order.
    images: tuple[str, ...] = ()

    @classmethod
    def from_params(
        cls,
        params: ImageParams,
        *,
        prompt: str,
        catalogue: Catalogue,
        default_response_format: ResponseFormat,
        images: tuple[str, ...] = (),
        **overrides: Any,
    ) -> ImageJob:
        values: dict[str, Any] = {
            "model": params.model or catalogue.default_model,
            "prompt": prompt,
            "n": params.n,
            "response_format": params.response_format or default_response_format,
            "size": params.size or params.aspect_ratio,
            "image_size": params.image_size,
            "batch_size": params.batch_size,
            "seed": params.seed,
            "num_inference_steps": params.num_inference_steps,
            "guidance_scale": params.guidance_scale,
            "cfg": params.cfg,
            "negative_prompt": params.negative_prompt,
            "images": images,
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


@dataclass(slots=True)
class GeneratedImage:
    seed: int | None
    media_type: str | None = None
    # The bytes, when the image was downloaded (always, unless IMAGE_STORE=off and url format).
    data: bytes | None = None
    # Its name in the image store, or SiliconFlow's own URL when nothing is kept.
    name: str | None = None
    upstream_url: str | None = None


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


class Observer(Protocol):
    def generated(self, model: str, images: int) -> None: ...

    def store_failed(self, operation: str) -> None: ...


class _Unobserved:
    def generated(self, model: str, images: int) -> None:
        pass

    def store_failed(self, operation: str) -> None:
        pass


class _Span:
    """`with clock.measure():` around an await; a plain class, as it runs on every call."""

    __slots__ = ("_spans", "_started")

    def __init__(self, spans: list[tuple[float, float]]) -> None:
        self._spans = spans
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        self._spans.append((self._started, time.perf_counter()))


Progress = Callable[[str], None]


def _silent(line: str) -> None:
    pass


class _Clock:
    """Wall time during which at least one of the measured (concurrent) spans was running."""

    def __init__(self) -> None:
        self._spans: list[tuple[float, float]] = []

    def measure(self) -> _Span:
        return _Span(self._spans)

    def add(self, seconds: float) -> None:
        """A span of `seconds` that ends now."""
        if seconds > 0:
            now = time.perf_counter()
            self._spans.append((now - seconds, now))

    def total(self) -> float:
        total, reached = 0.0, float("-inf")
        for start, end in sorted(self._spans):
            if end > reached:
                total += end - max(start, reached)
                reached = end
        return total


@dataclass(slots=True)
class _Run:
    """One job in progress: its calls share a concurrency limit, clocks and progress."""

    job: ImageJob
    spec: ModelSpec
    payload: dict[str, Any]
    requested: int
    limit: asyncio.Semaphore
    report: Progress
    upstream: _Clock = field(default_factory=lambda: _Clock())
    queue: _Clock = field(default_factory=lambda: _Clock())
    done: int = 0


class ImageGenerator:
    def __init__(
        self,
        client: SiliconFlowClient,
        store: ImageStore,
        catalogue: Catalogue,
        *,
        parallel_calls: int = 4,
        pacer: Pacer | None = None,
        observer: Observer | None = None,
        random_seed: Callable[[], int] = lambda: random.randint(0, MAX_SEED),
    ) -> None:
        self.client = client
        self.store = store
        self.catalogue = catalogue
        self.parallel_calls = parallel_calls
        self.pacer: Pacer = pacer or _Unpaced()
        self.observer: Observer = observer or _Unobserved()
        self._random_seed = random_seed

    def check(self, job: ImageJob) -> ModelSpec:
        """Refuse, before any upstream work, what the model cannot do."""
        spec = self.catalogue.spec(job.model)
        count = len(job.images)
        if count and not spec.takes_images:
            takers = ", ".join(self.catalogue.image_models()) or "none are listed"
            raise InvalidRequestError(
                f"Model {job.model} does not take input images. Models that do: {takers}.",
                param="image",
            )
        if count < spec.min_images:
            raise InvalidRequestError(
                f"Model {job.model} edits images: send {spec.min_images} to "
                f"{spec.max_images} input image(s) (POST /v1/images/edits, or attach one in chat).",
                param="image",
            )
        if spec.max_images is not None and count > spec.max_images:
            raise InvalidRequestError(
                f"Model {job.model} takes at most {spec.max_images} input image(s); "
                f"{count} were sent.",
                param="image",
            )
        if count > len(_INPUT_IMAGE_FIELDS):
            raise InvalidRequestError(
                f"At most {len(_INPUT_IMAGE_FIELDS)} input images can be sent; {count} were.",
                param="image",
            )
        return spec

    def payload_for(self, job: ImageJob, spec: ModelSpec) -> tuple[dict[str, Any], str | None]:
        """The upstream body shared by every call of the job, and the image_size it holds."""
        payload: dict[str, Any] = {"model": job.model, "prompt": job.prompt}
        if spec.takes_image_size:
            size = job.image_size or fit_size(spec, job.size)
        else:
            size = None
        if size is not None:
            payload["image_size"] = size
        for param in ("num_inference_steps", "guidance_scale", "cfg", "negative_prompt"):
            value = getattr(job, param)
            if value is not None and spec.accepts(param):
                payload[param] = value
        for name, image in zip(_INPUT_IMAGE_FIELDS, job.images, strict=False):
            payload[name] = image
        return payload, size

    async def run(self, job: ImageJob, progress: Progress | None = None) -> Generation:
        spec = self.check(job)
        payload, size = self.payload_for(job, spec)
        batches = plan_batches(spec, job.n, job.batch_size)
        run = _Run(
            job=job,
            spec=spec,
            payload=payload,
            requested=sum(batches),
            limit=asyncio.Semaphore(self.parallel_calls),
            report=progress or _silent,
        )
        run.report(
            f"generating {run.requested} image{'s' if run.requested > 1 else ''} with "
            f"{job.model}{f' at {size}' if size else ''}…"
        )
        outcomes: list[list[GeneratedImage] | BaseException]
        if len(batches) == 1:
            # The common case: awaited in place, without a task to schedule.
            try:
                outcomes = [await self._call(run, 0, batches[0])]
            except ProxyError as exc:
                outcomes = [exc]
        else:
            outcomes = await asyncio.gather(
                *(self._call(run, index, count) for index, count in enumerate(batches)),
                return_exceptions=True,
            )
        images: list[GeneratedImage] = []
        failures: list[ProxyError] = []
        for outcome in outcomes:
            if isinstance(outcome, ProxyError):
                failures.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                images.extend(outcome)
        if not images:
            raise failures[0]
        self.observer.generated(job.model, len(images))
        return Generation(
            model=job.model,
            size=size,
            images=images,
            requested=run.requested,
            calls=len(batches),
            failures=failures,
            upstream_seconds=run.upstream.total(),
            queue_seconds=run.queue.total(),
        )

    async def _call(self, run: _Run, index: int, count: int) -> list[GeneratedImage]:
        """One upstream call of a job (`count` images), and keeping what it made."""
        job = run.job
        body = dict(run.payload)
        if count > 1:
            body["batch_size"] = count
        if run.spec.accepts("seed"):
            # Seed + i keeps a seeded request reproducible while its images differ.
            body["seed"] = (
                (job.seed + index) % (MAX_SEED + 1) if job.seed is not None else self._random_seed()
            )
        try:
            async with run.limit:
                async with self.pacer.slot(job.model, count) as waited:
                    run.queue.add(waited)
                    with run.upstream.measure():
                        result = await self.client.generate(body)
                seed = result.seed if result.seed is not None else body.get("seed")
                urls = result.urls[:count]
                kept = (
                    [await self._keep(urls[0], job, seed, run.upstream)]
                    if len(urls) == 1
                    else await asyncio.gather(
                        *(self._keep(url, job, seed, run.upstream) for url in urls)
                    )
                )
        except ProxyError as exc:
            run.report(f"an image request failed: {exc.message}")
            raise
        run.done += len(kept)
        run.report(
            f"image {run.done}/{run.requested} done"
            if count == 1
            else f"{run.done}/{run.requested} images done"
        )
        return list(kept)

    async def _keep(
        self, url: str, job: ImageJob, seed: int | None, clock: _Clock
    ) -> GeneratedImage:
        if not self.store.keeps_images and job.response_format == "url":
            return GeneratedImage(seed=seed, upstream_url=url)
        with clock.measure():
            data, media_type = await self.client.download(url, model=job.model)
        image = GeneratedImage(seed=seed, media_type=media_type, data=data)
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
