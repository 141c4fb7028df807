"""Code-execution sandbox: a program plus its tests run in a fresh, unprivileged, network-less process tree
with its own private filesystem view.

Stdlib only (no torch, fastapi, pydantic, trainer) so the service's public-test filter and the trainer share it;
the child side is ``service.sandbox_runner``, the verdict rules ``service.sandbox_judge``, the service's fair
worker pool ``service.sandbox_pool``. ``sandbox_host()`` probes once what this machine provides; ``isolation()``
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
  (making one per run cost a tenth of a trivial run), never to two live runs. ``"guard"`` (no namespace
  could be made): socket creation is patched away in the runner before the program runs, which stops
  ordinary code but not ctypes/raw syscalls or subprocesses.
* Results: the payload arrives on an fd the runner closes before the program runs. Asserts against a literal
  (``assert f(x) == [1, 2]``) are split by ``sandbox_judge``: only ``f(x)`` enters the sandbox, its value comes
  back and is compared here, so the expected answer is never in the candidate's process and no forged event
  can pass it. Other asserts run inside and report JSON events tagged with a nonce: a program in the same
  interpreter can forge those (see SECURITY.md). The candidate's wait status and the run's CPU time come on a
  control pipe written only by the monitor (and the launcher, where there is one). stdout is never parsed
  for verdicts.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import math
import os
import re
import resource
import secrets
import selectors
import shutil
import signal
import site
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from service import sandbox_runner
from service.sandbox_judge import JudgedTest, judge_test, verdict

logger = logging.getLogger(__name__)

Status = Literal["passed", "wrong_answer", "runtime_error", "timeout", "memory", "output_limit",
                 "syntax_error", "killed", "sandbox_error", "budget_exceeded"]
TestType = Literal["functional", "stdin"]
NetworkIsolation = Literal["namespace", "guard"]
# full: own mount + PID + network namespaces (private /tmp, /dev/shm, /proc; read-only minimal view);
# namespaces: PID + network only (the host's filesystem); none: the socket guard only; unavailable: no runs
Isolation = Literal["full", "namespaces", "none", "unavailable"]
# what a run sees read-only besides the interpreter's own dirs (which its fork server adds)
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache",
                "/etc/localtime", "/etc/alternatives")
SANDBOX_UID_BASE = 64000
SANDBOX_UID_COUNT = 64
_STATUSES: frozenset[str] = frozenset(get_args(Status))
_TAIL = 2000
_RESULT_CAP = 1 << 22
_GRACE_S = 0.2
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits of one run. ``wall_s`` bounds a functional run (program + all asserts in one process);
    ``per_test_s`` bounds each stdin test, which is its own run (LiveCodeBench style); ``assert_s`` is an
    optional SIGALRM budget per assert inside a functional run (tests that use SIGALRM themselves override it)."""

    wall_s: float = 10.0
    per_test_s: float = 6.0
    assert_s: float | None = None
    cpu_s: int | None = None  # None: the run's wall limit, rounded up
    memory_mb: int = 1024  # address space
    max_procs: int = 32  # processes + threads
    max_file_mb: int = 64
    max_open_files: int = 256
    max_output_bytes: int = 1 << 20  # stdout + stderr of one run
    tmp_mb: float = 64  # the run's private /tmp (its cwd and HOME), with full isolation
    tmp_inodes: int = 4096
    shm_mb: float = 16  # the run's private /dev/shm
    shm_inodes: int = 256

    def __post_init__(self) -> None:
        if min(self.wall_s, self.per_test_s, self.memory_mb, self.max_procs, self.max_file_mb,
               self.max_open_files, self.max_output_bytes, self.cpu_s or 1, self.assert_s or 1,
               self.tmp_mb, self.tmp_inodes, self.shm_mb, self.shm_inodes) <= 0:
            raise ValueError(f"limits must be positive: {self}")


@dataclass(frozen=True, slots=True)
class TestSpec:
    """``assert``: Python run after the program; ``io``: stdin and the expected stdout."""

    __test__ = False  # not a pytest class
    kind: Literal["assert", "io"]
    code: str | None = None
    input: str | None = None
    output: str | None = None


