"""The audit's hostile HTTP inputs (issue 14): each gets a 4xx with a precise type, the error shape and
``x-request-id``; none gets a 5xx. Also: 405 with Allow, strict types, the cross-field rules in the
OpenAPI schema, a last-resort 500 in the error shape, and a policy that answers no usable choice."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.http.app import create_app
from service.policy import OpenAIPolicy
from service.serving.engine import ScoringEngine
from service.settings import Settings

PROBLEM = "Read two integers and print their sum."
CODE = "def main():\n    a, b = map(int, input().split())\n    print(a + b)\n\n\nmain()\n"


def post_raw(client: TestClient, path: str, body: bytes, **headers: str) -> httpx.Response:
    return client.post(path, content=body, headers={"content-type": "application/json", **headers})


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # ensure_ascii: a lone surrogate travels as the escape \ud800


def assert_error(r: httpx.Response, status: int, etype: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error: dict[str, Any] = r.json()["error"]
    assert error["type"] == etype and error["message"] and error["request_id"] == r.headers["x-request-id"]
    return error


# every text field of every route, with a lone surrogate and with NUL
TEXT_FIELDS = [
    ("/v1/split", {"code": "{}"}),
    ("/v1/split", {"code": CODE, "language": "{}"}),
    ("/v1/score", {"problem": "{}", "code": CODE}),
    ("/v1/score", {"problem": PROBLEM, "code": "{}"}),
    ("/v1/score", {"problem": PROBLEM, "steps": [CODE, "{}"]}),
    ("/v1/score", {"items": [{"problem": "{}", "code": CODE}]}),
    ("/v1/rerank", {"problem": "{}", "candidates": [CODE]}),
    ("/v1/rerank", {"problem": PROBLEM, "candidates": ["{}"]}),
    ("/v1/rerank", {"problem": PROBLEM, "candidates": [CODE], "public_tests": [{"input": "{}", "output": "3"}]}),
    ("/v1/rerank", {"problem": PROBLEM, "candidates": [CODE], "public_tests": [{"input": "1 2", "output": "{}"}]}),
    ("/v1/rerank", {"problem": PROBLEM, "candidates": [CODE], "public_tests": [{"code": "{}"}]}),
    ("/v1/rerank", {"problem": PROBLEM, "candidates": [CODE], "starter_code": "{}"}),
    ("/v1/rerank", {"problem": PROBLEM, "n": 1, "policy": {"model": "{}"}}),
    ("/get_reward", {"query": ["{}"]}),
    ("/get_reward", {"query": [CODE], "prompts": ["{}"]}),
    ("/get_reward", {"query": [CODE], "labels": [{"deep": ["{}"]}]}),
    ("/v1/score", {"problem": PROBLEM, "code": CODE, "{}": 1}),  # in a key
]


@pytest.mark.parametrize(("path", "template"), TEXT_FIELDS)
def test_lone_surrogate_in_any_text_field_is_a_400(client: TestClient, path: str, template: Any) -> None:
    body = json.dumps(template).replace("{}", "\\ud800x").encode()
    error = assert_error(post_raw(client, path, body), 400, "invalid_encoding")
    assert "surrogate" in error["message"]


@pytest.mark.parametrize(("path", "template"), TEXT_FIELDS)
def test_nul_in_any_text_field_is_a_400(client: TestClient, path: str, template: Any) -> None:
    body = json.dumps(template).replace("{}", "a\\u0000b").encode()
    error = assert_error(post_raw(client, path, body), 400, "invalid_input")
    assert "NUL" in error["message"]


def test_the_error_names_the_field(client: TestClient) -> None:
    body = dumps({"problem": PROBLEM, "candidates": [CODE], "public_tests": [{"input": "1\x00", "output": "3"}]})
    assert "public_tests[0].input" in assert_error(post_raw(client, "/v1/rerank", body), 400,
                                                   "invalid_input")["message"]


@pytest.mark.parametrize(("body", "headers", "status", "etype"), [
    (b'{"code": "\xff\xfe"}', {}, 400, "invalid_encoding"),
    (b'\xef\xbb\xbf{"code": "x"}', {}, 400, "invalid_encoding"),
    (b"[" * 100_000 + b"]" * 100_000, {}, 400, "json_too_deep"),
    (b'{"code": ' + b"[" * 40 + b"]" * 40 + b"}", {}, 400, "json_too_deep"),
    (b'{"code": ' + b"9" * 5000 + b"}", {}, 400, "number_too_large"),
    (b'{"code": "x", "language": 1e400}', {}, 400, "number_too_large"),
    (b'{"code": NaN}', {}, 400, "invalid_json"),
    (b'{"code": "x",}', {}, 400, "invalid_json"),
    (gzip.compress(b'{"code": "x = 1\\n"}'), {"content-encoding": "gzip"}, 415, "unsupported_media_type"),
    (b'{"code": "x = 1\\n"}', {"content-encoding": "br"}, 415, "unsupported_media_type"),
])
def test_malformed_bodies_get_a_precise_type(client: TestClient, body: bytes, headers: dict[str, str],
                                             status: int, etype: str) -> None:
    r = post_raw(client, "/v1/split", body, **headers)
    assert_error(r, status, etype)
    if status == 415:
        assert r.headers["accept-encoding"] == "identity"


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/rerank", {"problem": PROBLEM, "n": 1, "policy": {"seed": False}}),
    ("/v1/rerank", {"problem": PROBLEM, "n": True}),
    ("/v1/rerank", {"problem": PROBLEM, "n": "2"}),
    ("/v1/rerank", {"problem": PROBLEM, "n": 1, "policy": {"max_tokens": 64.0}}),
    ("/v1/rerank", {"problem": PROBLEM, "n": 1, "policy": {"temperature": "0.5"}}),
    ("/v1/score", {"problem": PROBLEM, "code": CODE, "language": ["python"]}),
])
def test_types_are_strict(client: TestClient, path: str, body: Any) -> None:
    assert_error(client.post(path, json=body), 422, "validation_error")


def test_405_names_the_allowed_methods(client: TestClient) -> None:
    for method, path, allowed in [("GET", "/v1/score", "POST"), ("DELETE", "/health", "GET"),
                                  ("PUT", "/get_reward", "POST")]:
        r = client.request(method, path)
        assert_error(r, 405, "method_not_allowed")
        assert allowed in r.headers["allow"]


def test_unexpected_exceptions_are_a_500_in_the_error_shape(settings: Settings, engine: ScoringEngine) -> None:
    async def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret detail")

    engine.split = boom  # type: ignore[method-assign]
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as c:
        r = c.post("/v1/split", json={"code": "x = 1\n"}, headers={"x-request-id": "trace-42"})
    error = assert_error(r, 500, "internal_error")
    assert error["request_id"] == "trace-42" and "secret" not in r.text


def test_policy_without_a_usable_choice_is_a_502_that_says_so(settings: Settings, engine: ScoringEngine) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, json={"choices": []})

    policy = OpenAIPolicy("http://policy.test", "m", retries=2, backoff_s=0.01,
                          transport=httpx.MockTransport(handler))
    with TestClient(create_app(settings, engine=engine, policy=policy)) as c:
        r = c.post("/v1/rerank", json={"problem": PROBLEM, "n": 4})
    error = assert_error(r, 502, "policy_error")
    assert "no usable choice" in error["message"] and '{"choices":[]}' in error["message"]
    assert calls == 4 * 3  # n requests, each tried 1 + retries times: bounded


# --- the cross-field rules, as the OpenAPI schema states them ---------------------------------

def _valid(schema: dict[str, Any], components: dict[str, Any], value: Any) -> bool:
    import jsonschema_rs  # schemathesis's validator (the dev extra)

    rooted = {**schema, "components": {"schemas": components}}  # so that #/components/... refs resolve
    return bool(jsonschema_rs.Draft202012Validator(rooted).is_valid(value))


CROSS_FIELD = [
    ("ScoreItem", {"problem": "p", "code": "x"}, True),
    ("ScoreItem", {"problem": "p", "steps": ["x"]}, True),
    ("ScoreItem", {"problem": "p", "code": "x", "steps": ["x"]}, False),
    ("ScoreItem", {"problem": "p"}, False),
    ("ScoreItem", {"problem": "p", "code": "x", "steps": None}, True),
    ("RerankRequest", {"problem": "p", "candidates": ["x"]}, True),
    ("RerankRequest", {"problem": "p", "n": 2}, True),
    ("RerankRequest", {"problem": "p"}, True),
    ("RerankRequest", {"problem": "p", "candidates": ["x"], "n": 2}, False),
    ("RerankRequest", {"problem": "p", "candidates": ["x"], "n": None}, True),
    ("RerankRequest", {"problem": "p", "n": 1, "public_tests": [{"code": "assert 1"}, {"code": "assert 2"}]}, True),
    ("RerankRequest", {"problem": "p", "n": 1, "public_tests": [{"code": "assert 1"},
                                                                {"input": "1", "output": "1"}]}, False),
    ("PublicTest", {"input": "1", "output": "1"}, True),
    ("PublicTest", {"code": "assert 1"}, True),
    ("PublicTest", {"input": "1"}, False),
    ("PublicTest", {"code": "assert 1", "output": "1"}, False),
]


@pytest.mark.parametrize(("name", "value", "ok"), CROSS_FIELD)
def test_cross_field_rules_are_in_the_schema_and_match_the_server(client: TestClient, name: str, value: Any,
                                                                  ok: bool) -> None:
    """The schema accepts exactly what the server accepts (checked with a JSON Schema validator), so
    generated clients and schemathesis see the rules the audit found missing."""
    pytest.importorskip("jsonschema_rs")
    spec = client.get("/openapi.json").json()
    components = spec["components"]["schemas"]
    assert _valid(components[name], components, value) is ok
    from service import schemas

    model = getattr(schemas, name)
    try:
        model.model_validate(value)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted is ok
