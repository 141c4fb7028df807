"""Fair sharing of the service's sandbox workers between requests (asyncio; stdlib and ``service.sandbox`` only).

Each request gets a ``SandboxSession``: its own budget of sandbox seconds (``SandboxBudget``) and a share of the
workers. A free worker goes to the waiting request that holds the fewest workers (ties: the one waiting
longest), and no request holds more than ``per_request`` workers, so a request full of slow or hostile programs
cannot make another wait for all of them: with ``per_request < workers`` a newcomer finds a worker free or
gets the next one to free up, before the hostile request's next run.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Sequence

from service.sandbox import ExecResult, Limits, SandboxBudget, TestSpec, TestType, run_tests


class SandboxPool:
    """``workers`` sandbox runs at a time, at most ``per_request`` of them for one session."""

    def __init__(self, workers: int, per_request: int | None = None) -> None:
        if workers < 1 or (per_request is not None and per_request < 1):
            raise ValueError("workers and per_request must be positive")
        self.workers = workers
        self.per_request = min(workers, per_request or max(1, workers - 1))
        self._running = 0
        self._waiting: deque[tuple[int, SandboxSession, asyncio.Future[None]]] = deque()
        self._order = itertools.count()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return sum(not fut.done() for _, _, fut in self._waiting)

    def session(self, budget_s: float) -> SandboxSession:
        """A request's handle: ``budget_s`` sandbox seconds (wall or CPU, whichever is larger, per run)."""
        return SandboxSession(self, SandboxBudget(budget_s))

    async def _acquire(self, session: SandboxSession) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((next(self._order), session, fut))
        self._dispatch()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted just before the cancel: give it back
                self._release(session)
            else:
                self._waiting = deque(w for w in self._waiting if w[2] is not fut)
            raise

    def _release(self, session: SandboxSession) -> None:
        self._running -= 1
        session.running -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        while self._running < self.workers:
            eligible = [w for w in self._waiting if not w[2].done() and w[1].running < self.per_request]
            if not eligible:
                break
            pick = min(eligible, key=lambda w: (w[1].running, w[0]))
            self._waiting.remove(pick)
            self._running += 1
            pick[1].running += 1
            pick[2].set_result(None)
        self._waiting = deque(w for w in self._waiting if not w[2].done())


class SandboxSession:
    """One request's runs: fair access to the pool's workers and one budget for all of them."""

    def __init__(self, pool: SandboxPool, budget: SandboxBudget) -> None:
        self.pool = pool
        self.budget = budget
        self.running = 0

    async def run_tests(self, code: str, tests: Sequence[TestSpec], *, test_type: TestType, limits: Limits,
                        setup_code: str = "", stop_at_first_failure: bool = True) -> ExecResult:
        """``service.sandbox.run_tests`` on a worker of the pool, charged to this session's budget."""
        await self.pool._acquire(self)
        try:
            return await asyncio.to_thread(run_tests, code, tests, test_type=test_type, setup_code=setup_code,
                                           limits=limits, stop_at_first_failure=stop_at_first_failure,
                                           budget=self.budget)
        finally:
            self.pool._release(self)
