"""The shapes other clients send and read: ``model`` on requests, OpenAI's ``/v1/models``, the rerank APIs'
``{query, documents, top_n}`` -> ``results[{index, relevance_score}]``."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

PROBLEM = "Read two integers and print their sum."
GOOD = "def main():\n    a, b = map(int, input().split())\n    print(a + b)\n\n\nmain()\n"
BAD = "def main():\n    print(0)\n\n\nmain()\n"


def test_model_is_accepted_echoed_and_an_unknown_one_is_404(client: TestClient) -> None:
    ok = client.post("/v1/score", json={"problem": PROBLEM, "code": GOOD, "model": "fake-prm"})
    assert ok.status_code == 200 and ok.json()["model"] == "fake-prm"
    batch = client.post("/v1/score", json={"model": "fake-prm", "items": [{"problem": PROBLEM, "code": GOOD}]})
    assert batch.status_code == 200 and batch.json()["model"] == "fake-prm"
    for path, body in [("/v1/score", {"problem": PROBLEM, "code": GOOD, "model": "gpt-4o"}),
                       ("/v1/score", {"model": "gpt-4o", "items": [{"problem": PROBLEM, "code": GOOD}]}),
                       ("/v1/score", {"items": [{"problem": PROBLEM, "code": GOOD, "model": "gpt-4o"}]}),
                       ("/v1/rerank", {"problem": PROBLEM, "candidates": [GOOD], "model": "gpt-4o"})]:
        r = client.post(path, json=body)
        assert r.status_code == 404, (path, r.text)
        error = r.json()["error"]
        assert error["type"] == "model_not_found" and "'gpt-4o'" in error["message"]
        assert "'fake-prm'" in error["message"] and "/v1/models" in error["message"]


def test_models_is_openai_shaped_and_keeps_our_fields(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    model = body["data"][0]
    assert model["id"] == "fake-prm" and model["object"] == "model" and model["owned_by"] == "dreamprm-code"
    assert isinstance(model["created"], int) and model["created"] > 1_600_000_000
    assert {"revision", "template", "separator_token", "default_aggregation", "max_tokens"} <= model.keys()


def test_rerank_accepts_the_rerank_api_shape(client: TestClient) -> None:
    r = client.post("/v1/rerank", json={"model": "fake-prm", "query": PROBLEM,
                                        "documents": [BAD, {"text": GOOD}, BAD], "top_n": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["ranking"]) == 3 and len(body["results"]) == 2
    assert [x["index"] for x in body["results"]] == [c["index"] for c in body["ranking"][:2]]
    assert [x["relevance_score"] for x in body["results"]] == [c["score"] for c in body["ranking"][:2]]
    first = body["results"][0]
    assert first["document"]["text"] == body["ranking"][0]["code"]
    bare = client.post("/v1/rerank", json={"query": PROBLEM, "documents": [GOOD], "return_documents": False})
    assert bare.json()["results"] == [{"index": 0, "relevance_score": bare.json()["ranking"][0]["score"],
                                       "document": None}]
    ours = client.post("/v1/rerank", json={"problem": PROBLEM, "candidates": [GOOD, BAD]}).json()
    assert len(ours["results"]) == 2  # our own shape gets results too


@pytest.mark.parametrize(("body", "message"), [
    ({"problem": PROBLEM, "query": PROBLEM, "candidates": [GOOD]}, "not both"),
    ({"query": PROBLEM, "documents": [GOOD], "candidates": [GOOD]}, "not both"),
    ({"documents": [GOOD]}, "problem statement"),
    ({"query": PROBLEM, "documents": [GOOD], "top_n": 0}, "top_n"),
    ({"query": PROBLEM, "documents": [{"title": "no text"}]}, "documents"),
])
def test_rerank_api_shape_errors(client: TestClient, body: dict[str, object], message: str) -> None:
    r = client.post("/v1/rerank", json=body)
    assert r.status_code == 422 and message in r.json()["error"]["message"], r.text
