"""What the sandbox takes and gives: limits, tests, jobs, budgets, results and their status. Stdlib only."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

Status = Literal["passed", "wrong_answer", "runtime_error", "timeout", "memory", "output_limit",
                 "syntax_error", "killed", "sandbox_error", "budget_exceeded"]
TestType = Literal["functional", "stdin"]
NetworkIsolation = Literal["namespace", "guard"]
# full: own mount + PID + network namespaces (private /tmp, /dev/shm, /proc; read-only minimal view);
# namespaces: PID + network only (the host's filesystem); none: the socket guard only; unavailable: no runs
Isolation = Literal["full", "namespaces", "none", "unavailable"]
STATUSES: frozenset[str] = frozenset(get_args(Status))


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
