"""The one error tree of the service.

Every failure a client can see is a `ProxyError`. The status code, OpenAI error `type` and
whether an OpenAI SDK should retry live on the class; one handler in `app.py` renders any of
them as OpenAI's envelope `{"error": {"message", "type", "param", "code"}}`.

    ProxyError                         500 server_error
    ├── InvalidRequestError            400 invalid_request_error   (names the `param`)
    ├── PayloadTooLargeError           413 invalid_request_error
    ├── AuthenticationError            401 authentication_error
    ├── PermissionDeniedError          403 permission_error         (a key's allowed models)
    ├── NotFoundError                  404 invalid_request_error
    ├── MethodNotAllowedError          405 invalid_request_error
    ├── ConflictError                  409 invalid_request_error   (a client key's name is taken)
    ├── RateLimitError                 429 rate_limit_error         (client limits, queue waits)
    │   └── BudgetExceededError        429 insufficient_quota       (a key's daily/monthly budget)
    ├── DeadlineError                  504 server_error             (REQUEST_TIMEOUT_SECONDS)
    ├── RequestTimeoutError            408 invalid_request_error   (the request came too slowly)
    ├── ImageStoreError                503 server_error             (the image store failed)
    ├── ServerBusyError                503 server_error             (MAX_CONNECTIONS are open)
    ├── ServerShuttingDownError        503 server_error             (the grace period is ending)
    ├── DatabaseUnavailableError       503 server_error             (DATABASE_URL did not answer)
    └── UpstreamError                  502 upstream_error           (anything SiliconFlow did)
        ├── UpstreamRejectedError      400 invalid_request_error    (SiliconFlow said 400)
        ├── UpstreamAuthError          502 upstream_error           (SILICONFLOW_API_KEY refused)
        ├── UpstreamPermissionError    403 permission_error
        ├── NoUpstreamKeyError         503 upstream_error           (every upstream key is out)
        ├── UpstreamRateLimitError     429 rate_limit_error
        ├── UpstreamServerError        502 upstream_error           (500, 502 and other 5xx)
        ├── UpstreamUnavailableError   503 upstream_error           (503, 504)
        ├── UpstreamTimeoutError       504 upstream_error
        ├── UpstreamConnectionError    502 upstream_error
        └── UpstreamBadResponseError   502 upstream_error           (unreadable body, bad image)
"""

from __future__ import annotations

from typing import Any, ClassVar


class ProxyError(Exception):
    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None
    # Whether retrying the same request could succeed; the upstream client retries these itself.
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.retry_after = retry_after
        # Set once the service has spent its own retries, so SDKs do not pay for more attempts.
        self.retries_exhausted = False

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(self.retry_after)))
        if self.retries_exhausted:
            headers["x-should-retry"] = "false"
        return headers


class InvalidRequestError(ProxyError):
    status_code = 400
    error_type = "invalid_request_error"


class PayloadTooLargeError(ProxyError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class AuthenticationError(ProxyError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "WWW-Authenticate": 'Bearer realm="siliconflow-img-proxy"'}


class PermissionDeniedError(ProxyError):
    status_code = 403
    error_type = "permission_error"
    default_code = "permission_denied"


class NotFoundError(ProxyError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class MethodNotAllowedError(ProxyError):
    status_code = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


class ConflictError(ProxyError):
    status_code = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class RateLimitError(ProxyError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class BudgetExceededError(RateLimitError):
    # What OpenAI answers when an account's quota is spent; SDKs show it as a RateLimitError.
    error_type = "insufficient_quota"
    default_code = "budget_exceeded"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)
        # Nothing changes before the reset, hours away: an SDK's quick retries would only fail.
        self.retries_exhausted = True


class DeadlineError(ProxyError):
    status_code = 504
    error_type = "server_error"
    default_code = "deadline_exceeded"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        # The generation may still finish: an identical request takes it over (see corridor).
        self.retries_exhausted = True


class RequestTimeoutError(ProxyError):
    status_code = 408
    error_type = "invalid_request_error"
    default_code = "request_timeout"


class ServerBusyError(ProxyError):
    status_code = 503
    error_type = "server_error"
    default_code = "server_busy"
    retryable = True


class ServerShuttingDownError(ProxyError):
    status_code = 503
    error_type = "server_error"
    default_code = "server_shutting_down"
    # Nothing was delivered, and another instance (or this one, restarted) can answer.
    retryable = True

    def __init__(self) -> None:
        super().__init__(
            "The server is shutting down and stopped this request before it finished; retry it."
        )


class DatabaseUnavailableError(ProxyError):
    status_code = 503
    error_type = "server_error"
    default_code = "database_unavailable"
    retryable = True


class ImageStoreError(ProxyError):
    status_code = 503
    error_type = "server_error"
    default_code = "image_store_unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        # The images were made (and paid for); an SDK retry would pay again for nothing.
        self.retries_exhausted = True


class UpstreamError(ProxyError):
    status_code = 502
    error_type = "upstream_error"
    default_code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        upstream_status: int | None = None,
        trace_id: str | None = None,
        maybe_billed: bool = True,
    ) -> None:
        if trace_id:
            message = f"{message} (SiliconFlow trace id {trace_id})"
        super().__init__(message, param=param, code=code, retry_after=retry_after)
        self.upstream_status = upstream_status
        self.trace_id = trace_id
        # Whether SiliconFlow may have done (and billed) the work: a request that was sent and
        # got no answer saying it was not done. Such a call is not retried by default.
        self.maybe_billed = maybe_billed

    def given_up(self) -> UpstreamError:
        """This error as the service's last word on a call: SDKs are told not to retry
        (`x-should-retry: false`) what the service would have retried itself, or what
        SiliconFlow may already have done and billed, which a retry would pay for twice."""
        self.retries_exhausted = self.retryable or self.maybe_billed
        return self


class UpstreamRejectedError(UpstreamError):
    status_code = 400
    error_type = "invalid_request_error"
    default_code = "upstream_rejected"


class UpstreamAuthError(UpstreamError):
    default_code = "upstream_auth_failed"


class UpstreamPermissionError(UpstreamError):
    status_code = 403
    error_type = "permission_error"
    default_code = "upstream_permission_denied"
    # Set when SiliconFlow said the account's balance is spent, not that the model is refused.
    insufficient_balance: bool = False


class NoUpstreamKeyError(UpstreamError):
    status_code = 503
    default_code = "no_upstream_key"


class UpstreamRateLimitError(UpstreamError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "upstream_rate_limited"
    retryable = True


class UpstreamServerError(UpstreamError):
    default_code = "upstream_server_error"
    retryable = True


class UpstreamUnavailableError(UpstreamError):
    status_code = 503
    default_code = "upstream_unavailable"
    retryable = True


class UpstreamTimeoutError(UpstreamError):
    status_code = 504
    default_code = "upstream_timeout"
    retryable = True


class UpstreamConnectionError(UpstreamError):
    default_code = "upstream_connection_failed"
    retryable = True


class UpstreamBadResponseError(UpstreamError):
    default_code = "upstream_bad_response"


class ResultGoneError(UpstreamBadResponseError):
    """A result's signed URL answered 403 or 404: it expired before it was downloaded."""
