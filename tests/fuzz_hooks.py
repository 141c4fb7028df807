"""Schemathesis hooks for the fuzz test (``SCHEMATHESIS_HOOKS=tests.fuzz_hooks``): every response, whatever
its status, carries ``x-request-id``; every error response has the service's error shape with that id."""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from hypothesis.internal import lambda_sources

_describe_lambda = lambda_sources.lambda_description


def _lambda_description(f: Any) -> str:
    """CPython 3.11.7's ``ast.parse`` can raise ``SystemError: AST constructor recursion depth mismatch``
    deep in hypothesis's recursive strategies (when it describes a lambda for a repr): a crash of the
    generator, not of the server. Describe such a lambda without its source instead."""
    try:
        return str(_describe_lambda(f))
    except SystemError:
        return "lambda: ..."


lambda_sources.lambda_description = _lambda_description


@schemathesis.check
def request_id_and_error_shape(ctx: Any, response: Any, case: Any) -> None:
    ids = response.headers.get("x-request-id") or []
    if not ids or not ids[0]:
        raise AssertionError(f"{response.status_code} without x-request-id")
    if response.status_code < 400:
        return
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError) as exc:
        raise AssertionError(f"{response.status_code} without the error shape: {response.content[:200]!r}") from exc
    if not isinstance(error, dict) or not error.get("type") or not error.get("message"):
        raise AssertionError(f"{response.status_code}: incomplete error body {error!r}")
    if error.get("request_id") != ids[0]:
        raise AssertionError(f"error.request_id {error.get('request_id')!r} != x-request-id {ids[0]!r}")
