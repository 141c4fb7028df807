"""MicroBatcher with a fake forward function: routing, batch limits, back-pressure, failures."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from service.encoding import Encoded
from service.errors import ModelNotReady, Overloaded
from service.serving.batcher import MicroBatcher
from service.serving.metrics import Metrics

POISON = 13  # FakeForward fails every batch holding an item of this length
SHORT = 11  # FakeForward returns one row too few for a batch holding an item of this length


def enc(n: int) -> Encoded:
    return Encoded(input_ids=[1] * n, step_end_positions=[n - 1], truncated=False, n_steps=1)


class FakeForward:
    """Records the lengths of every batch it gets; answers ``[[float(len)]]`` per item.

    ``gate`` (set by default) blocks the worker thread while cleared; a batch holding an item of
    length ``POISON`` raises ``RuntimeError``, one holding ``SHORT`` gets one row too few.
    """

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, items: Sequence[Encoded]) -> list[list[float]]:
        lengths = [item.n_tokens for item in items]
        self.batches.append(lengths)
        self.threads.add(threading.current_thread().name)
        if not self.gate.wait(2.0):
            raise RuntimeError("test gate never opened")
        if POISON in lengths:
            raise RuntimeError(f"boom in batch {lengths}")
        rows = [[float(n)] for n in lengths]
        return rows[:-1] if SHORT in lengths else rows


Make = Callable[..., tuple[MicroBatcher, FakeForward]]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    """Factory of started batchers around a fresh FakeForward; all are closed at teardown."""
    made: list[tuple[MicroBatcher, FakeForward]] = []

    def factory(*, start: bool = True, **options: Any) -> tuple[MicroBatcher, FakeForward]:
        fake = FakeForward()
        kwargs: dict[str, Any] = {"max_batch_tokens": 100_000, "max_batch_size": 8, "max_wait_ms": 20,
                                  "max_queue": 64}
        kwargs.update(options)
        batcher = MicroBatcher(fake, **kwargs)
        if start:
            batcher.start()
        made.append((batcher, fake))
        return batcher, fake

    yield factory
    for batcher, fake in made:
        fake.gate.set()
        await batcher.aclose()


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


async def plug(batcher: MicroBatcher, fake: FakeForward, n: int = 50) -> asyncio.Task[list[float]]:
    """Block the worker inside forward() on one item of length ``n``; returns that request."""
    fake.gate.clear()
    before = len(fake.batches)
    task = asyncio.create_task(batcher.submit(enc(n)))
    await until(lambda: len(fake.batches) > before)
    return task


async def queue(batcher: MicroBatcher, lengths: Sequence[int]) -> list[asyncio.Task[list[float]]]:
    """Submit ``lengths`` as tasks and wait until all of them are in the queue."""
    start = batcher.depth
    tasks = [asyncio.create_task(batcher.submit(enc(n))) for n in lengths]
    await until(lambda: batcher.depth == start + len(lengths))
    return tasks


# ---------------------------------------------------------------- routing and batch shape


async def test_results_go_back_to_their_caller(make: Make) -> None:
    batcher, fake = make()
    lengths = [5, 3, 8, 1, 3, 21, 2, 9, 4, 7, 6]
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(enc(n)) for n in lengths)), 2)
    assert results == [[float(n)] for n in lengths]
    assert sorted(n for b in fake.batches for n in b) == sorted(lengths)
    assert fake.threads and all(name.startswith("prm-forward") for name in fake.threads)


async def test_after_forward_runs_on_the_forward_thread_after_every_pass(make: Make) -> None:
    seen: list[tuple[str, int]] = []
    batcher, fake = make(after_forward=lambda: seen.append((threading.current_thread().name, len(fake.batches))))
    await asyncio.wait_for(batcher.submit(enc(3)), 2)
    with pytest.raises(RuntimeError):  # also after a failed pass
        await asyncio.wait_for(batcher.submit(enc(POISON)), 2)
    assert [n for _, n in seen] == [1, 2] and all(name.startswith("prm-forward") for name, _ in seen)


async def test_max_batch_size_is_respected(make: Make) -> None:
    batcher, fake = make(max_batch_size=3)
    first = await plug(batcher, fake)
    tasks = await queue(batcher, list(range(1, 11)))
    fake.gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, *tasks), 2) == [[50.0]] + [
        [float(n)] for n in range(1, 11)]
    assert fake.batches[1:] == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
    assert all(len(b) <= 3 for b in fake.batches)


async def test_single_request_is_flushed_after_max_wait(make: Make) -> None:
    batcher, fake = make(max_wait_ms=60)
    started = time.perf_counter()
    assert await asyncio.wait_for(batcher.submit(enc(4)), 1.0) == [4.0]
    elapsed = time.perf_counter() - started
    assert 0.05 <= elapsed < 0.5, elapsed
    assert fake.batches == [[4]]


async def test_full_batch_does_not_wait_for_max_wait(make: Make) -> None:
    batcher, fake = make(max_wait_ms=10_000, max_batch_size=2)
    started = time.perf_counter()
    got = await asyncio.wait_for(asyncio.gather(batcher.submit(enc(2)), batcher.submit(enc(3))), 1.0)
    assert got == [[2.0], [3.0]]
    assert time.perf_counter() - started < 0.5
    assert fake.batches == [[2, 3]]


async def test_token_budget_carries_the_item_that_does_not_fit(make: Make) -> None:
    batcher, fake = make(max_batch_tokens=20, max_batch_size=16)
    first = await plug(batcher, fake, n=20)
    lengths = [6, 6, 6, 6, 2, 2, 2, 10, 1, 1]
    tasks = await queue(batcher, lengths)
    fake.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*tasks), 2) == [[float(n)] for n in lengths]
    assert await first == [20.0]
    # [6, 6, 6] + 6 would be 24 > 20: the fourth 6 opens the next batch, and so on
    assert fake.batches[1:] == [[6, 6, 6], [2, 2, 6], [2, 10], [1, 1]]
    for batch in fake.batches:
        assert max(batch) * len(batch) <= 20, batch
    assert sorted(n for b in fake.batches[1:] for n in b) == sorted(lengths)  # nothing lost


async def test_item_over_the_token_budget_goes_alone(make: Make) -> None:
    batcher, fake = make(max_batch_tokens=20)
    first = await plug(batcher, fake)
    tasks = await queue(batcher, [3, 30, 3])
    fake.gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, *tasks), 2) == [[50.0], [3.0], [30.0], [3.0]]
    assert fake.batches[1:] == [[3], [30], [3]]


async def test_each_batch_is_sorted_by_length(make: Make) -> None:
    batcher, fake = make()
    first = await plug(batcher, fake)
    lengths = [7, 3, 9, 1, 5, 3]
    tasks = await queue(batcher, lengths)
    fake.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*tasks), 2) == [[float(n)] for n in lengths]
    await first
    assert fake.batches[1:] == [[1, 3, 3, 5, 7, 9]]


# ---------------------------------------------------------------- back-pressure


async def test_full_queue_raises_overloaded_then_drains(make: Make) -> None:
    batcher, fake = make(max_queue=4, max_batch_size=2)
    first = await plug(batcher, fake)
    tasks = await queue(batcher, [1, 2, 3, 4])
    assert batcher.depth == 4
    with pytest.raises(Overloaded) as info:
        await batcher.submit(enc(5))
    assert info.value.retry_after is not None and info.value.retry_after >= 1
    assert info.value.status_code == 503
    batcher.avg_batch_seconds = 3.0  # slow forward passes -> a longer hint
    with pytest.raises(Overloaded) as slow:
        await batcher.submit(enc(5))
    assert slow.value.retry_after is not None and slow.value.retry_after > info.value.retry_after
    assert batcher.depth == 4  # the rejected requests were not queued

    fake.gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, *tasks), 2) == [[50.0], [1.0], [2.0], [3.0], [4.0]]
    assert batcher.depth == 0
    assert await asyncio.wait_for(batcher.submit(enc(5)), 1) == [5.0]


# ---------------------------------------------------------------- failures


async def test_forward_error_fails_the_whole_batch_only(make: Make) -> None:
    batcher, fake = make()
    first = await plug(batcher, fake)
    tasks = await queue(batcher, [2, POISON, 3])
    fake.gate.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2)
    assert fake.batches[1] == [2, 3, POISON]
    assert all(isinstance(o, RuntimeError) and "boom" in str(o) for o in outcomes), outcomes
    assert outcomes[0] is outcomes[1] is outcomes[2]
    assert await first == [50.0]

    assert batcher.alive
    assert await asyncio.wait_for(asyncio.gather(batcher.submit(enc(4)), batcher.submit(enc(6))), 1) == [
        [4.0], [6.0]]


async def test_cancelled_callers_do_not_break_the_batcher(make: Make) -> None:
    batcher, fake = make()
    first = await plug(batcher, fake)
    # gives up while queued
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(batcher.submit(enc(77)), 0.05)
    later = await queue(batcher, [4])
    # gives up while its forward pass runs
    first.cancel()
    fake.gate.set()
    assert await asyncio.wait_for(later[0], 1) == [4.0]
    with pytest.raises(asyncio.CancelledError):
        await first
    assert all(77 not in b for b in fake.batches)  # the abandoned request was never computed
    assert batcher.alive and batcher.depth == 0
    assert await asyncio.wait_for(batcher.submit(enc(8)), 1) == [8.0]


async def test_wrong_number_of_rows_fails_the_batch_only() -> None:
    fake = FakeForward()
    batcher = MicroBatcher(fake, max_batch_tokens=100_000, max_batch_size=8, max_wait_ms=20, max_queue=64)
    batcher.start()
    try:
        outcomes = await asyncio.wait_for(
            asyncio.gather(batcher.submit(enc(2)), batcher.submit(enc(SHORT)), return_exceptions=True), 0.3)
        assert fake.batches == [[2, SHORT]]
        assert all(isinstance(o, Exception) for o in outcomes), outcomes
        assert batcher.alive
        assert await asyncio.wait_for(batcher.submit(enc(4)), 1) == [4.0]
    finally:
        with contextlib.suppress(ValueError):  # aclose() re-raises the crash of the worker task
            await batcher.aclose()
        batcher._executor.shutdown()


# ---------------------------------------------------------------- lifecycle


async def test_submit_before_start_raises_model_not_ready(make: Make) -> None:
    batcher, _ = make(start=False)
    assert not batcher.alive
    with pytest.raises(ModelNotReady):
        await batcher.submit(enc(3))
    batcher.start()
    assert batcher.alive
    assert await asyncio.wait_for(batcher.submit(enc(3)), 1) == [3.0]


async def test_aclose_fails_queued_requests(make: Make) -> None:
    batcher, fake = make()
    first = await plug(batcher, fake)
    tasks = await queue(batcher, [1, 2, 3])
    fake.gate.set()  # let the worker thread finish, so the executor can shut down
    await batcher.aclose()
    assert not batcher.alive
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 1)
    assert all(isinstance(o, ModelNotReady) for o in outcomes), outcomes
    with pytest.raises(ModelNotReady):
        await batcher.submit(enc(1))
    first.cancel()  # the in-flight request


async def test_aclose_fails_a_request_waiting_for_company(make: Make) -> None:
    batcher, _ = make(max_wait_ms=150)
    task = asyncio.create_task(batcher.submit(enc(3)))
    await until(lambda: batcher._queue.empty() and batcher.depth == 1)  # in _collect()
    await batcher.aclose()
    with pytest.raises(ModelNotReady):
        await asyncio.wait_for(task, 0.3)


async def test_aclose_resolves_the_in_flight_batch(make: Make) -> None:
    batcher, fake = make()
    first = await plug(batcher, fake)
    fake.gate.set()
    await batcher.aclose()
    try:
        assert await asyncio.wait_for(first, 0.3) == [50.0]
    except ModelNotReady:
        pass  # failing it is as good as answering it; hanging is not


# ---------------------------------------------------------------- metrics


async def test_metrics_count_batches_and_tokens(make: Make) -> None:
    metrics = Metrics()
    batcher, fake = make(metrics=metrics, max_batch_size=2)
    lengths = [3, 4, 5, 6, 7]
    assert await asyncio.wait_for(asyncio.gather(*(batcher.submit(enc(n)) for n in lengths)), 2) == [
        [float(n)] for n in lengths]

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(name)

    count = sample("dreamprm_batch_size_count")
    assert count is not None and count > 0
    assert count == len(fake.batches)
    assert sample("dreamprm_batch_size_sum") == len(lengths)
    assert sample("dreamprm_tokens_scored_total") == sum(lengths)
    assert sample("dreamprm_steps_scored_total") == len(lengths)
    assert sample("dreamprm_forward_seconds_count") == count
    assert sample("dreamprm_batch_tokens_sum") == sum(max(b) * len(b) for b in fake.batches)
    assert sample("dreamprm_queue_depth") == 0