@dataclass(frozen=True, slots=True)
class ExecResult:
    status: Status
    passed: bool
    n_tests: int
    n_passed: int
    seconds: float
    first_failure: str | None  # "test 3: AssertionError", capped
    stdout_tail: str
    stderr_tail: str
    cpu_seconds: float = 0.0  # of every process of every run of the job
    charged_seconds: float = 0.0  # what the job's budget was charged: per run, max(wall, CPU)


class SandboxBudget:
    """Sandbox seconds a caller (one rerank request) may still use, shared by its jobs (thread-safe).

    Each run is charged max(wall seconds, CPU seconds): a worker held by a sleeping program costs as much as
    one that spins. A run never gets more wall or CPU time than what is left; an exhausted budget starts no run.
    """

    def __init__(self, seconds: float) -> None:
        self._left = seconds
        self._lock = threading.Lock()

    def left(self) -> float:
        with self._lock:
            return self._left

    def charge(self, seconds: float) -> None:
        with self._lock:
            self._left -= seconds


@dataclass(frozen=True, slots=True)
class SandboxJob:
    code: str
    tests: Sequence[TestSpec]
    test_type: TestType
    setup_code: str = ""
    limits: Limits = Limits()
    stop_at_first_failure: bool = False
    budget: SandboxBudget | None = None


@dataclass(frozen=True, slots=True)
class SandboxHost:
    python: str  # the interpreter candidates run on
    network: NetworkIsolation
    unshare_flags: int
    drop_to_uid: bool  # root: each run gets its own uid
    site_dirs: tuple[str, ...] = ()  # the caller's site-packages, when ``python`` is another interpreter

    @property
    def isolation(self) -> Isolation:
        if self.unshare_flags & sandbox_runner.CLONE_NEWNS:
            return "full"
        return "namespaces" if self.network == "namespace" else "none"


@dataclass(frozen=True, slots=True)
class _Payload:
    mode: TestType
    code: str
    setup: str
    tests: tuple[dict[str, Any], ...]
    assert_s: float | None
    stop: bool = False


@dataclass(frozen=True, slots=True)
class _Run:
    events: list[dict[str, Any]]
    stdout: bytes
    stderr: bytes
    limit: Literal["timeout", "output_limit", "stopped"] | None
    status: int | None  # the candidate's wait status, from the monitor
    wall_s: float = 0.0
    cpu_s: float = 0.0  # every process of the run (from the monitor or launcher)

    def event(self, name: str) -> dict[str, Any] | None:
        return next((ev for ev in self.events if ev["ev"] == name), None)


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


_host_lock = threading.Lock()
_host_cache: list[SandboxHost | None] = []


def sandbox_host() -> SandboxHost | None:
    """What this machine provides, probed once by running a tiny program; None if nothing works."""
    with _host_lock:
        if not _host_cache:
            _host_cache.append(detect_host())
        return _host_cache[0]


def network_isolation() -> NetworkIsolation:
    host = sandbox_host()
    if host is None:
        raise RuntimeError("the sandbox cannot run programs on this machine (see the log)")
    return host.network


def isolation() -> Isolation:
    """Which isolation runs get on this machine (probed once)."""
    host = sandbox_host()
    return "unavailable" if host is None else host.isolation


def __getattr__(name: str) -> NetworkIsolation:  # NETWORK_ISOLATION, probed lazily on first access
    if name == "NETWORK_ISOLATION":
        return network_isolation()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _interpreters(root: bool) -> list[str]:
    """Candidate interpreters; as root the first one the sandbox uid can execute wins (pyenv under /root can't)."""
    if not root:
        return [sys.executable]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = [sys.executable, getattr(sys, "_base_executable", ""), os.path.realpath(sys.executable),
             shutil.which(version) or "", f"/usr/local/bin/{version}", f"/usr/bin/{version}"]
    return list(dict.fromkeys(p for p in found if p and os.path.isfile(p)))


# the candidate must be able to import from the interpreter's stdlib and site dirs as the sandbox uid
_PROBE = _Payload("functional", "import bisect, heapq, statistics", "", (), None)


