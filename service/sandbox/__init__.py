"""Code-execution sandbox: a program plus its tests run in a fresh, unprivileged, network-less process tree
with its own private filesystem view.

Stdlib only (no torch, fastapi, pydantic, trainer) so the service's public-test filter and the trainer share it;
the child side is ``service.sandbox.runner``, the verdict rules ``service.sandbox.judge``, the service's fair
worker pool ``service.sandbox.pool``. ``sandbox_host()`` probes once what this machine provides; ``isolation()``
names it (``full`` | ``namespaces`` | ``none`` | ``unavailable``; anything but full is logged as an error).
SECURITY.md states what this guarantees and what it does not.

Isolation model, per run (a functional program with all its asserts, or one stdin test):
* Processes: a fork server (``sandbox_runner.zygote``: one pristine ``python -s -P`` per caller process, on
  the interpreter below, started with our minimal environment; ``-I`` minus ``-E``, because that environment
  is ours (no caller variables such as API keys) and pins ``PYTHONHASHSEED=0`` so verdicts are reproducible)
  forks monitor -> candidate per run (as root the server forks the monitor straight into a new PID namespace;
  a user namespace needs a launcher process above it); the candidate runs the payload in that forked
  interpreter, so no interpreter starts per run and no run sees another's state. New session; new PID
  namespace, with the monitor as its PID 1, so the whole tree dies with it; the group is SIGKILLed at the wall
  limit and, where no PID namespace guarantees that, stragglers are swept by uid (``/proc``).
* Filesystem (``full``): a new mount namespace per run whose root is a small read-only tmpfs holding
  read-only binds of the system dirs (``SYSTEM_PATHS``) and of the interpreter's stdlib and package dirs and
  a ``/dev`` of null, zero, full, random, urandom, the host's tree detached (``pivot_root``); on it, the run's
  own tmpfs ``/tmp`` (cwd, HOME, TMPDIR; ``Limits.tmp_mb``/``tmp_inodes``) and ``/dev/shm``
  (``shm_mb``/``shm_inodes``) and ``/proc`` of its PID namespace. As root the fork server builds that view
  once in a mount namespace of its own, which each run's namespace copies (three mounts per run); in a user
  namespace each run builds it from the server's precomputed plan. No repository, checkpoints, data, home or host
  sockets are in view, and everything the run wrote dies with its namespace. Not ``full``: cwd, HOME and
  TMPDIR are a 0700 temp dir removed afterwards, and the host's world-writable dirs are shared.
* Privileges: as root the candidate runs as its own uid from ``SANDBOX_UID_BASE`` .. +``SANDBOX_UID_COUNT``
  (gid = uid, no groups, flock-leased so no two concurrent runs, in any process, share one), so it cannot
  signal the caller, PID 1 or other runs, or share an ``RLIMIT_NPROC`` budget. Not root: a user namespace
  makes the other namespaces, and the candidate drops every capability in it. Always ``no_new_privs``.
* Interpreter: the first of the caller's and the system's ``pythonX.Y`` whose stdlib the sandbox uid can import
  from; if it is not the caller's, the caller's site-packages (same ABI) go on PYTHONPATH, so programs see the
  same third-party packages (LeetCode references use ``sortedcontainers``).
* Limits: RLIMIT_AS, CPU, NPROC, FSIZE, NOFILE, CORE=0; stdout+stderr capped (``output_limit``, tree killed);
  an optional ``SandboxBudget`` shared by a caller's jobs caps their total sandbox seconds.
* Network: ``NETWORK_ISOLATION == "namespace"``: an empty network namespace (not even loopback; abstract unix
  sockets are per namespace too); as root the fork server keeps a few and lends each to one run at a time
  (making one per run: ~7 % of a trivial run's CPU), never to two live runs. ``"guard"`` (no namespace
  could be made): socket creation is patched away in the runner before the program runs, which stops
  ordinary code but not ctypes/raw syscalls or subprocesses.
* Results: the payload arrives on an fd the runner closes before the program runs. Asserts against a literal
  (``assert f(x) == [1, 2]``) are split by ``judge``: only ``f(x)`` enters the sandbox, its value comes
  back and is compared here, so the expected answer is never in the candidate's process and no forged event
  can pass it. Other asserts run inside and report JSON events tagged with a nonce: a program in the same
  interpreter can forge those (see SECURITY.md). The candidate's wait status and the run's CPU time come on a
  control pipe written only by the monitor (and the launcher, where there is one). stdout is never parsed
  for verdicts.
"""
from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from service.sandbox.host import detect_host, isolation, isolation_modes, network_isolation, sandbox_host
from service.sandbox.judge import JudgedTest, judge_test, verdict
from service.sandbox.process import (
    SANDBOX_UID_BASE,
    SANDBOX_UID_COUNT,
    SYSTEM_PATHS,
    TAIL,
    Payload,
    Run,
    SandboxHost,
    spawn,
    status_of,
    terminal,
    uid_lease,
)
from service.sandbox.records import (
    STATUSES,
    ExecResult,
    Isolation,
    Limits,
    NetworkIsolation,
    SandboxBudget,
    SandboxJob,
    Status,
    TestSpec,
    TestType,
)

