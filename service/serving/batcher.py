"""Asyncio micro-batcher feeding one forward-pass worker thread (DESIGN §6).

Requests wait at most ``max_wait_ms`` for company; a batch holds at most ``max_batch_size``
items and ``max_batch_tokens`` padded tokens, sorted by length. A full queue raises
``Overloaded``; a failed forward pass fails every request of its batch. ``max_in_flight`` batches run at once
(1 for a model in this process; more for a remote engine that batches them itself). No torch here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from service.encoding import Encoded
from service.errors import ModelNotReady, Overloaded, PRMError
from service.serving.metrics import Metrics

logger = logging.getLogger(__name__)

ForwardFn = Callable[[Sequence[Encoded]], list[list[float]]]


@dataclass(slots=True)
class _Job:
    item: Encoded
    future: asyncio.Future[list[float]]
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    def __init__(self, forward: ForwardFn, *, max_batch_tokens: int, max_batch_size: int,
                 max_wait_ms: float, max_queue: int, metrics: Metrics | None = None,
                 after_forward: Callable[[], object] | None = None, max_in_flight: int = 1) -> None:
        self._forward = forward
        self._after_forward = after_forward  # on the forward thread, after each pass (e.g. a HeapTrimmer)
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self._metrics = metrics or Metrics()
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._carry: _Job | None = None
        self._batch: list[_Job] = []  # being collected
        self._in_flight: dict[asyncio.Task[None], list[_Job]] = {}  # batches in their forward pass
        self._slots = asyncio.Semaphore(max_in_flight)
        self._pending = 0
        self._executor = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="prm-forward")
        self._task: asyncio.Task[None] | None = None
        self.avg_batch_seconds = 0.05

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def depth(self) -> int:
        return self._pending

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="prm-batcher")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for task in list(self._in_flight):
            task.cancel()
        stopping = ModelNotReady("the scorer is shutting down")
        _fail(self._batch + [j for jobs in self._in_flight.values() for j in jobs] + self._drain(), stopping)
        self._batch = []
        self._in_flight.clear()
        # a forward pass still running finishes on its thread; the event loop does not wait for it
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, item: Encoded) -> list[float]:
        """Queue ``item`` and wait for its step logits."""
        if not self.alive:
            raise ModelNotReady("the scoring worker is not running")
        if self._pending >= self.max_queue:
            retry = max(1.0, round(self.avg_batch_seconds * self._pending / self.max_batch_size, 1))
            raise Overloaded(f"scoring queue is full ({self._pending} waiting); retry later",
                             retry_after=retry)
        job = _Job(item, asyncio.get_running_loop().create_future())
        self._pending += 1
        self._metrics.queue_depth.set(self._pending)
        self._queue.put_nowait(job)
        return await job.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()  # a free forward slot before collecting: the queue fills meanwhile
            try:
                await self._collect()  # fills self._batch, which aclose() can still fail if cancelled
            except BaseException:
                self._slots.release()
                raise
            batch, self._batch = self._batch, []
            self._pending -= len(batch)
            self._metrics.queue_depth.set(self._pending)
            live = sorted((j for j in batch if not j.future.done()), key=lambda j: j.item.n_tokens)
            if not live:
                self._slots.release()
                continue
            task = loop.create_task(self._forward_batch(live))
            self._in_flight[task] = live
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._slots.release()

    async def _forward_batch(self, live: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self._run_forward,
                                                                       [j.item for j in live])
            if len(results) != len(live):
                raise RuntimeError(f"forward returned {len(results)} results for {len(live)} items")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # fan the failure out to every waiting request
            if isinstance(exc, PRMError):  # an engine that is down: said once per batch, no traceback
                logger.warning("forward pass failed for a batch of %d: %s", len(live), exc.message)
            else:
                logger.exception("forward pass failed for a batch of %d", len(live))
            _fail(live, exc)
        else:
            self._record(live, time.perf_counter() - started)
            for job, logits in zip(live, results, strict=True):
                if not job.future.done():
                    job.future.set_result(logits)

    def _run_forward(self, items: list[Encoded]) -> list[list[float]]:
        try:
            return self._forward(items)
        finally:
            if self._after_forward is not None:
                self._after_forward()

    async def _collect(self) -> None:
        first = self._carry or await self._queue.get()
        self._carry = None
        self._batch = batch = [first]
        width = first.item.n_tokens
        deadline = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch_size:
            if self._queue.empty():
                timeout = deadline - time.perf_counter()
                if timeout <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    break
            else:
                job = self._queue.get_nowait()
            new_width = max(width, job.item.n_tokens)
            if new_width * (len(batch) + 1) > self.max_batch_tokens:
                self._carry = job
                break
            batch.append(job)
            width = new_width

    def _record(self, batch: list[_Job], seconds: float) -> None:
        width = max(j.item.n_tokens for j in batch)
        self.avg_batch_seconds = 0.8 * self.avg_batch_seconds + 0.2 * seconds
        self._metrics.batch_size.observe(len(batch))
        self._metrics.batch_tokens.observe(width * len(batch))
        self._metrics.forward_seconds.observe(seconds)
        self._metrics.tokens_scored.inc(sum(j.item.n_tokens for j in batch))
        self._metrics.steps_scored.inc(sum(len(j.item.step_end_positions) for j in batch))
        logger.debug("batch of %d (%d tokens padded) in %.1f ms", len(batch), width * len(batch),
                     seconds * 1000)

    def _drain(self) -> list[_Job]:
        jobs = [self._carry] if self._carry else []
        self._carry = None
        while not self._queue.empty():
            jobs.append(self._queue.get_nowait())
        return jobs


def _fail(jobs: list[_Job], exc: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(exc)