def isolation_modes(*, mounts: bool = True) -> tuple[tuple[int, NetworkIsolation], ...]:
    """The (unshare flags, network isolation) to try, strongest first; ``mounts=False`` leaves out the private
    filesystem (what a host without mount namespaces gets; the benchmark measures its cost this way)."""
    namespaces = sandbox_runner.CLONE_NEWNET | sandbox_runner.CLONE_NEWPID
    namespaces |= 0 if os.geteuid() == 0 else sandbox_runner.CLONE_NEWUSER
    full = ((namespaces | sandbox_runner.CLONE_NEWNS, "namespace"),) if mounts else ()
    return (*full, (namespaces, "namespace"), (0, "guard"))


def detect_host(modes: tuple[tuple[int, NetworkIsolation], ...] | None = None) -> SandboxHost | None:
    """The first mode of ``modes`` (default: ``isolation_modes()``) and interpreter that runs the probe."""
    root = os.geteuid() == 0
    for flags, network in modes or isolation_modes():
        for exe in _interpreters(root):
            # another build of the same X.Y (same ABI) gets the caller's packages, as sys.executable would
            site_dirs = () if exe == sys.executable else tuple(p for p in site.getsitepackages() if os.path.isdir(p))
            host = SandboxHost(exe, network, flags, root, site_dirs)
            with _uid_lease(host) as uid:
                run = _spawn(host, uid, _PROBE, Limits(), 10.0, None)
            if run.event("done") is not None:
                log = logger.info if host.isolation == "full" else logger.error
                log("sandbox: %s (+ %s), isolation %s (network %s), own uid per run: %s%s", exe, site_dirs,
                    host.isolation, network, root, "" if host.isolation == "full" else
                    " -- DEGRADED: runs share the host's /tmp, /dev/shm, /proc and filesystem view")
                return host
            logger.info("sandbox probe failed (%s, %s): %s", exe, network, _terminal(run)[1])
    logger.error("sandbox: no interpreter/isolation combination works; every run will be sandbox_error")
    return None


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
    with _uid_lease(host) as uid:
        if job.test_type == "stdin":
            return _execute_stdin(host, uid, job, start)
        judged = [judge_test(t.code or "") for t in job.tests]
        payload = _Payload("functional", job.code, job.setup_code, tuple(t.payload() for t in judged),
                           job.limits.assert_s, job.stop_at_first_failure)
        stop = _stop_at_failure(judged) if job.stop_at_first_failure else None
        run = _spawn(host, uid, payload, job.limits, wall_s, None, stop)
    _charge(job, run)
    status, n_passed, failure = _judge_functional(run, judged, stop_at_first_failure=job.stop_at_first_failure)
    return _result(status, n, n_passed, start, failure, run, [run])


def _budgeted(job: SandboxJob, wall_s: float) -> float | None:
    """The wall limit of the job's next run within its budget; None when the budget is spent."""
    if job.budget is None:
        return wall_s
    left = job.budget.left()
    return None if left <= 0.05 else min(wall_s, left)


def _charge(job: SandboxJob, run: _Run) -> None:
    if job.budget is not None:
        job.budget.charge(max(run.wall_s, run.cpu_s))


def _stop_at_failure(judged: Sequence[JudgedTest]) -> Callable[[dict[str, Any]], bool]:
    """The judge's early stop: a failing test (as judged here, values included) ends the run."""
    def failed(ev: dict[str, Any]) -> bool:
        i = ev.get("i")
        return ev["ev"] == "test" and isinstance(i, int) and 0 <= i < len(judged) and not verdict(judged[i], ev)[0]
    return failed


def _execute_stdin(host: SandboxHost, uid: int | None, job: SandboxJob, start: float) -> ExecResult:
    payload = _Payload("stdin", job.code, job.setup_code, (), None)
    status: Status = "passed"
    n_passed, failure, shown, runs = 0, None, None, []
    for i, test in enumerate(job.tests):
        if (wall_s := _budgeted(job, job.limits.per_test_s)) is None:
            if status == "passed":
                status, failure = "budget_exceeded", f"test {i}: the request's sandbox budget is spent"
            break
        run = _spawn(host, uid, payload, job.limits, wall_s, (test.input or "").encode())
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


