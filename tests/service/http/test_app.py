"""The HTTP API over a fake model: routes, the error table, auth, limits, metrics, readiness."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.http.app import create_app
from service.serving.engine import ScoringEngine
from service.settings import Settings
from tests.fakes import FakeModel, logit_at

CODE = "import os\n\ndef main():\n    return helper()\n\ndef helper():\n    return 2\n"


def score(client: TestClient, body: object, **kw: object) -> dict:  # type: ignore[type-arg]
    r = client.post("/v1/score", json=body, **kw)  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_split(client: TestClient) -> None:
    r = client.post("/v1/split", json={"code": CODE})
    assert r.status_code == 200
    body = r.json()
    assert body["parsed"] is True and body["language"] == "python"
    assert [s["name"] for s in body["steps"]] == ["preamble", "main", "helper"]
    assert "".join(s["text"] for s in body["steps"]) == CODE


def test_score_item_matches_the_model(client: TestClient, fake_model: FakeModel) -> None:
    body = score(client, {"problem": "Return 2.", "code": CODE, "aggregation": "mean"})
    enc = fake_model.encode("Return 2.", [s["text"] for s in client.post("/v1/split", json={"code": CODE})
                                         .json()["steps"]])
    expected = [logit_at(enc.input_ids, p) for p in enc.step_end_positions]
    assert [s["logit"] for s in body["steps"]] == pytest.approx(expected)
    assert [s["name"] for s in body["steps"]] == ["preamble", "main", "helper"]
    assert body["aggregation"] == "mean" and body["score"] == body["aggregate"]["mean"]
    assert set(body["aggregate"]) == {"min", "mean", "last", "product", "logodds"}
    assert body["cached"] is False and body["truncated"] is False and body["model"] == "fake-prm"
    assert score(client, {"problem": "Return 2.", "code": CODE})["cached"] is True
    assert score(client, {"problem": "Return 3.", "code": CODE})["cached"] is False


def test_score_batch_and_explicit_steps(client: TestClient) -> None:
    body = score(client, {"items": [
        {"problem": "p", "code": CODE},
        {"problem": "p", "steps": ["import os\n\n", "def main():\n    return helper()\n\n",
                                   "def helper():\n    return 2\n"], "aggregation": "last"},
    ], "aggregation": "min"})
    first, second = body["items"]
    assert first["aggregation"] == "min" and second["aggregation"] == "last"
    assert [s["logit"] for s in first["steps"]] == [s["logit"] for s in second["steps"]]  # same steps
    assert [s["name"] for s in second["steps"]] == ["step_0", "step_1", "step_2"]


def test_truncated_items_report_unscored_steps(settings: Settings) -> None:
    engine = ScoringEngine(FakeModel(max_tokens=200), settings)
    with TestClient(create_app(settings, engine=engine)) as c:
        code = "".join(f"def f{i}():\n    return {i}\n\n" for i in range(12))
        body = score(c, {"problem": "x" * 1000, "code": code})
    assert body["truncated"] is True
    scored = [s for s in body["steps"] if s["score"] is not None]
    assert 0 < len(scored) < 12 and body["steps"][-1]["score"] is None


@pytest.mark.parametrize(("body", "status", "etype"), [
    ({"problem": "p"}, 422, "validation_error"),
    ({"problem": "p", "code": "x", "steps": ["x"]}, 422, "validation_error"),
    ({"problem": "p", "code": ""}, 422, "validation_error"),
    ({"problem": "p", "code": "x", "colour": 1}, 422, "validation_error"),
    ({"problem": 5, "code": "x"}, 422, "validation_error"),
    ({"problem": "p", "code": "x", "language": "cobol"}, 422, "validation_error"),
    ({"problem": "p", "code": "x", "aggregation": "max"}, 422, "validation_error"),
    ({"items": []}, 422, "validation_error"),
    ({"problem": "p", "code": "# just a comment\n"}, 400, "invalid_input"),
    ({"problem": "p", "code": "def f():\n    return '\x00'\n"}, 400, "invalid_input"),
    ({"problem": "p", "code": "".join(f"def f{i}(): pass\n" for i in range(300))}, 413, "input_too_long"),
    ({"problem": "p", "steps": ["x\n"] * 300}, 413, "input_too_long"),
    ({"items": [{"problem": "p", "code": "x"}] * 65}, 413, "input_too_long"),
    ([1, 2], 422, "validation_error"),
])
def test_bad_input_gets_a_clear_4xx(client: TestClient, body: object, status: int, etype: str) -> None:
    r = client.post("/v1/score", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["type"] == etype and error["message"] and error["request_id"] == r.headers["x-request-id"]


def test_batch_errors_name_the_item(client: TestClient) -> None:
    r = client.post("/v1/score", json={"items": [{"problem": "p", "code": "x"}, {"problem": "p", "code": "#\n"}]})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("items[1]: ")


def test_malformed_json_and_wrong_content_type(client: TestClient) -> None:
    r = client.post("/v1/score", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = client.post("/v1/score", content=b'{"problem": "p", "code": "x"}',
                    headers={"content-type": "text/plain"})
    assert r.status_code == 400 and "Content-Type: application/json" in r.json()["error"]["message"]


def test_request_size_limit(settings: Settings, engine: ScoringEngine) -> None:
    small = settings.model_copy(update={"max_request_bytes": 2048})
    with TestClient(create_app(small, engine=engine)) as c:
        r = c.post("/v1/score", json={"problem": "p", "code": "x = 1\n" * 1000})
        assert r.status_code == 413 and r.json()["error"]["type"] == "input_too_long"
        assert c.post("/v1/score", json={"problem": "p", "code": "x = 1\n"}).status_code == 200


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    assert client.get("/health", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    made = client.get("/health", headers={"x-request-id": "bad id!"}).headers["x-request-id"]
    assert made != "bad id!" and len(made) == 32


def test_not_found_uses_the_error_body(client: TestClient) -> None:
    r = client.get("/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"


def test_api_keys(settings: Settings, engine: ScoringEngine) -> None:
    keyed = Settings(checkpoint=settings.checkpoint, api_keys="k1, k2")  # type: ignore[arg-type]
    with TestClient(create_app(keyed, engine=engine)) as c:
        body = {"code": "x = 1\n"}
        assert c.post("/v1/split", json=body).status_code == 401
        r = c.post("/v1/split", json=body, headers={"authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
        assert c.post("/v1/split", json=body, headers={"authorization": "Bearer k2"}).status_code == 200
        assert c.post("/v1/split", json=body, headers={"authorization": "Basic k2"}).status_code == 401
        assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 200


def test_models(client: TestClient) -> None:
    data = client.get("/v1/models").json()["data"]
    assert data[0]["id"] == "fake-prm" and data[0]["template"] == "dreamprm-cof-v1"


def test_metrics_count_requests_and_cache(client: TestClient) -> None:
    score(client, {"problem": "p", "code": CODE})
    score(client, {"problem": "p", "code": CODE})
    text = client.get("/metrics").text
    assert 'dreamprm_requests_total{route="/v1/score",status="200"} 2.0' in text
    assert 'dreamprm_cache_total{backend="memory",result="hit"} 1.0' in text
    assert "dreamprm_batch_size_count" in text and "dreamprm_tokens_scored_total" in text


def test_overload_gives_503_with_retry_after(settings: Settings, fake_model: FakeModel) -> None:
    tight = settings.model_copy(update={"max_queue": 1, "max_batch_size": 1})
    engine = ScoringEngine(fake_model, tight)
    with TestClient(create_app(tight, engine=engine)) as c:
        fake_model.gate.clear()  # the worker blocks: the first request holds it, the next waits

        results: list[int] = []

        def call(i: int) -> None:
            results.append(c.post("/v1/score", json={"problem": str(i), "code": "x = 1\n"}).status_code)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        # steady state: one request in the (blocked) forward pass, one queued, the other two refused
        for _ in range(1000):
            if len(results) == 2 and engine.batcher.depth == 1:
                break
            threading.Event().wait(0.01)
        assert len(results) == 2 and engine.batcher.depth == 1
        r = c.post("/v1/score", json={"problem": "late", "code": "x = 1\n"})
        fake_model.gate.set()
        for t in threads:
            t.join()
    assert r.status_code == 503 and r.json()["error"]["type"] == "overloaded"
    assert int(r.headers["retry-after"]) >= 1
    assert results.count(503) >= 1 and results.count(200) >= 1


async def test_ready_only_after_a_real_warm_up(settings: Settings, fake_model: FakeModel) -> None:
    fake_model.gate.clear()  # the warm-up forward pass blocks on the worker thread
    engine = ScoringEngine(fake_model, settings)
    opening = asyncio.create_task(engine.open())
    await asyncio.sleep(0.05)
    assert not engine.ready
    fake_model.gate.set()
    await opening
    assert engine.ready and fake_model.batches == [1]
    await engine.aclose()
    assert not engine.ready


def test_ready_turns_false_when_the_worker_stops(client: TestClient) -> None:
    body = client.get("/ready").json()
    assert body | {"sandbox": None} == {"ready": True, "model": "fake-prm", "detail": None, "sandbox": None}
    client.portal.call(client.app.state.engine.batcher.aclose)  # type: ignore[attr-defined]
    r = client.get("/ready")
    assert r.status_code == 503 and r.json()["detail"] == "scoring worker stopped"
    assert client.post("/v1/score", json={"problem": "p", "code": "x"}).status_code == 503


def test_ready_and_metrics_say_which_sandbox_isolation_is_active(client: TestClient) -> None:
    from service.sandbox import isolation

    for _ in range(1000):  # probed in the background at start-up
        if (level := client.get("/ready").json()["sandbox"]) is not None:
            break
        time.sleep(0.02)
    assert level == isolation() and level in ("full", "namespaces", "none", "unavailable")
    assert f'dreamprm_sandbox_isolation{{level="{level}"}} 1.0' in client.get("/metrics").text


def test_health_and_ready_report_a_failed_load(tmp_path: Path) -> None:
    app = create_app(Settings(checkpoint=tmp_path / "missing"))
    with TestClient(app) as c:
        for _ in range(100):
            if c.get("/ready").json()["detail"] != "loading":
                break
            asyncio.run(asyncio.sleep(0.02))
        ready = c.get("/ready")
        assert ready.status_code == 503 and "is not a directory" in ready.json()["detail"]
        assert c.get("/health").status_code == 503
        r = c.post("/v1/score", json={"problem": "p", "code": "x"})
        assert r.status_code == 503 and r.json()["error"]["type"] == "model_not_ready"