__all__ = ["SANDBOX_UID_BASE", "SANDBOX_UID_COUNT", "STATUSES", "SYSTEM_PATHS", "ExecResult", "Isolation", "Limits",
           "NetworkIsolation", "SandboxBudget", "SandboxHost", "SandboxJob", "Status", "TestSpec", "TestType",
           "detect_host", "isolation", "isolation_modes", "network_isolation", "outputs_match", "run_many",
           "run_tests", "sandbox_host"]

logger = logging.getLogger(__name__)


def run_tests(code: str, tests: Sequence[TestSpec], *, test_type: TestType, setup_code: str = "",
              limits: Limits = Limits(), stop_at_first_failure: bool = False,
              budget: SandboxBudget | None = None) -> ExecResult:
    """Run ``code`` on ``tests``; never raises for anything the program does.

    Functional: one process runs ``setup_code``, the program and every assert (each counted on its own).
    Stdin: each test is a fresh process fed ``input``; stdout is compared with ``outputs_match``.
    ``status`` is the kind of the first failure in order (program, then tests); a test in progress when a
    limit hit, and every test after it, fails with that limit's kind. ``stop_at_first_failure``: no test runs
    after the first that fails. ``budget``: runs stop (``budget_exceeded``) when it is spent.
    """
    return _execute(SandboxJob(code, tests, test_type, setup_code, limits, stop_at_first_failure, budget))


def run_many(jobs: Sequence[SandboxJob], *, workers: int) -> list[ExecResult]:
    """``run_tests`` for each job, ``workers`` at a time, results in job order."""
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sandbox") as pool:
        return list(pool.map(_execute, jobs))


def outputs_match(actual: str, expected: str) -> bool:
    """LiveCodeBench-style stdout comparison.

    Trailing whitespace is stripped from each line and from the whole output, then lines are compared; the
    line counts must agree. Lines that differ are split into whitespace-separated tokens (same count needed);
    tokens that differ match if both are integers of equal value, or both decimal numbers within 1e-6
    (relative or absolute).
    """
    got, want = _lines(actual), _lines(expected)
    if got == want:
        return True
    return len(got) == len(want) and all(a == b or _tokens_match(a.split(), b.split())
                                         for a, b in zip(got, want, strict=True))


_INT = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.rstrip().splitlines()]


def _tokens_match(got: list[str], want: list[str]) -> bool:
    return len(got) == len(want) and all(_token_match(a, b) for a, b in zip(got, want, strict=True))


def _token_match(a: str, b: str) -> bool:
    try:
        if _INT.fullmatch(a) and _INT.fullmatch(b):
            return int(a) == int(b)
        if _NUMBER.fullmatch(a) and _NUMBER.fullmatch(b):
            return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6)
    except ValueError:  # integers beyond int()'s digit limit
        pass
    return a == b


def __getattr__(name: str) -> NetworkIsolation:  # NETWORK_ISOLATION, probed lazily on first access
    if name == "NETWORK_ISOLATION":
        return network_isolation()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _execute(job: SandboxJob) -> ExecResult:
    start, n = time.monotonic(), len(job.tests)
    want = "assert" if job.test_type == "functional" else "io"
    if any(t.kind != want for t in job.tests):
        raise ValueError(f"{job.test_type} problems take {want!r} tests only")
    host = sandbox_host()
    if host is None:
        return _result("sandbox_error", n, 0, start, "the sandbox is unavailable on this machine", None)
    if (wall_s := _budgeted(job, job.limits.wall_s if want == "assert" else job.limits.per_test_s)) is None:
        return _result("budget_exceeded", n, 0, start, "the request's sandbox budget is spent", None)
    with uid_lease(host) as uid:
        if job.test_type == "stdin":
            return _execute_stdin(host, uid, job, start)
        judged = [judge_test(t.code or "") for t in job.tests]
        payload = Payload("functional", job.code, job.setup_code, tuple(t.payload() for t in judged),
                          job.limits.assert_s, job.stop_at_first_failure)
        stop = _stop_at_failure(judged) if job.stop_at_first_failure else None
        run = spawn(host, uid, payload, job.limits, wall_s, None, stop)
    _charge(job, run)
    status, n_passed, failure = _judge_functional(run, judged, stop_at_first_failure=job.stop_at_first_failure)
    return _result(status, n, n_passed, start, failure, run, [run])


def _budgeted(job: SandboxJob, wall_s: float) -> float | None:
    """The wall limit of the job's next run within its budget; None when the budget is spent."""
    if job.budget is None:
        return wall_s
    left = job.budget.left()
    return None if left <= 0.05 else min(wall_s, left)