def _result(status: Status, n: int, n_passed: int, start: float, failure: str | None, run: _Run | None,
            runs: Sequence[_Run] = ()) -> ExecResult:
    def tail(data: bytes) -> str:
        return data[-_TAIL:].decode("utf-8", errors="replace")

    return ExecResult(status, status == "passed", n, n_passed, round(time.monotonic() - start, 4),
                      failure[:_TAIL // 4] if failure else None,
                      tail(run.stdout) if run else "", tail(run.stderr) if run else "",
                      round(sum(r.cpu_s for r in runs), 4), round(sum(max(r.wall_s, r.cpu_s) for r in runs), 4))


def _status(kind: object) -> Status:
    return kind if isinstance(kind, str) and kind in _STATUSES else "runtime_error"  # type: ignore[return-value]


def _terminal(run: _Run) -> tuple[Status, str]:
    """Why the process tree ended without reporting the phase in progress."""
    if run.limit == "timeout":
        return "timeout", "time limit exceeded"
    if run.limit == "output_limit":
        return "output_limit", "output limit exceeded"
    if run.limit == "stopped":
        return "killed", "stopped after a failed test"
    if (ev := run.event("sandbox_error")) is not None:
        return "sandbox_error", str(ev.get("msg"))
    if run.status is None:
        return "killed", "the process tree was killed"
    memory = b"MemoryError" in run.stderr[-_TAIL:]
    if os.WIFSIGNALED(run.status):
        sig = os.WTERMSIG(run.status)
        if sig == signal.SIGXCPU:
            return "timeout", "CPU time limit exceeded"
        kind: Status = "memory" if memory else "killed" if sig == signal.SIGKILL else "runtime_error"
        return kind, f"killed by signal {sig}"
    code = os.waitstatus_to_exitcode(run.status)
    return ("memory" if memory else "runtime_error"), f"exited with code {code} before reporting"


def _early_failure(run: _Run) -> tuple[Status, str] | None:
    """A launch failure, a syntax error, or a program that did not get through its own top level."""
    if (ev := run.event("sandbox_error")) is not None:
        return "sandbox_error", str(ev.get("msg"))
    if (ev := run.event("compile")) is not None:
        return "syntax_error", str(ev.get("msg"))
    solution = run.event("solution")
    if solution is None:
        kind, why = _terminal(run)
        return kind, f"program: {why}"
    return None if solution.get("ok") is True else (_status(solution.get("kind")), f"program: {solution.get('msg')}")


def _judge_functional(run: _Run, judged: Sequence[JudgedTest], *,
                      stop_at_first_failure: bool = False) -> tuple[Status, int, str | None]:
    """Each test's verdict: a value test's from the value it reported (``sandbox_judge``), a code test's as
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
            kind, why = _terminal(run)
            return kind, n_passed, f"test {i}: {why}"
        if not test[0]:
            n_passed = i if stop_at_first_failure else n_passed
            return _status(test[1]), n_passed, f"test {i}: {test[2]}"
    if run.event("done") is None:
        kind, why = _terminal(run)
        return kind, n_passed, why
    return "passed", n_passed, None


def _judge_stdin(run: _Run, expected: str) -> tuple[Status, str | None]:
    # a program may end itself (os._exit(0) after printing) before the runner reports it: that is success
    ended_itself = run.limit is None and run.status == 0 and not any(ev["ev"] != "exit" for ev in run.events)
    if (early := _early_failure(run)) is not None and not ended_itself:
        return early
    if run.limit is not None:
        return _terminal(run)
    actual = run.stdout.decode("utf-8", errors="replace")
    if outputs_match(actual, expected):
        return "passed", None
    return "wrong_answer", f"expected {expected[:60]!r}, got {actual[:60]!r}"


def _lock_dir() -> Path:
    """A directory only we can write (so a sandboxed program cannot pre-empt the lock files)."""
    for parent in (Path("/run"), Path(tempfile.gettempdir())):
        path = parent / f"dreamprm-sandbox-{os.geteuid()}"
        try:
            path.mkdir(mode=0o700, exist_ok=True)
            info = path.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o077:
            return path
    raise RuntimeError("no private directory for the sandbox uid locks")


@contextmanager
def _uid_lease(host: SandboxHost) -> Iterator[int | None]:
    """An exclusive sandbox uid (root only), flock-ed so that threads and other processes never share one."""
    if not host.drop_to_uid:
        yield None
        return
    locks, first = _lock_dir(), secrets.randbelow(SANDBOX_UID_COUNT)
    while True:
        for k in range(SANDBOX_UID_COUNT):
            uid = SANDBOX_UID_BASE + (first + k) % SANDBOX_UID_COUNT
            fd = os.open(locks / str(uid), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                if not host.unshare_flags & sandbox_runner.CLONE_NEWPID:  # a namespace dies with its caller
                    _kill_uid(uid)  # leftovers of a caller that crashed mid-run
                yield uid
            finally:
                os.close(fd)
            return
        time.sleep(0.02)


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of a sandbox uid (through a pidfd checked after opening: no recycled pid is hit)."""
    for _ in range(200):
        tasks = sandbox_runner.uid_tasks(uid)
        if not tasks:
            return
        for pid, _threads in tasks:
            with suppress(OSError):
                pidfd = os.pidfd_open(pid)
                try:
                    if sandbox_runner.is_live_task_of(sandbox_runner.proc_status(str(pid)), uid):
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                finally:
                    os.close(pidfd)
        time.sleep(0.005)
    logger.warning("sandbox: processes of uid %d survive SIGKILL", uid)


class _Zygote:
    """The caller's end of one fork server (``sandbox_runner.zygote``) on one interpreter.

    Started on first use (and again in a forked caller, or if it died), with the sandbox's minimal
    environment; one request at a time (the round trip, a fork of the server, takes a few milliseconds), so
    callers keep one per CPU (``_zygote``) and parallel workers do not queue behind one server.
    """

    def __init__(self, host: SandboxHost) -> None:
        self._host = host
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._owner = 0
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self, cfg: dict[str, Any], fds: list[int]) -> tuple[int, int]:
        """Fork the top process of one run (monitor or launcher) with ``fds`` (stdin, stdout, stderr, result,
        payload, control) -> (pid, pidfd)."""
        request = json.dumps({"op": "run", **cfg}).encode()
        with self._lock:
            for attempt in range(2):
                sock = self._ensure()
                try:
                    socket.send_fds(sock, [request], fds)
                    reply, got, _flags, _addr = socket.recv_fds(sock, 1024, 1)
                except OSError:
                    reply, got = b"", []
                if reply and got:
                    return int(json.loads(reply)["pid"]), got[0]
                for fd in got:
                    os.close(fd)
                logger.warning("sandbox: the fork server died (attempt %d); starting another", attempt + 1)
                self._sock = None
                sock.close()
                if self.process is not None:
                    self.process.kill()
                    self.process.wait()
        raise RuntimeError("the sandbox fork server does not answer")

    def busy(self) -> bool:
        return self._lock.locked()

    def reap(self, pid: int) -> None:
        """Let the zygote reap a run's top process the caller has seen exit (its pid may be recycled after
        this)."""
        with self._lock, suppress(OSError):
            if self._sock is not None and self._owner == os.getpid():
                self._sock.send(json.dumps({"op": "reap", "pid": pid}).encode())

    def _ensure(self) -> socket.socket:
        if self._sock is not None and self._owner == os.getpid():
            return self._sock
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.process = subprocess.Popen(sandbox_runner.zygote_argv(self._host.python, theirs.fileno()),
                                            env=_host_env(self._host), cwd="/", stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
                                            start_new_session=True)
        self._sock, self._owner = ours, os.getpid()
        return ours


