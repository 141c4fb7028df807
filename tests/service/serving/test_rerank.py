"""/v1/rerank and /get_reward through the app (in-process) with a scripted policy and the real sandbox."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.errors import PolicyError
from service.http.app import create_app
from service.policy import Generation, GenerationRequest
from service.serving.engine import ScoringEngine
from service.settings import Settings

PROBLEM = "Read two integers and print their sum."
GOOD = ("def main():\n    a, b = map(int, input().split())\n    print(add(a, b))\n\n\n"
        "def add(a, b):\n    return a + b\n\n\nmain()\n")
BAD = "def main():\n    a, b = map(int, input().split())\n    print(a - b)\n\n\nmain()\n"
TESTS = [{"input": "1 2\n", "output": "3\n"}, {"input": "5 5\n", "output": "10\n"}]


class ScriptedPolicy:
    """Answers each request from a script: a text, an exception, or 'hang'."""

    name = "scripted"

    def __init__(self, script: list[str | Exception]) -> None:
        self.script = script
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> list[Generation]:
        i = len(self.requests)
        self.requests.append(request)
        step = self.script[i % len(self.script)]
        if step == "hang":
            await asyncio.sleep(3600)
        if isinstance(step, Exception):
            raise step
        return [Generation(str(step) + "\n```", "stop", 11) for _ in range(request.n)]

    async def aclose(self) -> None:
        return None


def app_client(settings: Settings, engine: ScoringEngine, policy: ScriptedPolicy | None) -> TestClient:
    return TestClient(create_app(settings, engine=engine, policy=policy))


@pytest.fixture
def scripted(settings: Settings, engine: ScoringEngine) -> Iterator[tuple[TestClient, ScriptedPolicy]]:
    policy = ScriptedPolicy([GOOD, BAD, GOOD + "\n# variant\n"])
    with app_client(settings, engine, policy) as c:
        yield c, policy


def test_given_candidates_are_ranked_by_score(client: TestClient) -> None:
    cands = [GOOD, BAD, "```python\n" + GOOD.replace("add", "plus") + "```\nexplanation"]
    r = client.post("/v1/rerank", json={"problem": PROBLEM, "candidates": cands})
    assert r.status_code == 200, r.text
    body = r.json()
    scores = [c["score"] for c in body["ranking"]]
    assert scores == sorted(scores, reverse=True)
    assert body["best_index"] == body["ranking"][0]["index"]
    assert sorted(c["index"] for c in body["ranking"]) == [0, 1, 2]
    third = next(c for c in body["ranking"] if c["index"] == 2)
    assert third["code"].startswith("def main") and "explanation" not in third["code"]  # fenced code used
    assert all(c["source"] == "given" and c["tests_passed"] is None and c["steps"] for c in body["ranking"])
    assert body["policy_usage"] is None and body["timings"]["generate_ms"] < body["timings"]["total_ms"]
    # the same scores as /v1/score
    one = client.post("/v1/score", json={"problem": PROBLEM, "code": BAD}).json()
    assert next(c for c in body["ranking"] if c["index"] == 1)["score"] == pytest.approx(one["score"])


def test_public_tests_put_passing_candidates_first(client: TestClient) -> None:
    r = client.post("/v1/rerank", json={"problem": PROBLEM, "candidates": [BAD, GOOD], "public_tests": TESTS})
    assert r.status_code == 200, r.text
    ranking = r.json()["ranking"]
    assert ranking[0]["index"] == 1 and ranking[0]["tests_passed"] is True
    tests = ranking[0]["tests"]
    assert {k: tests[k] for k in ("passed", "n_tests", "n_passed", "status")} == \
        {"passed": True, "n_tests": 2, "n_passed": 2, "status": "passed"}
    assert [c["source"] for c in tests["cases"]] == ["given", "given"] and tests["cases"][0]["input"] == "1 2\n"
    assert r.json()["tests_source"] == "given" and r.json()["examples"] is None
    assert ranking[1]["tests_passed"] is False and ranking[1]["tests"]["status"] == "wrong_answer"


def test_functional_public_tests(client: TestClient) -> None:
    code_ok = "def square(x):\n    return x * x\n"
    code_bad = "def square(x):\n    return x + x\n"
    r = client.post("/v1/rerank", json={"problem": "Square x.", "candidates": [code_bad, code_ok],
                                        "public_tests": [{"code": "assert square(3) == 9"}]})
    assert [c["tests_passed"] for c in r.json()["ranking"]] == [True, False]


def test_unscorable_candidate_is_ranked_last_not_an_error(client: TestClient) -> None:
    r = client.post("/v1/rerank", json={"problem": PROBLEM, "candidates": ["# only a comment\n", GOOD]})
    assert r.status_code == 200, r.text
    last = r.json()["ranking"][-1]
    assert last["index"] == 0 and last["score"] is None and last["error"]
    assert r.json()["best_index"] == 1


def test_generated_candidates(scripted: tuple[TestClient, ScriptedPolicy]) -> None:
    client, policy = scripted
    r = client.post("/v1/rerank", json={"problem": PROBLEM, "n": 3, "public_tests": TESTS,
                                        "policy": {"temperature": 0.5, "max_tokens": 300, "seed": 7}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["ranking"]) == 3 and all(c["source"] == "policy" for c in body["ranking"])
    assert body["policy_usage"] == {"policy": "scripted", "requested": 3, "returned": 3, "completion_tokens": 33,
                                    "partial": False, "errors": []}
    assert [c["tests_passed"] for c in body["ranking"]] == [True, True, False]
    # one request per sample, CoF prompt, fenced prefix, the caller's options, distinct seeds
    assert len(policy.requests) == 3 and {q.seed for q in policy.requests} == {7, 8, 9}
    q = policy.requests[0]
    assert q.n == 1 and q.temperature == 0.5 and q.max_tokens == 300 and q.prefix == "```python\n"
    assert "main()" in q.messages[-1]["content"] and PROBLEM in q.messages[-1]["content"]


def test_default_n_from_settings(settings: Settings, engine: ScoringEngine) -> None:
    policy = ScriptedPolicy([GOOD])
    with app_client(settings.model_copy(update={"default_n": 2}), engine, policy) as c:
        assert len(c.post("/v1/rerank", json={"problem": PROBLEM}).json()["ranking"]) == 2


def test_policy_timeout_keeps_what_arrived(settings: Settings, engine: ScoringEngine) -> None:
    policy = ScriptedPolicy([GOOD, "hang", BAD, "hang"])
    with app_client(settings.model_copy(update={"policy_timeout_s": 0.5}), engine, policy) as c:
        r = c.post("/v1/rerank", json={"problem": PROBLEM, "n": 4})
    assert r.status_code == 200, r.text
    usage = r.json()["policy_usage"]
    assert usage["partial"] is True and usage["returned"] == 2 and "timed out" in usage["errors"][0]


def test_policy_all_hang_is_504(settings: Settings, engine: ScoringEngine) -> None:
    with app_client(settings.model_copy(update={"policy_timeout_s": 0.2}), engine, ScriptedPolicy(["hang"])) as c:
        r = c.post("/v1/rerank", json={"problem": PROBLEM, "n": 2})
    assert r.status_code == 504 and r.json()["error"]["type"] == "policy_timeout"


def test_policy_failing_is_502_and_partial_failure_is_flagged(settings: Settings, engine: ScoringEngine) -> None:
    with app_client(settings, engine, ScriptedPolicy([PolicyError("policy answered 500: boom")])) as c:
        r = c.post("/v1/rerank", json={"problem": PROBLEM, "n": 2})
        assert r.status_code == 502 and "boom" in r.json()["error"]["message"]
    fresh = ScoringEngine(engine.model, settings)  # the first app closed its engine on shutdown
    with app_client(settings, fresh, ScriptedPolicy([GOOD, PolicyError("policy answered 500: boom")])) as c:
        usage = c.post("/v1/rerank", json={"problem": PROBLEM, "n": 2}).json()["policy_usage"]
        assert usage["partial"] and usage["returned"] == 1 and "boom" in usage["errors"][0]


def test_reply_without_code_block_is_scored_as_is(settings: Settings, engine: ScoringEngine) -> None:
    with app_client(settings, engine, ScriptedPolicy(["I cannot solve this."])) as c:
        r = c.post("/v1/rerank", json={"problem": PROBLEM, "n": 1})
    assert r.status_code == 200 and r.json()["ranking"][0]["source"] == "policy"


def test_public_tests_stop_at_the_first_failure_unless_all_results_are_asked_for(client: TestClient) -> None:
    code = "def square(x):\n    return 9\n"
    tests = [{"code": "assert square(2) == 4"}, {"code": "assert square(3) == 9"}]
    outcome = [client.post("/v1/rerank", json={"problem": "Square x.", "candidates": [code], "public_tests": tests,
                                               "all_test_results": every}).json()["ranking"][0]["tests"]
               for every in (False, True)]
    assert [o["n_passed"] for o in outcome] == [0, 1] and {o["status"] for o in outcome} == {"wrong_answer"}


def test_a_spent_sandbox_budget_is_reported_per_candidate(client: TestClient) -> None:
    spin = "while True:\n    pass\n"
    r = client.post("/v1/rerank", json={"problem": PROBLEM, "candidates": [spin, spin], "public_tests": TESTS,
                                        "sandbox_budget_s": 1})
    statuses = sorted(c["tests"]["status"] for c in r.json()["ranking"])
    assert statuses == ["budget_exceeded", "timeout"], r.text


@pytest.mark.parametrize(("body", "status", "kind"), [
    ({"problem": PROBLEM}, 400, "invalid_input"),  # no policy configured and no candidates
    ({"problem": PROBLEM, "candidates": [GOOD] * 17}, 413, "input_too_long"),
    ({"problem": PROBLEM, "n": 17}, 413, "input_too_long"),
    ({"problem": PROBLEM, "candidates": [GOOD], "public_tests": TESTS * 9}, 413, "input_too_long"),
    ({"problem": PROBLEM, "candidates": [GOOD], "n": 2}, 422, "validation_error"),
    ({"problem": PROBLEM, "candidates": [GOOD], "public_tests": TESTS, "sandbox_budget_s": 1e6}, 413,
     "input_too_long"),  # more sandbox time than the server allows
    ({"problem": PROBLEM, "candidates": [GOOD], "sandbox_budget_s": 0}, 422, "validation_error"),
    ({"problem": PROBLEM, "candidates": []}, 422, "validation_error"),
    ({"problem": "", "candidates": [GOOD]}, 422, "validation_error"),
    ({"problem": PROBLEM, "candidates": [GOOD], "public_tests": [{"input": "1"}]}, 422, "validation_error"),
    ({"problem": PROBLEM, "candidates": [GOOD], "public_tests": [{"code": "assert 1"}, {"input": "1", "output": "1"}]},
     422, "validation_error"),
    ({"problem": PROBLEM, "candidates": [GOOD], "policy": {"temperature": 9}}, 422, "validation_error"),
])
def test_bad_rerank_requests(client: TestClient, body: dict, status: int, kind: str) -> None:  # type: ignore[type-arg]
    r = client.post("/v1/rerank", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["type"] == kind and r.json()["error"]["message"]


def test_get_reward_openrlhf_contract(client: TestClient) -> None:
    prompt = f"{PROBLEM}\n"
    queries = [prompt + f"```python\n{GOOD}```", prompt + f"```python\n{BAD}```", prompt + "no code at all"]
    r = client.post("/get_reward", json={"query": queries})
    assert r.status_code == 200, r.text
    rewards = r.json()["rewards"]
    assert len(rewards) == 3 and all(0.0 <= x <= 1.0 for x in rewards)
    good = client.post("/v1/score", json={"problem": PROBLEM, "code": GOOD}).json()["score"]
    assert rewards[0] == pytest.approx(good)
    with_prompts = client.post("/get_reward", json={"query": queries[:1], "prompts": [prompt]}).json()
    assert with_prompts["rewards"][0] == pytest.approx(good)
    assert client.post("/get_reward", json={"query": queries, "prompts": [prompt]}).status_code == 400
    assert client.post("/get_reward", json={"query": "not a list"}).status_code == 422


# --- examples from the statement (issue #15) ------------------------------------------------------

STDIN_STATEMENT = PROBLEM + "\n\nExample\nInput\n1 2\n\nOutput\n3\n\nInput\n5 5\nOutput\n10\n"
DOCTEST = 'def square(x):\n    """Square x.\n    >>> square(3)\n    9\n    >>> square(-2)\n    4\n    """\n'
SQUARE_OK = "def square(x):\n    return x * x\n"
SQUARE_HALF = "def square(x):\n    return 9 if x == 3 else 0\n"  # passes one of the two examples
SQUARE_BAD = "def square(x):\n    return x + x\n"


def test_statement_examples_run_by_default(client: TestClient) -> None:
    r = client.post("/v1/rerank", json={"problem": STDIN_STATEMENT, "candidates": [BAD, GOOD]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tests_source"] == "statement"
    assert body["examples"] == {"test_type": "stdin", "entry_point": None, "extracted": 2, "skipped": 0,
                                "truncated": False}
    first, second = body["ranking"]
    assert first["index"] == 1 and first["tests"]["n_passed"] == 2 and second["tests"]["n_passed"] == 0
    case = first["tests"]["cases"][0]
    assert case["source"] == "statement" and case["input"] == "1 2\n" and "Input" in case["example"]
    assert first["tests"]["seconds"] > 0 and body["timings"]["examples_ms"] >= 0


def test_rank_rule_all_pass_then_fraction_then_score(client: TestClient) -> None:
    r = client.post("/v1/rerank", json={"problem": DOCTEST, "candidates": [SQUARE_BAD, SQUARE_HALF, SQUARE_OK]})
    ranking = r.json()["ranking"]
    assert [c["index"] for c in ranking] == [2, 1, 0]
    assert [(c["tests"]["n_passed"], c["tests"]["n_tests"]) for c in ranking] == [(2, 2), (1, 2), (0, 2)]
    assert ranking[0]["tests"]["cases"][0]["code"] == "assert square(3) == 9"


def test_examples_off_and_given_tests_win(client: TestClient) -> None:
    off = client.post("/v1/rerank", json={"problem": STDIN_STATEMENT, "candidates": [BAD, GOOD], "examples": "off"})
    assert off.json()["tests_source"] is None and off.json()["examples"] is None
    assert all(c["tests"] is None for c in off.json()["ranking"])
    given = client.post("/v1/rerank", json={"problem": STDIN_STATEMENT, "candidates": [BAD, GOOD],
                                            "public_tests": [{"input": "4 4\n", "output": "8\n"}]})
    body = given.json()
    assert body["tests_source"] == "given" and body["ranking"][0]["tests"]["n_tests"] == 1
    assert body["ranking"][0]["tests"]["cases"][0]["source"] == "given"


def test_no_example_in_statement_ranks_by_score(client: TestClient) -> None:
    r = client.post("/v1/rerank", json={"problem": PROBLEM, "candidates": [BAD, GOOD]})
    body = r.json()
    assert body["tests_source"] is None and body["examples"]["extracted"] == 0
    assert all(c["tests"] is None for c in body["ranking"])


def test_score_run_examples_adds_counts_not_a_new_score(client: TestClient) -> None:
    plain = client.post("/v1/score", json={"problem": DOCTEST, "code": SQUARE_HALF}).json()
    assert plain["examples"] is None
    checked = client.post("/v1/score", json={"problem": DOCTEST, "code": SQUARE_HALF, "run_examples": True}).json()
    assert checked["examples"] == {"passed": 1, "total": 2, "status": "wrong_answer"}
    assert checked["score"] == plain["score"]
    batch = client.post("/v1/score", json={"items": [
        {"problem": DOCTEST, "code": SQUARE_OK, "run_examples": True},
        {"problem": PROBLEM, "code": GOOD, "run_examples": True},
        {"problem": DOCTEST, "code": SQUARE_OK}]}).json()
    assert [i["examples"] for i in batch["items"]] == [{"passed": 2, "total": 2, "status": "passed"},
                                                       {"passed": 0, "total": 0, "status": None}, None]


def test_hostile_example_runs_only_in_the_sandbox(client: TestClient, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An example that calls os.system is never evaluated by the service: it reaches only ``run_tests``."""
    import service.sandbox.pool as rerank_module  # where the rerank's sandbox session calls run_tests

    marker = tmp_path / "pwned"
    problem = (f"def f(x):\n    '''\n    >>> f(__import__('os').system('touch {marker}'))\n    0\n    '''\n")
    seen: list[str] = []
    real = rerank_module.run_tests

    def spy(code: str, tests: list, **kw: object) -> object:  # type: ignore[type-arg]
        seen.extend(t.code for t in tests)
        return real(code, tests, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(rerank_module, "run_tests", spy)
    r = client.post("/v1/rerank", json={"problem": problem, "candidates": ["def f(x):\n    return 0\n"]})
    assert r.status_code == 200, r.text
    assert seen and "os" in seen[0]
    assert r.json()["timings"]["examples_ms"] < 1000
    # the sandbox ran it as its own user in its own run directory (root: a uid that cannot write here)
    import os

    if os.geteuid() == 0:
        assert not marker.exists()


def test_ten_thousand_example_headers_stay_bounded(client: TestClient) -> None:
    problem = PROBLEM + "\n" + "Example\nInput\n1 2\nOutput\n3\n\n" * 10_000
    r = client.post("/v1/rerank", json={"problem": problem, "candidates": [BAD, GOOD]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["examples"]["extracted"] == 1 and body["examples"]["truncated"] is True
    assert body["ranking"][0]["index"] == 1 and body["timings"]["examples_ms"] < 10_000
