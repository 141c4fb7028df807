"""The playground (``/``) and the API docs (``/docs``, ``/redoc``) in a real headless Chromium, offline.

Debian's ``chromium`` driven by Playwright (``executable_path``; Playwright downloads no browser). The
service is the real one (``python -m service``, a tiny checkpoint, an API key). Every request the pages
make is checked to stay on the loopback server. Screenshots go to ``tmp_path``, and to ``docs/`` with
``UPDATE_SCREENSHOTS=1``. Skips without Chromium or Playwright (fails instead under ``CI=1``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from service.settings import DEFAULT_CHECKPOINT
from tests.live import live_server_process

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
KEY = "playground-key"
DOCS = Path(__file__).resolve().parents[3] / "docs"
PROBLEM = "Read two integers from one line of stdin and print their sum."
PROGRAM = "def main():\n    a, b = map(int, input().split())\n    print(add(a, b))\n\n\ndef add(a, b):\n" \
          "    return a + b\n\n\nmain()\n"


def _need(condition: bool, why: str) -> None:
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module")
def server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service with a tiny random checkpoint; with the default checkpoint when refreshing screenshots."""
    log = tmp_path_factory.mktemp("browser") / "server.log"
    checkpoint = DEFAULT_CHECKPOINT if os.environ.get("UPDATE_SCREENSHOTS") else tiny_checkpoint
    with live_server_process(checkpoint, log, ready_timeout_s=600, DREAMPRM_API_KEYS=KEY,
                             DREAMPRM_POLICY="none") as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _need(shutil.which(CHROMIUM) is not None, f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "playwright is not installed (pip install 'dreamprm-code[dev]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    """A page whose requests may only reach the test server; anything else is aborted and reported."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    outside: list[str] = []
    server_host = urlsplit(server).netloc

    def gate(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).netloc == server_host or url.startswith("data:"):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    context.route("**/*", gate)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not outside, f"the page reached outside the server: {outside}"
    assert not errors, f"JavaScript errors: {errors}"


def _screenshot(page: Any, name: str, tmp_path: Path) -> None:
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(tmp_path / name))
    if os.environ.get("UPDATE_SCREENSHOTS"):
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS / name))


def _api(server: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{server}{path}", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def _rendered_steps(card: Any) -> list[tuple[str, str, str]]:
    return [(s.get_attribute("data-step-name"), s.get_attribute("data-score"), s.locator(".step-score").inner_text())
            for s in card.locator(".step").all()]


def test_playground_scores_one_program_as_the_api_does(page: Any, server: str, tmp_path: Path) -> None:
    page.goto(server + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#problem", PROBLEM)
    page.locator("#programs textarea").first.fill(PROGRAM)
    page.click("#submit")  # no key yet: the API's 401, said in one line
    page.wait_for_selector(".status.error")
    assert page.inner_text("#status").startswith("401 unauthorized") and "API key" in page.inner_text("#status")

    page.fill("#apikey", KEY)
    page.click("#submit")
    card = page.wait_for_selector(".card.result")
    api = _api(server, "/v1/score", {"problem": PROBLEM, "code": PROGRAM, "language": "python"})
    rendered = _rendered_steps(page.locator(".card.result"))
    assert [name for name, _, _ in rendered] == [s["name"] for s in api["steps"]]
    for (_, data_score, text), step in zip(rendered, api["steps"], strict=True):
        assert float(data_score) == step["score"]  # the same number, not a re-computation
        assert text == f"{step['score']:.3f}"
    assert float(card.get_attribute("data-score")) == api["score"]
    assert page.inner_text(".card.result .score-chip") == f"{api['score']:.3f}"
    assert page.locator(".step").first.evaluate("e => getComputedStyle(e).backgroundColor") != "rgba(0, 0, 0, 0)"
    _screenshot(page, "playground-score.png", tmp_path)


def test_playground_reranks_programs_with_their_test_results(page: Any, server: str, tmp_path: Path) -> None:
    page.goto(server + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#apikey", KEY)
    page.click("#example")  # three programs, two stdin tests
    assert page.inner_text("#submit") == "Rerank 3 programs"
    page.click("#submit")
    page.wait_for_selector(".card.candidate >> nth=2")
    programs = [t.input_value() for t in page.locator("#programs textarea").all()]
    api = _api(server, "/v1/rerank", {"problem": page.input_value("#problem"), "language": "python",
                                      "candidates": programs,
                                      "public_tests": [{"input": "1 2\n", "output": "3\n"},
                                                       {"input": "-5 5\n", "output": "0\n"}]})
    cards = page.locator(".card.candidate").all()
    assert [int(c.get_attribute("data-index")) for c in cards] == [c["index"] for c in api["ranking"]]
    for card, want in zip(cards, api["ranking"], strict=True):
        assert float(card.get_attribute("data-score")) == want["score"]
        t = want["tests"]
        assert card.locator(".badge.tests").inner_text() == f"tests {t['n_passed']}/{t['n_tests']} {t['status']}"
        assert [float(s) for _, s, _ in _rendered_steps(card)] == [s["score"] for s in want["steps"]]
    assert api["ranking"][0]["tests"]["passed"] and not api["ranking"][-1]["tests"]["passed"]  # passing ones first
    assert "best" in cards[0].inner_text()
    _screenshot(page, "playground-rerank.png", tmp_path)


def test_swagger_ui_renders_offline_grouped_with_examples(page: Any, server: str, tmp_path: Path) -> None:
    spec = httpx.get(f"{server}/openapi.json").json()
    page.goto(server + "/docs")
    page.wait_for_selector(".swagger-ui .opblock-tag")
    tags = [t.get_attribute("data-tag") for t in page.locator(".opblock-tag").all()]
    assert tags == [t["name"] for t in spec["tags"]]
    n_operations = sum(len(ops) for ops in spec["paths"].values())
    assert page.locator(".opblock").count() == n_operations

    score = page.locator("#operations-scoring-score_v1_score_post")
    score.locator(".opblock-summary").click()
    score.locator(".try-out__btn").click()
    body = json.loads(score.locator("textarea.body-param__text").input_value())
    assert body == spec["paths"]["/v1/score"]["post"]["requestBody"]["content"]["application/json"]["examples"][
        "code"]["value"]
    assert "code" in body and "steps" not in body  # the template is a valid request, not both
    page.click(".auth-wrapper .authorize")  # the server wants a key: Swagger's "Authorize" sends it
    page.fill(".modal-ux input", KEY)
    page.click(".modal-ux .auth-btn-wrapper .authorize")
    page.click(".modal-ux .btn-done")
    score.locator(".execute").click()  # a real call from the page, with its result shown
    page.wait_for_selector("#operations-scoring-score_v1_score_post .live-responses-table tbody .response-col_status")
    assert score.locator(".live-responses-table tbody .response-col_status").first.inner_text().strip() == "200"
    _screenshot(page, "api-docs.png", tmp_path)


def test_redoc_renders_offline(page: Any, server: str) -> None:
    page.goto(server + "/redoc")
    page.wait_for_selector("redoc .api-content h2", timeout=30_000)
    titles = page.locator("redoc .api-content h2").all_inner_texts()
    assert {"Score", "Rerank", "Split"} <= set(titles), titles  # CSP keeps its remote logo from loading
