"""The SDK against the real app: in-process ASGI (async) and a live uvicorn server (sync); retries, errors."""

from __future__ import annotations

import difflib
import importlib.resources
import json
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pydantic
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from clients.patch import PatchError, apply_unified_diff
from clients.prm import (
    AsyncPRMClient,
    ConnectionLost,
    PRMClient,
    ServiceTimeout,
    ServiceUnreachable,
    error_from_response,
)
from service.cli.main import app as cli
from service.errors import InputTooLong, Overloaded, Unauthorized, ValidationFailed
from service.http.app import create_app
from service.serving.engine import ScoringEngine
from service.settings import Settings
from tests.conftest import REPO
from tests.live import live_server

PROBLEM = "Read two integers and print their sum."
GOOD = ("def main():\n    a, b = map(int, input().split())\n    print(add(a, b))\n\n\n"
        "def add(a, b):\n    return a + b\n\n\nmain()\n")
BAD = "def main():\n    a, b = map(int, input().split())\n    print(a - b)\n\n\nmain()\n"


@pytest.fixture(scope="module")
def server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("live") / "server.log"
    with live_server(tiny_checkpoint, log, DREAMPRM_POLICY="none", DREAMPRM_MAX_ITEMS="4") as url:
        yield url


@pytest.fixture
async def aclient(settings: Settings, engine: ScoringEngine) -> AsyncIterator[AsyncPRMClient]:
    app = create_app(settings, engine=engine)
    async with app.router.lifespan_context(app):
        async with AsyncPRMClient("http://app.test", transport=httpx.ASGITransport(app=app)) as prm:
            yield prm


async def test_async_client_in_process(aclient: AsyncPRMClient) -> None:
    split = await aclient.split(GOOD)
    assert [s.name for s in split.steps if s.kind == "function"] == ["main", "add"]
    one = await aclient.score(PROBLEM, GOOD)
    assert len(one.steps) == len(split.steps) and 0 <= one.score <= 1
    batch = await aclient.score_batch([{"problem": PROBLEM, "code": GOOD}, {"problem": PROBLEM, "code": BAD}])
    assert batch.items[0].score == pytest.approx(one.score)
    ranked = await aclient.rerank(PROBLEM, [BAD, GOOD], public_tests=[{"input": "1 2\n", "output": "3\n"}])
    assert ranked.ranking[0].index == 1 and ranked.ranking[0].tests_passed
    assert (await aclient.get_reward([PROBLEM + "\n```python\n" + GOOD + "```"]))[0] == pytest.approx(one.score)
    statement = PROBLEM + "\nSample Input\n1 2\nSample Output\n3\n"
    ranked = await aclient.rerank(statement, [BAD, GOOD])
    assert ranked.ranking[0].index == 1 and ranked.tests_source == "statement"
    assert ranked.ranking[0].tests is not None and ranked.ranking[0].tests.cases[0].source == "statement"
    assert (await aclient.rerank(statement, [BAD, GOOD], examples="off")).tests_source is None
    checked = await aclient.score(statement, BAD, run_examples=True)
    assert checked.examples is not None and (checked.examples.passed, checked.examples.total) == (0, 1)
    assert (await aclient.score(statement, BAD)).examples is None
    assert (await aclient.models()).data[0].id == "fake-prm"
    assert await aclient.ready()


async def test_async_errors_map_to_service_classes(aclient: AsyncPRMClient) -> None:
    with pytest.raises(InputTooLong, match="candidates"):
        await aclient.rerank(PROBLEM, [GOOD] * 17)