_zygote_lock = threading.Lock()
_zygotes: dict[SandboxHost, list[_Zygote]] = {}  # one kind per host (a root one builds its view once)
_ZYGOTES_PER_HOST = max(1, os.cpu_count() or 1)


def _zygote(host: SandboxHost) -> _Zygote:
    """A fork server for ``host``: an idle one, else a new one up to one per CPU, else the least recent."""
    with _zygote_lock:
        servers = _zygotes.setdefault(host, [])
        server = next((z for z in servers if not z.busy()), None)
        if server is None and len(servers) < _ZYGOTES_PER_HOST:
            server = _Zygote(host)
        elif server is None:
            server = servers[0]
        if server in servers:
            servers.remove(server)
        servers.append(server)  # most recently handed out last
        return server


def _spawn(host: SandboxHost, uid: int | None, payload: _Payload, limits: Limits, wall_s: float,
           stdin: bytes | None, stop: Callable[[dict[str, Any]], bool] | None = None) -> _Run:
    """One run in its private root (full isolation: a tmpfs that dies with the run's mount namespace), or else in
    a fresh temp dir; the process tree and the dir are gone when this returns. ``stop``: a runner event that
    ends the run early."""
    run_dir = None if host.isolation == "full" else tempfile.mkdtemp(prefix="dreamprm-sbx-")
    started = time.monotonic()
    try:
        nonce = secrets.token_hex(16)
        data = json.dumps({**asdict(payload), "nonce": nonce, "guard": host.network == "guard"}).encode()
        if uid is not None and run_dir is not None:
            os.chown(run_dir, uid, uid)
        pipes = [os.pipe() for _ in range(4)]  # stdout, stderr, results, control
        try:
            with _data_fd(stdin) as in_fd, _data_fd(data) as payload_fd:
                fds = [in_fd, pipes[0][1], pipes[1][1], pipes[2][1], payload_fd, pipes[3][1]]
                server = _zygote(host)
                pid, pidfd = server.launch(_run_config(host, uid, run_dir, limits, wall_s), fds)
        except BaseException as exc:
            for r, _ in pipes:
                os.close(r)
            if isinstance(exc, (OSError, RuntimeError)):  # e.g. the interpreter cannot be started
                return _Run([{"ev": "sandbox_error", "msg": f"fork server: {exc!r}"}], b"", b"", None, None)
            raise
        finally:
            for _, w in pipes:
                os.close(w)
        run = None
        try:
            run = _collect([r for r, _ in pipes], pidfd, nonce, limits.max_output_bytes, wall_s, stop)
        finally:
            for r, _ in pipes:
                os.close(r)
            _end_tree(host, server, pid, pidfd, uid, finished=run is not None and run.limit is None)
        return dataclasses.replace(run, wall_s=time.monotonic() - started)
    finally:
        if run_dir is not None:
            shutil.rmtree(run_dir, onerror=_force_remove)


