"""`IMAGE_STORE=s3://bucket/prefix`: objects in any S3-compatible store (AWS S3, Cloudflare R2,
MinIO), one object per image under `prefix/name`.

S3 makes a PUT visible only once all of its bytes have arrived, so a failed or cancelled upload
never leaves half an image under a real name, and two proxies can share one bucket.
"""

from __future__ import annotations

import logging
import secrets
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from ..errors import ImageStoreError
from . import StoredImage, is_valid_name, media_type_of, new_name

if TYPE_CHECKING:
    from pydantic import SecretStr
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import ObjectIdentifierTypeDef

    from ..settings import Settings

log = logging.getLogger(__name__)

# A name is never reused for other bytes, so browsers and CDNs may keep an image forever.
CACHE_CONTROL = "public, max-age=31536000, immutable"
# S3's own ceiling for one ListObjectsV2 page and for one DeleteObjects call.
MAX_BATCH = 1000

# What botocore and aiohttp raise when the store cannot be reached or answers with an error;
# aiohttp's own errors can escape botocore while a response body is being read.
_FAILURES = (BotoCoreError, ClientError, aiohttp.ClientError, TimeoutError)
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def parse_location(location: str) -> tuple[str, str]:
    """`s3://bucket/a/b/` → `("bucket", "a/b")`; the prefix has no leading or trailing slash."""
    scheme, _, rest = location.partition("://")
    bucket, _, prefix = rest.partition("/")
    if scheme != "s3" or not bucket:
        raise ValueError(f"not an s3://bucket/prefix location: {location!r}")
    return bucket, "/".join(part for part in prefix.split("/") if part)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() or None if value is not None else None


