"""Splitting large programs in worker processes, so that the event loop stays responsive.

``ast.parse`` (and tree-sitter) is C code that holds the GIL for the whole parse: a 600 kB program takes
seconds on a busy CPU, and a thread would stall every other request, ``/ready`` included, for as long.
Small programs are split on a thread (no IPC); programs over ``offload_bytes`` go to a process pool.
Stdlib only; the workers import nothing but ``service.steps``.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from service.errors import InvalidInput
from service.steps import SplitResult, split_code

logger = logging.getLogger(__name__)


class SplitPool:
    """``await pool.split(code, language)``: ``split_code`` off the event loop (thread or process)."""

    def __init__(self, *, workers: int = 2, offload_bytes: int = 16384) -> None:
        self.workers = workers
        self.offload_bytes = offload_bytes
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    async def split(self, code: str, language: str) -> SplitResult:
        """Raises what ``split_code`` raises (``InvalidInput``); a parser process that dies is an
        ``InvalidInput`` too (the input crashed it), and the pool is rebuilt for the next request."""
        if len(code) <= self.offload_bytes or self.workers == 0:
            return await asyncio.to_thread(split_code, code, language)
        executor = self._executor
        if executor is None:  # starting the pool blocks (a forkserver, the workers): not on the loop
            executor = await asyncio.to_thread(self._get_executor)
        try:
            return await asyncio.wrap_future(executor.submit(split_code, code, language))
        except BrokenProcessPool:
            logger.error("a split worker died on a %d-character %s program; restarting the pool",
                         len(code), language)
            self._discard(executor)
            raise InvalidInput("the program could not be split: its parser process died") from None

    def close(self) -> None:
        """Stop the workers and wait for them (an idle worker exits at once), so none outlives the server."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _get_executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
                # never fork: the server process has torch's threads; forkserver starts workers from a
                # clean interpreter
                executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context(method))
                # start every worker now (workers start on demand, in submit, which the event loop calls)
                warm = [executor.submit(split_code, "x = 1\n", "python") for _ in range(self.workers)]
                for future in warm:
                    future.result()
                self._executor = executor
            return self._executor

    def _discard(self, executor: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is executor:
                self._executor = None
        executor.shutdown(wait=False, cancel_futures=True)