def _run_config(host: SandboxHost, uid: int | None, run_dir: str | None, limits: Limits,
                wall_s: float) -> dict[str, Any]:
    cpu, mib = limits.cpu_s or math.ceil(wall_s), 1 << 20
    same = [(resource.RLIMIT_AS, limits.memory_mb * mib), (resource.RLIMIT_NPROC, limits.max_procs),
            (resource.RLIMIT_FSIZE, limits.max_file_mb * mib), (resource.RLIMIT_NOFILE, limits.max_open_files),
            (resource.RLIMIT_CORE, 0)]
    rlimits = [(r, v, v) for r, v in same] + [(resource.RLIMIT_CPU, cpu, cpu + 1)]  # SIGXCPU, then SIGKILL
    if run_dir is not None:
        env = _host_env(host) | {"HOME": run_dir, "TMPDIR": run_dir}
        return {"unshare": host.unshare_flags, "uid": uid, "rlimits": rlimits, "cwd": run_dir, "env": env}
    filesystem = {"binds": [*SYSTEM_PATHS, *host.site_dirs], "tmp_mb": limits.tmp_mb, "tmp_inodes": limits.tmp_inodes,
                  "shm_mb": limits.shm_mb, "shm_inodes": limits.shm_inodes}
    env = _host_env(host) | {"HOME": "/tmp", "TMPDIR": "/tmp"}
    return {"unshare": host.unshare_flags, "uid": uid, "rlimits": rlimits, "cwd": "/tmp", "env": env,
            "root": str(_mount_point()), "filesystem": filesystem}


def _mount_point() -> Path:
    """Where each run mounts its private root, in its own mount namespace (so runs share the empty dir)."""
    path = _lock_dir() / "root"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _host_env(host: SandboxHost) -> dict[str, str]:
    return _ENV | ({"PYTHONPATH": os.pathsep.join(host.site_dirs)} if host.site_dirs else {})