async def test_api_key_is_sent_and_a_wrong_one_is_unauthorized(settings: Settings, engine: ScoringEngine) -> None:
    app = create_app(settings.model_copy(update={"api_keys": [SecretStr("s3cret")]}), engine=engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with AsyncPRMClient("http://app.test", api_key="s3cret", transport=transport) as prm:
            assert (await prm.score(PROBLEM, GOOD)).steps
        async with AsyncPRMClient("http://app.test", api_key="wrong", transport=transport) as prm:
            with pytest.raises(Unauthorized):
                await prm.score(PROBLEM, GOOD)


def test_sync_client_against_live_server(server: str) -> None:
    with PRMClient(server) as prm:
        assert prm.ready()
        one = prm.score(PROBLEM, GOOD)
        assert one.model == "tiny-random-prm" and len(one.steps) == 3
        assert prm.score(PROBLEM, steps=[s.text for s in prm.split(GOOD).steps]).score == pytest.approx(one.score)
        ranked = prm.rerank(PROBLEM, [GOOD, BAD])
        assert {c.index for c in ranked.ranking} == {0, 1} and ranked.best_index is not None
        with pytest.raises(InputTooLong, match="limit is 4"):
            prm.score_batch([{"problem": PROBLEM, "code": GOOD}] * 5)


def test_retries_503_honouring_retry_after_then_succeeds() -> None:
    calls: list[float] = []
    ok = {"steps": [], "parsed": True, "language": "python"}

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            return httpx.Response(503, headers={"Retry-After": "0"},
                                  json={"error": {"type": "overloaded", "message": "queue full"}})
        return httpx.Response(200, json=ok)

    with PRMClient("http://x", transport=httpx.MockTransport(handler), retries=3) as prm:
        assert prm.split("def f():\n    pass\n").parsed and len(calls) == 3
    calls.clear()
    with PRMClient("http://x", transport=httpx.MockTransport(handler), retries=1) as prm:
        with pytest.raises(Overloaded) as info:
            prm.split("def f():\n    pass\n")
    assert info.value.retry_after == 0 and len(calls) == 2


def test_4xx_is_not_retried_and_unknown_bodies_still_raise() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(413, json={"error": {"type": "input_too_long", "message": "too big"}})

    with PRMClient("http://x", transport=httpx.MockTransport(handler)) as prm, pytest.raises(InputTooLong):
        prm.split("x = 1\n")
    assert calls == 1
    err = error_from_response(httpx.Response(500, text="<html>proxy error</html>"))
    assert err.status_code == 500 and "proxy error" in err.message


def test_unreachable_server_raises_after_retries() -> None:
    with PRMClient("http://127.0.0.1:9", retries=1, max_backoff_s=0.01) as prm, pytest.raises(ServiceUnreachable):
        prm.score(PROBLEM, GOOD)
    assert not PRMClient("http://127.0.0.1:9").ready()


# --- CLI against the live server ------------------------------------------------------------

def test_cli_score_split_rerank_against_server(server: str, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text(GOOD)
    bad.write_text(BAD)
    runner = CliRunner()
    r = runner.invoke(cli, ["score", str(good), "--problem", PROBLEM, "--server", server, "--json"])
    assert r.exit_code == 0, r.output
    assert '"model": "tiny-random-prm"' in r.output
    r = runner.invoke(cli, ["split", str(good), "--server", server])
    assert r.exit_code == 0 and "add" in r.output
    tests = tmp_path / "tests.json"
    tests.write_text('[{"input": "1 2\\n", "output": "3\\n"}]')
    r = runner.invoke(cli, ["rerank", str(bad), str(good), "--problem", PROBLEM, "--tests", str(tests),
                            "--server", server])
    assert r.exit_code == 0, r.output
    first = r.output.splitlines()[1]
    assert "good.py" in first and "1/1" in first and "tests: given" in r.output
    statement = PROBLEM + "\n\nExample\nInput\n1 2\nOutput\n3\n"
    r = runner.invoke(cli, ["rerank", str(bad), str(good), "--problem", statement, "--server", server])
    assert r.exit_code == 0, r.output
    assert "good.py" in r.output.splitlines()[1] and "1 examples from the statement (stdin" in r.output
    r = runner.invoke(cli, ["rerank", str(bad), str(good), "--problem", statement, "--examples", "off",
                            "--server", server, "--json"])
    assert r.exit_code == 0 and '"tests_source": null' in r.output
    r = runner.invoke(cli, ["rerank", "--problem", PROBLEM, "--n", "2", "--server", server])
    assert r.exit_code == 2 and "no policy configured" in r.output


def test_ci_rerank_with_files_and_diffs(server: str, tmp_path: Path) -> None:
    problem = tmp_path / "problem.txt"
    problem.write_text(PROBLEM)
    base = tmp_path / "solution.py"
    base.write_text(BAD)
    patch = tmp_path / "fix.diff"
    patch.write_text("".join(difflib.unified_diff(BAD.splitlines(True), GOOD.splitlines(True),
                                                  "a/solution.py", "b/solution.py")))
    runner = CliRunner()
    args = ["ci-rerank", str(patch), str(base), "--problem", str(problem), "--base", str(base), "--server", server]
    low = runner.invoke(cli, [*args, "--threshold", "0"])
    assert low.exit_code == 0, low.output
    assert low.output.splitlines()[-1].startswith("OK: best candidate") and "fix.diff" in low.output
    high = runner.invoke(cli, [*args, "--threshold", "1.01"])
    assert high.exit_code == 1 and high.output.splitlines()[-1].startswith("FAIL (score): best candidate")
    rank_only = runner.invoke(cli, args)  # no --threshold: rank only
    assert rank_only.exit_code == 0 and "rank only" in rank_only.output.splitlines()[-1]
    tests = tmp_path / "tests.json"
    tests.write_text('[{"input": "1 2\\n", "output": "3\\n"}]')
    failing = runner.invoke(cli, ["ci-rerank", str(base), "--problem", str(problem), "--tests", str(tests),
                                  "--server", server])
    assert failing.exit_code == 1, failing.output
    assert failing.output.splitlines()[-1].startswith("FAIL (tests)") and "0 of 1 passed" in failing.output
    both = runner.invoke(cli, ["ci-rerank", str(base), "--problem", str(problem), "--tests", str(tests),
                               "--threshold", "1.01", "--server", server])
    assert both.exit_code == 1 and both.output.splitlines()[-1].startswith("FAIL (score, tests)")
    as_json = runner.invoke(cli, [*args, "--threshold", "0", "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["best_index"] == 0
    assert as_json.stderr.startswith("OK")
    no_base = runner.invoke(cli, ["ci-rerank", str(patch), "--problem", str(problem), "--server", server])
    assert no_base.exit_code == 2 and "--base" in no_base.output
    missing = runner.invoke(cli, ["ci-rerank", str(tmp_path / "nope.py"), "--problem", str(problem),
                                  "--server", server])
    assert missing.exit_code == 2 and missing.output == f"error: candidate {tmp_path / 'nope.py'} does not exist\n"
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    unreadable = runner.invoke(cli, ["ci-rerank", str(binary), "--problem", str(problem), "--server", server])
    assert unreadable.exit_code == 2 and "is not UTF-8 text" in unreadable.output
    assert len(unreadable.output.splitlines()) == 1
    stale = tmp_path / "other.py"
    stale.write_text("x = 1\n")
    wrong = runner.invoke(cli, [*args[:5], "--base", str(stale), "--server", server])
    assert wrong.exit_code == 2 and "does not match" in wrong.output


def test_patch_round_trips_and_rejects_mismatch() -> None:
    a = "def f():\n    return 1\n\n\ndef g():\n    -- x\n    return 2\n"
    b = "def f():\n    return 10\n\n\ndef g():\n    return 2\n\ndef h():\n    pass\n"
    for context in (0, 1, 3):
        diff = "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), "a/x", "b/x", n=context))
        assert apply_unified_diff(a, diff) == b
    diff = "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), "a/x", "b/x"))
    with pytest.raises(PatchError, match="does not match"):
        apply_unified_diff(a.replace("return 1", "return 5"), diff)
    with pytest.raises(PatchError, match="no hunks"):
        apply_unified_diff(a, "--- a/x\n+++ b/x\n")
    with pytest.raises(PatchError, match="middle of a hunk"):
        apply_unified_diff(a, diff.rsplit("\n", 3)[0] + "\n")


# --- what is resent, timeouts, client-side validation, client-only installs -------------------

def _counting(exc: Exception) -> tuple[list[int], httpx.MockTransport]:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise exc

    return calls, httpx.MockTransport(handler)


def test_a_timed_out_request_is_not_resent_unless_asked() -> None:
    calls, transport = _counting(httpx.ReadTimeout("slow"))
    with PRMClient("http://x", transport=transport, retries=3, max_backoff_s=0) as prm, \
            pytest.raises(ServiceTimeout, match="not sent again"):
        prm.rerank(PROBLEM, n=4)  # a generated rerank: sending it again would generate again
    assert len(calls) == 1
    calls, transport = _counting(httpx.RemoteProtocolError("server hung up"))
    with PRMClient("http://x", transport=transport, retries=3) as prm, pytest.raises(ConnectionLost):
        prm.score(PROBLEM, GOOD)
    assert len(calls) == 1
    calls, transport = _counting(httpx.ReadTimeout("slow"))
    with PRMClient("http://x", transport=transport, retries=2, max_backoff_s=0, retry_timeouts=True) as prm, \
            pytest.raises(ServiceTimeout):
        prm.score(PROBLEM, GOOD)
    assert len(calls) == 3


def test_a_connection_never_made_is_resent() -> None:
    calls, transport = _counting(httpx.ConnectError("refused"))
    with PRMClient("http://x", transport=transport, retries=2, max_backoff_s=0) as prm, \
            pytest.raises(ServiceUnreachable) as info:
        prm.rerank(PROBLEM, n=4)
    assert len(calls) == 3 and not isinstance(info.value, ConnectionLost)


def test_connect_and_read_timeouts_are_separate() -> None:
    with PRMClient("http://x", connect_timeout_s=1.5, read_timeout_s=600) as prm:
        assert (prm.timeout.connect, prm.timeout.read) == (1.5, 600)
        assert prm._http.timeout.connect == 1.5 and prm._http.timeout.read == 600


def test_client_side_validation_raises_the_service_classes() -> None:
    calls, transport = _counting(AssertionError("nothing may be sent"))
    with PRMClient("http://x", transport=transport) as prm:
        with pytest.raises(ValidationFailed, match="language") as info:
            prm.split(GOOD, "cobol")  # type: ignore[arg-type]
        assert not isinstance(info.value, pydantic.ValidationError) and "\n" not in info.value.message
        with pytest.raises(ValidationFailed, match="not both"):
            prm.rerank(PROBLEM, [GOOD], n=2)
        with pytest.raises(ValidationFailed, match="exactly one"):
            prm.score(PROBLEM)
        with pytest.raises(ValidationFailed, match="public test"):
            prm.rerank(PROBLEM, [GOOD], public_tests=[{"input": "1"}])
    assert calls == []


async def test_async_wait_ready(aclient: AsyncPRMClient) -> None:
    await aclient.wait_ready(timeout_s=5)
    async with AsyncPRMClient("http://127.0.0.1:9", connect_timeout_s=0.2) as down:
        with pytest.raises(ServiceUnreachable, match="not ready"):
            await down.wait_ready(timeout_s=0.3, poll_s=0.1)


def test_packages_are_typed() -> None:
    for package in ("clients", "service"):
        assert (importlib.resources.files(package) / "py.typed").is_file()
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert data["clients"] == ["py.typed"] and data["service"] == ["py.typed"]


CLIENT_ONLY = r"""
import importlib.abc, importlib.util, sys
BLOCKED = {"torch", "transformers", "fastapi", "starlette", "uvicorn", "pydantic_settings", "typer", "click",
           "tree_sitter", "tree_sitter_language_pack", "redis", "numpy"}  # what `pip install .` does not bring
_find = importlib.util.find_spec
importlib.util.find_spec = lambda name, *args: None if name.split(".")[0] in BLOCKED else _find(name, *args)
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
"""


def test_client_only_install_needs_no_torch_and_the_command_names_its_extra() -> None:
    script = CLIENT_ONLY + r"""
import httpx
from clients.prm import PRMClient
from service.errors import ValidationFailed
ok = {"steps": [], "parsed": True, "language": "python"}
with PRMClient("http://x", transport=httpx.MockTransport(lambda r: httpx.Response(200, json=ok))) as prm:
    assert prm.split("def f():\n    pass\n").parsed
    try:
        prm.split("x", "cobol")
    except ValidationFailed:
        pass
assert not any(m in sys.modules for m in ("torch", "fastapi", "typer"))
from service.cli.launcher import main
main(["--help"])
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "the 'cli' extra" in out.stderr and "dreamprm-code[cli]" in out.stderr


def test_cli_extra_alone_splits_python_and_names_the_service_extra_for_the_rest() -> None:
    blocked = CLIENT_ONLY.replace('"typer", "click",', "")  # pip install '.[cli]': typer, no torch
    script = blocked + r"""
import subprocess
from service.cli.launcher import main
for argv, code in ([["split", "examples/sum.py"], 0], [["split", "examples/sum.py", "-l", "go"], 2],
                   [["score", "examples/sum.py", "-p", "x"], 2], [["serve"], 2]):
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code == code, (argv, exc.code)
assert "torch" not in sys.modules
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    errors = out.stderr.splitlines()
    assert len(errors) == 3 and all(e.startswith("error: ") and "'service' extra" in e for e in errors), errors
    assert "parsed: True" in out.stdout
