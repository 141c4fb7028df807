"""Domain errors of the PRM service. Pure Python: no HTTP, no torch.

The HTTP layer maps each class to one status code (see ``service.http.app``); the client maps the
``type`` field of an error body back to the same class (``clients.prm.error_from_response``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class PRMError(Exception):
    """Base class of every error the service reports to a caller."""

    status_code = 500
    type = "internal_error"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class InvalidInput(PRMError):
    """The request is well-formed JSON but its content cannot be scored."""

    status_code = 400
    type = "invalid_input"


class ValidationFailed(InvalidInput):
    """The request does not match the schema (wrong types, missing or unknown fields)."""

    status_code = 422
    type = "validation_error"


class InvalidEncoding(InvalidInput):
    """The body is not UTF-8, or a string holds a lone surrogate (not Unicode text)."""

    type = "invalid_encoding"


class InvalidJSON(InvalidInput):
    """The body is not JSON (RFC 8259: no NaN or Infinity either)."""

    type = "invalid_json"


class JSONTooDeep(InvalidInput):
    """The body nests arrays and objects deeper than the limit."""

    type = "json_too_deep"


class NumberTooLarge(InvalidInput):
    """A number in the body is outside what any field accepts (beyond 64-bit integers, or not finite)."""

    type = "number_too_large"


class UnsupportedMediaType(PRMError):
    """A compressed (``Content-Encoding``) body: the service reads identity-encoded JSON only."""

    status_code = 415
    type = "unsupported_media_type"


class MethodNotAllowed(PRMError):
    """The route exists, not with this method (the response's ``Allow`` header lists the ones it has)."""

    status_code = 405
    type = "method_not_allowed"


class RequestTimeout(PRMError):
    """The client did not send its request head or body within the configured time."""

    status_code = 408
    type = "request_timeout"


class NotFound(PRMError):
    """No such route."""

    status_code = 404
    type = "not_found"


class ModelNotFound(NotFound):
    """The request names a ``model`` this server does not serve."""

    type = "model_not_found"


class InputTooLong(PRMError):
    """The request exceeds a configured limit (bytes, steps, items, tokens)."""

    status_code = 413
    type = "input_too_long"


def over_limit(count: int, limit: int, what: str) -> InputTooLong:
    """The error for ``count`` over a configured ``limit``: "``what`` (``{n}`` = count); the limit is L"."""
    return InputTooLong(f"{what.format(n=count)}; the limit is {limit}")


def check_limit(count: int, limit: int, what: str) -> None:
    """Raise ``over_limit(count, limit, what)`` when ``count`` exceeds ``limit``."""
    if count > limit:
        raise over_limit(count, limit, what)


class Unauthorized(PRMError):
    """Missing or wrong API key."""

    status_code = 401
    type = "unauthorized"


class Overloaded(PRMError):
    """The scoring queue is full; retry after ``retry_after`` seconds."""

    status_code = 503
    type = "overloaded"


class ModelNotReady(PRMError):
    """The model is not loaded or not warmed up yet."""

    status_code = 503
    type = "model_not_ready"


class EngineError(PRMError):
    """The scoring engine (a vLLM server, ``DREAMPRM_ENGINE=vllm``) answered something we cannot use."""

    status_code = 502
    type = "engine_error"


class PolicyError(PRMError):
    """The policy (generation) backend failed."""

    status_code = 502
    type = "policy_error"


class PolicyTimeout(PolicyError):
    """The policy backend did not answer in time."""

    status_code = 504
    type = "policy_timeout"


ERROR_TYPES: dict[str, type[PRMError]] = {
    cls.type: cls
    for cls in (PRMError, InvalidInput, ValidationFailed, InvalidEncoding, InvalidJSON, JSONTooDeep,
                NumberTooLarge, UnsupportedMediaType, MethodNotAllowed, RequestTimeout, NotFound, ModelNotFound,
                InputTooLong, Unauthorized, Overloaded, ModelNotReady, EngineError, PolicyError,
                PolicyTimeout)
}


def validation_failed(errors: Sequence[Mapping[str, Any]], *, limit: int = 5) -> ValidationFailed:
    """One line from pydantic's error list (``ValidationError.errors()``, FastAPI's too): ``loc: msg; ...``.

    The server's 422 body and the client's own validation use it, so both read the same.
    """
    parts = []
    for e in errors[:limit]:
        loc = ".".join(str(p) for p in e.get("loc", ())) or "request"
        parts.append(f"{loc}: {' '.join(str(e.get('msg', 'invalid')).split())}")
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return ValidationFailed("; ".join(parts) + more)