class S3ImageStore:
    keeps_images = True

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        public_base_url: str | None = None,
        max_pool_connections: int = 128,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
        page_size: int = MAX_BATCH,
    ) -> None:
        self.bucket = bucket
        self.prefix = "/".join(part for part in prefix.split("/") if part)
        self.endpoint_url = endpoint_url or None
        self.region = region or "us-east-1"
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._session_token = session_token
        # The default pool of 10 would queue a burst of concurrent generations behind each other.
        self._max_pool_connections = max_pool_connections
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_attempts = max_attempts
        self._page_size = min(page_size, MAX_BATCH)
        # One probe key per process: if deleting it ever fails, at most one stray object remains
        # instead of one per readiness check.
        self._probe_key = self._key(f".ready-{secrets.token_hex(8)}")
        self._stack = AsyncExitStack()
        self._client: S3Client | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ImageStore:
        bucket, prefix = parse_location(settings.image_store)
        return cls(
            bucket,
            prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.aws_region,
            access_key_id=_secret(settings.aws_access_key_id),
            secret_access_key=_secret(settings.aws_secret_access_key),
            session_token=_secret(settings.aws_session_token),
            public_base_url=settings.image_public_base_url,
        )

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    async def start(self) -> None:
        if self._client is not None:
            return
        s3_options: dict[str, str] = {}
        checksums: dict[str, Any] = {}
        if self.endpoint_url is not None:
            # MinIO, moto and many self-hosted stores serve buckets only at /bucket, not as
            # bucket.host subdomains; R2 accepts both.
            s3_options["addressing_style"] = "path"
            # Several S3-compatible stores reject the checksums newer botocore adds to every
            # request by default; they are sent where the API requires them.
            checksums = {
                "request_checksum_calculation": "when_required",
                "response_checksum_validation": "when_required",
            }
        config = AioConfig(
            max_pool_connections=self._max_pool_connections,
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            retries={"mode": "standard", "max_attempts": self._max_attempts},
            s3=s3_options,
            # Loads botocore's service model in a thread instead of blocking the event loop.
            warm_up_loader_caches=True,
            **checksums,
        )
        stack = AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                get_session().create_client(
                    "s3",
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    aws_access_key_id=self._access_key_id,
                    aws_secret_access_key=self._secret_access_key,
                    aws_session_token=self._session_token,
                    config=config,
                )
            )
        except (BotoCoreError, ValueError) as exc:
            await stack.aclose()
            raise ImageStoreError(
                f"The image store {self.location} could not be set up: {self._reason(exc)}"
            ) from None
        self._stack = stack

    async def close(self) -> None:
        self._client = None
        await self._stack.aclose()

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _is_image_key(self, key: str) -> bool:
        # Only objects this store could have written: directly under the prefix, with a valid
        # name. Anything else sharing the bucket is left alone.
        parent, _, name = key.rpartition("/")
        return parent == self.prefix and is_valid_name(name)

    @property
    def _s3(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("S3ImageStore used before start() or after close()")
        return self._client

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = error.get("Code") or str(
                exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "error")
            )
            message = error.get("Message")
            reason = f"{code} ({message})" if message else code
        elif isinstance(exc, NoCredentialsError):
            reason = "no credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        elif isinstance(exc, TimeoutError):
            reason = "timed out"
        else:
            reason = str(exc) or exc.__class__.__name__
        # Error texts come from servers and libraries; make sure none ever carries a secret on.
        for secret in (self._secret_access_key, self._session_token):
            if secret:
                reason = reason.replace(secret, "***")
        return reason

    def _failure(self, action: str, exc: BaseException) -> str:
        """The message for clients; the endpoint, bucket and reason go to the log only.

        Botocore's and aiohttp's texts name the endpoint and often the object's key: a client
        (or /readyz, which needs no key) learns nothing from them but the store's layout.
        """
        log.warning(
            "image store %s at %s could not %s: %s",
            self.location,
            self.endpoint_url or "AWS S3",
            action,
            self._reason(exc),
        )
        return f"The image store could not {action}."

    async def put(self, data: bytes, media_type: str) -> str:
        name = new_name(media_type)
        try:
            await self._s3.put_object(
                Bucket=self.bucket,
                Key=self._key(name),
                Body=data,
                ContentType=media_type,
                CacheControl=CACHE_CONTROL,
            )
        except _FAILURES as exc:
            raise ImageStoreError(
                self._failure("store the image", exc)
                + " The request was not completed so that no broken link is handed out.",
                retry_after=30,
            ) from None
        return name

    async def get(self, name: str) -> StoredImage | None:
        if not is_valid_name(name):
            return None
        try:
            response = await self._s3.get_object(Bucket=self.bucket, Key=self._key(name))
            async with response["Body"] as body:
                data = await body.read()
        except ClientError as exc:
            # A missing bucket is also a 404, but it is a broken store, not a missing image.
            if exc.response.get("Error", {}).get("Code") in _MISSING_KEY_CODES:
                return None
            raise ImageStoreError(self._failure("read the image", exc)) from None
        except _FAILURES as exc:
            raise ImageStoreError(self._failure("read the image", exc)) from None
        return StoredImage(name=name, media_type=media_type_of(name), data=data)

    async def delete(self, name: str) -> None:
        if not is_valid_name(name):
            return
        try:
            await self._s3.delete_object(Bucket=self.bucket, Key=self._key(name))
        except _FAILURES as exc:
            raise ImageStoreError(self._failure("delete the file", exc)) from None

    async def delete_older_than(self, cutoff: float) -> int:
        removed = 0
        paginator = self._s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=f"{self.prefix}/" if self.prefix else "",
            PaginationConfig={"PageSize": self._page_size},
        )
        try:
            async for page in pages:
                expired: list[ObjectIdentifierTypeDef] = [
                    {"Key": item["Key"]}
                    for item in page.get("Contents", [])
                    if self._is_image_key(item["Key"]) and item["LastModified"].timestamp() < cutoff
                ]
                for start in range(0, len(expired), MAX_BATCH):
                    batch = expired[start : start + MAX_BATCH]
                    response = await self._s3.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                    )
                    errors = response.get("Errors", [])
                    removed += len(batch) - len(errors)
                    if errors:
                        # The next retention run tries these again.
                        log.warning(
                            "image store %s: %d old images were not deleted (first: %s %s)",
                            self.location,
                            len(errors),
                            errors[0].get("Code"),
                            errors[0].get("Message"),
                        )
        except _FAILURES as exc:
            raise ImageStoreError(self._failure("delete old images", exc)) from None
        return removed

    async def check(self, *, min_free_bytes: int = 0) -> None:
        # S3 reports no free space; min_free_bytes applies to local disks only.
        try:
            await self._s3.put_object(Bucket=self.bucket, Key=self._probe_key, Body=b"ok")
            await self._s3.delete_object(Bucket=self.bucket, Key=self._probe_key)
        except _FAILURES as exc:
            raise ImageStoreError(self._failure("be written", exc)) from None

    def public_url(self, name: str) -> str | None:
        if self.public_base_url is None or not is_valid_name(name):
            return None
        return f"{self.public_base_url}/{self._key(name)}"
