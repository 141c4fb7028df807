"""service.sandbox.pool: fair worker sharing between requests, stop at the first failure, the budget."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from service.sandbox import Limits, TestSpec, run_tests, sandbox_host
from service.sandbox.pool import SandboxPool

needs_sandbox = pytest.mark.skipif(sys.platform != "linux" or sandbox_host() is None, reason="needs the sandbox")


def test_a_request_never_holds_every_worker_and_newcomers_go_first() -> None:
    async def scenario() -> list[str]:
        pool, order = SandboxPool(workers=2), []
        hostile, small = pool.session(100), pool.session(100)
        release = asyncio.Event()

        async def hold(name: str, session: object) -> None:
            await pool._acquire(session)  # type: ignore[arg-type]
            order.append(name)
            await release.wait()
            pool._release(session)  # type: ignore[arg-type]

        tasks = [asyncio.create_task(hold(f"hostile{i}", hostile)) for i in range(4)]
        await asyncio.sleep(0.01)
        assert pool.running == 1 and pool.per_request == 1  # one worker stays free for others
        tasks.append(asyncio.create_task(hold("small", small)))
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(*tasks)
        return order

    order = asyncio.run(scenario())
    assert order[:2] == ["hostile0", "small"]


def test_a_cancelled_waiter_gives_its_place_back() -> None:
    async def scenario() -> int:
        pool = SandboxPool(workers=1)
        a, b = pool.session(1), pool.session(1)
        await pool._acquire(a)
        waiter = asyncio.create_task(pool._acquire(b))
        await asyncio.sleep(0.01)
        waiter.cancel()
        await asyncio.sleep(0.01)
        pool._release(a)
        return pool.running

    assert asyncio.run(scenario()) == 0


@needs_sandbox
def test_stdin_tests_stop_at_the_first_failure_unless_all_are_asked_for() -> None:
    tests = [TestSpec("io", input="", output="2\n")] + [TestSpec("io", input="", output="1\n")] * 3
    first = run_tests("print(1)", tests, test_type="stdin", stop_at_first_failure=True)
    every = run_tests("print(1)", tests, test_type="stdin")
    assert (first.status, first.n_passed, every.n_passed) == ("wrong_answer", 0, 3)
    assert first.charged_seconds < every.charged_seconds


@needs_sandbox
def test_a_functional_run_stops_at_the_first_failed_value() -> None:
    code = "import time\ndef f(x):\n    if x == 2:\n        time.sleep(5)\n    return x\n"
    tests = [TestSpec("assert", code="assert f(1) == 0"), TestSpec("assert", code="assert f(2) == 2")]
    started = time.monotonic()
    r = run_tests(code, tests, test_type="functional", stop_at_first_failure=True)
    assert r.status == "wrong_answer" and r.n_passed == 0 and time.monotonic() - started < 3


@needs_sandbox
def test_the_budget_bounds_a_requests_sandbox_time() -> None:
    async def scenario() -> list[str]:
        session = SandboxPool(workers=2).session(1.5)
        spin = "while True:\n    pass\n"
        results = [await session.run_tests(spin, [TestSpec("io", input="", output="")] * 3, test_type="stdin",
                                           limits=Limits(per_test_s=6), stop_at_first_failure=False)
                   for _ in range(2)]
        return [r.status for r in results]

    started = time.monotonic()
    statuses = asyncio.run(scenario())
    assert statuses == ["timeout", "budget_exceeded"] and time.monotonic() - started < 4
