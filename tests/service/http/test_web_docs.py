"""service.http.web (in-process): self-hosted docs, tags, request examples that the API accepts, the playground
page's offline promise, and the key rules for pages versus API calls."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.http.app import create_app
from service.http.web.docs import TAGS, tag_of
from service.http.web.examples import REQUEST_EXAMPLES
from service.http.web.playground import STATIC
from service.serving.engine import ScoringEngine
from service.settings import Settings
from tests.service.serving.test_rerank import GOOD, ScriptedPolicy

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)


@pytest.fixture
def spec(client: TestClient) -> dict[str, Any]:
    result: dict[str, Any] = client.get("/openapi.json").json()
    return result


@pytest.fixture
def keyed(settings: Settings, engine: ScoringEngine) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(**{**settings.model_dump(), "api_keys": ["k1"]}), engine=engine)) as c:
        yield c


def test_every_operation_is_grouped_under_a_declared_tag(spec: dict[str, Any]) -> None:
    declared = [t["name"] for t in spec["tags"]]
    assert declared == [t["name"] for t in TAGS]
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            assert operation["tags"] == [tag_of(path)] and tag_of(path) in declared, path


def test_every_request_body_has_examples_and_never_code_and_steps_both(spec: dict[str, Any]) -> None:
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            assert body.get("examples"), f"{path} has no request example"
            for name, example in body["examples"].items():
                items = example["value"].get("items", [example["value"]])
                assert all(not ("code" in i and "steps" in i) for i in items), (path, name)


@pytest.mark.parametrize("path,name", [(p, n) for p, examples in REQUEST_EXAMPLES.items() for n in examples])
def test_each_example_is_a_request_the_api_accepts(settings: Settings, engine: ScoringEngine,
                                                   path: str, name: str) -> None:
    policy = ScriptedPolicy([GOOD])  # for the example that asks the policy to write candidates
    with TestClient(create_app(settings, engine=engine, policy=policy)) as client:
        response = client.post(path, json=REQUEST_EXAMPLES[path][name]["value"])
    assert response.status_code == 200, response.text


def test_docs_pages_load_their_assets_from_the_service(client: TestClient) -> None:
    for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        response = client.get(page)
        html = response.text
        assert not EXTERNAL.search(html), EXTERNAL.search(html)
        assert "img-src 'self' data:" in response.headers["content-security-policy"]
        (url,) = re.findall(rf"""["']([^"']*{re.escape(asset)})["']""", html)
        response = client.get(url)
        assert response.status_code == 200 and "javascript" in response.headers["content-type"]
        assert len(response.content) > 500_000  # the real bundle, not a stub
    assert client.get("/static/docs/swagger-ui.css").headers["content-type"].startswith("text/css")


def test_playground_page_is_offline_by_construction(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert not EXTERNAL.search(response.text)
    for asset in ("playground.js", "playground.css"):
        served = client.get(f"/static/playground/{asset}")
        assert served.status_code == 200 and served.text == (STATIC / asset).read_text()
        assert not re.search(r"https?://", served.text), asset  # no CDN, font or API elsewhere


def test_pages_are_open_and_the_api_still_wants_the_key(keyed: TestClient) -> None:
    for path in ("/", "/docs", "/redoc", "/openapi.json", "/static/playground/playground.js",
                 "/static/docs/swagger-ui.css"):
        assert keyed.get(path).status_code == 200, path
    body = REQUEST_EXAMPLES["/v1/score"]["code"]["value"]
    assert keyed.post("/v1/score", json=body).status_code == 401
    assert keyed.post("/v1/score", json=body, headers={"Authorization": "Bearer k1"}).status_code == 200
    assert keyed.get("/static/../v1/models").status_code in {401, 404}  # no way around the key via the prefix


def test_openapi_declares_the_optional_bearer_key(spec: dict[str, Any]) -> None:
    assert spec["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": "needed only when the server sets DREAMPRM_API_KEYS"}
    assert "security" not in spec["paths"]["/ready"]["get"]
    assert spec["paths"]["/v1/score"]["post"]["security"] == [{"apiKey": []}, {}]
