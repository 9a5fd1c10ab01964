"""One exception hierarchy; each error maps to an OpenAI-shaped body and an HTTP status."""

from __future__ import annotations

import msgspec


class ArbstrError(Exception):
    """Base class for every error arbstr returns to a client."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()  # sent with the error body

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        if type is not None:
            self.type = type

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code)


class InvalidRequest(ArbstrError):
    """The client's request is malformed or asks for something the policy forbids (400)."""

    status = 400
    type = "invalid_request_error"


class AuthError(ArbstrError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class NotFound(ArbstrError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(ArbstrError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(ArbstrError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class NoProvider(ArbstrError):
    """No configured provider can serve this model under this policy (400)."""

    status = 400
    type = "invalid_request_error"
    code = "no_provider"


class AllCoolingDown(ArbstrError):
    """Every candidate provider is in circuit-breaker cool-down (503)."""

    status = 503
    type = "upstream_error"
    code = "providers_cooling_down"


class UpstreamError(ArbstrError):
    """The upstream failed in a way arbstr could not recover from (502)."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"


class InternalError(ArbstrError):
    """arbstr itself failed while handling the request (500); the log has the details."""

    status = 500
    type = "server_error"
    code = "internal_error"


class DeadlineExceeded(ArbstrError):
    status = 504
    type = "upstream_error"
    code = "timeout"


class InvalidParameter(InvalidRequest):
    """A query parameter (or the CLI option that mirrors it) has a bad value (400)."""

    code = "invalid_parameter"

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"invalid query parameter '{param}': {reason}")
        self.param = param
        self.reason = reason


class DatabaseUnavailable(ArbstrError):
    """The request log cannot be read (missing, unreadable, or of a newer schema) (503)."""

    status = 503
    type = "server_error"
    code = "database_unavailable"


class ConfigError(Exception):
    """A configuration problem; the message names the file, the field and the reason."""


_encoder = msgspec.json.Encoder()


def error_body(message: str, type: str, code: str | None) -> bytes:
    return _encoder.encode({"error": {"message": message, "type": type, "code": code}})


class BudgetExceeded(ArbstrError):
    """A ``reject`` budget covering the request is used up (429); the client's SDK is told
    not to retry before the budget resets."""

    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"