@contextmanager
def _data_fd(data: bytes | None) -> Iterator[int]:
    """A read-only fd on an anonymous in-memory file holding ``data`` (or on /dev/null)."""
    if data is None:
        fd = os.open(os.devnull, os.O_RDONLY)
    else:
        memfd = os.memfd_create("dreamprm-sandbox-data", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(memfd, view):]
            fd = os.open(f"/proc/self/fd/{memfd}", os.O_RDONLY)
        finally:
            os.close(memfd)
    try:
        yield fd
    finally:
        os.close(fd)


def _collect(fds: list[int], pidfd: int, nonce: str, cap: int, wall_s: float,
             stop: Callable[[dict[str, Any]], bool] | None = None) -> _Run:
    """Read stdout, stderr, the result and control pipes until EOF, the wall limit, the output cap or ``stop``."""
    out, err, res_fd, ctl_fd = fds
    bufs = {out: bytearray(), err: bytearray(), res_fd: bytearray(), ctl_fd: bytearray()}
    limit: Literal["timeout", "output_limit", "stopped"] | None = None
    deadline, exited_at, seen = time.monotonic() + wall_s, math.inf, 0
    with selectors.DefaultSelector() as sel:
        for fd in (*bufs, pidfd):
            sel.register(fd, selectors.EVENT_READ)
        while len(sel.get_map()) > (pidfd in sel.get_map()):
            now = time.monotonic()
            if now >= deadline:
                limit = "timeout"
                break
            if now - exited_at > _GRACE_S:
                break  # descendants of a finished program still hold the pipes
            for key, _ in sel.select(min(deadline - now, exited_at + _GRACE_S - now)):
                if key.fd == pidfd:  # the run's top process exited
                    exited_at = time.monotonic()
                    sel.unregister(pidfd)
                    continue
                chunk = os.read(key.fd, 1 << 16)
                bufs[key.fd] += chunk
                if not chunk:
                    sel.unregister(key.fd)
            if len(bufs[out]) + len(bufs[err]) > cap or len(bufs[res_fd]) + len(bufs[ctl_fd]) > _RESULT_CAP:
                limit = "output_limit"
                break
            if stop is not None and (end := bufs[res_fd].rfind(b"\n") + 1) > seen:
                lines, seen = bytes(bufs[res_fd][seen:end]), end
                if any(ev.get("nonce") == nonce and stop(ev) for ev in sandbox_runner.parse_lines(lines)):
                    limit = "stopped"
                    break
    events, status, cpu = sandbox_runner.parse_events(bytes(bufs[res_fd]), bytes(bufs[ctl_fd]), nonce)
    return _Run(events, bytes(bufs[out][:cap]), bytes(bufs[err][:cap]), limit, status, cpu_s=cpu)


def _exited(pidfd: int, timeout: float | None) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(pidfd, selectors.EVENT_READ)
        return bool(sel.select(timeout))


def _end_tree(host: SandboxHost, server: _Zygote, pid: int, pidfd: int, uid: int | None, *, finished: bool) -> None:
    """Make sure the run's processes are gone, then let the zygote reap the run's top process.

    A top process that exits by itself (``finished``: the pipes reached EOF) in a PID namespace is or has
    waited for the monitor, whose exit (as PID 1) took every process of the namespace down: nothing to kill
    or sweep. Otherwise its group gets SIGKILL (its pid cannot be recycled: it is reaped only after this)
    and, as root, the uid is swept.
    """
    try:
        pid_namespace = bool(host.unshare_flags & sandbox_runner.CLONE_NEWPID)
        if not (pid_namespace and finished and _exited(pidfd, _GRACE_S)):
            with suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)  # even before its setsid()
            with suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            _exited(pidfd, None)
            if uid is not None:
                _kill_uid(uid)  # whatever left the group (setsid) and, without a PID namespace, orphans
    finally:
        os.close(pidfd)
        server.reap(pid)  # the server that forked it


def _force_remove(func: Any, path: str, exc_info: Any) -> None:
    """rmtree's error hook: a program may have chmod-ed its own dirs to 0 (only matters when not root)."""
    try:
        os.chmod(os.path.dirname(path), 0o700)
        func(path)
    except OSError:
        logger.warning("sandbox: could not remove %s", path)