def _charge(job: SandboxJob, run: Run) -> None:
    if job.budget is not None:
        job.budget.charge(max(run.wall_s, run.cpu_s))


def _stop_at_failure(judged: Sequence[JudgedTest]) -> Callable[[dict[str, Any]], bool]:
    """The judge's early stop: a failing test (as judged here, values included) ends the run."""
    def failed(ev: dict[str, Any]) -> bool:
        i = ev.get("i")
        return ev["ev"] == "test" and isinstance(i, int) and 0 <= i < len(judged) and not verdict(judged[i], ev)[0]
    return failed


def _execute_stdin(host: SandboxHost, uid: int | None, job: SandboxJob, start: float) -> ExecResult:
    payload = Payload("stdin", job.code, job.setup_code, (), None)
    status: Status = "passed"
    n_passed, failure, shown, runs = 0, None, None, []
    for i, test in enumerate(job.tests):
        if (wall_s := _budgeted(job, job.limits.per_test_s)) is None:
            if status == "passed":
                status, failure = "budget_exceeded", f"test {i}: the request's sandbox budget is spent"
            break
        run = spawn(host, uid, payload, job.limits, wall_s, (test.input or "").encode())
        _charge(job, run)
        runs.append(run)
        kind, why = _judge_stdin(run, test.output or "")
        if kind == "passed":
            n_passed += 1
            shown = shown or run
            continue
        if status == "passed":
            status, failure, shown = kind, why if kind in ("syntax_error", "sandbox_error") else f"test {i}: {why}", run
        if job.stop_at_first_failure or kind in ("syntax_error", "sandbox_error"):
            break
    return _result(status, len(job.tests), n_passed, start, failure, shown, runs)


def _result(status: Status, n: int, n_passed: int, start: float, failure: str | None, run: Run | None,
            runs: Sequence[Run] = ()) -> ExecResult:
    def tail(data: bytes) -> str:
        return data[-TAIL:].decode("utf-8", errors="replace")

    return ExecResult(status, status == "passed", n, n_passed, round(time.monotonic() - start, 4),
                      failure[:TAIL // 4] if failure else None,
                      tail(run.stdout) if run else "", tail(run.stderr) if run else "",
                      round(sum(r.cpu_s for r in runs), 4), round(sum(max(r.wall_s, r.cpu_s) for r in runs), 4))


def _early_failure(run: Run) -> tuple[Status, str] | None:
    """A launch failure, a syntax error, or a program that did not get through its own top level."""
    if (ev := run.event("sandbox_error")) is not None:
        return "sandbox_error", str(ev.get("msg"))
    if (ev := run.event("compile")) is not None:
        return "syntax_error", str(ev.get("msg"))
    solution = run.event("solution")
    if solution is None:
        kind, why = terminal(run)
        return kind, f"program: {why}"
    return None if solution.get("ok") is True else (status_of(solution.get("kind")), f"program: {solution.get('msg')}")


def _judge_functional(run: Run, judged: Sequence[JudgedTest], *,
                      stop_at_first_failure: bool = False) -> tuple[Status, int, str | None]:
    """Each test's verdict: a value test's from the value it reported (``service.sandbox.judge``), a code test's as
    reported; the first failure in order decides the status. Stopping at the first failure, tests after it
    do not count even when the runner got to them before the judge stopped it."""
    n_tests = len(judged)
    tests: dict[int, tuple[bool, str, str]] = {}
    for ev in run.events:
        if ev["ev"] == "test" and isinstance(ev.get("i"), int) and 0 <= ev["i"] < n_tests and ev["i"] not in tests:
            tests[ev["i"]] = verdict(judged[ev["i"]], ev)
    if (early := _early_failure(run)) is not None:
        return early[0], 0, early[1]
    n_passed = sum(ok for ok, _, _ in tests.values())
    for i in range(n_tests):
        if (test := tests.get(i)) is None:
            kind, why = terminal(run)
            return kind, n_passed, f"test {i}: {why}"
        if not test[0]:
            n_passed = i if stop_at_first_failure else n_passed
            return status_of(test[1]), n_passed, f"test {i}: {test[2]}"
    if run.event("done") is None:
        kind, why = terminal(run)
        return kind, n_passed, why
    return "passed", n_passed, None


def _judge_stdin(run: Run, expected: str) -> tuple[Status, str | None]:
    # a program may end itself (os._exit(0) after printing) before the runner reports it: that is success
    ended_itself = run.limit is None and run.status == 0 and not any(ev["ev"] != "exit" for ev in run.events)
    if (early := _early_failure(run)) is not None and not ended_itself:
        return early
    if run.limit is not None:
        return terminal(run)
    actual = run.stdout.decode("utf-8", errors="replace")
    if outputs_match(actual, expected):
        return "passed", None
    return "wrong_answer", f"expected {expected[:60]!r}, got {actual[:60]!r}"
