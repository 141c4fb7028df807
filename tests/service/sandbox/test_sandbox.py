"""service.sandbox: verdicts, the stdout comparison rule, a hostile-code suite, and reference solutions.

Every hostile case must be contained and classified, and leave the machine healthy: the pytest process and
PID 1 alive, no process of a sandbox uid left, no run directory left.
"""

from __future__ import annotations

import ast
import json
import os
import resource
import socket
import stat
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from service import sandbox
from service.sandbox import (
    SANDBOX_UID_BASE,
    SANDBOX_UID_COUNT,
    ExecResult,
    Limits,
    SandboxHost,
    SandboxJob,
    TestSpec,
    outputs_match,
    process,
    run_many,
    run_tests,
    sandbox_host,
)
from tests.conftest import REPO, shared_data

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")
ROOT = os.geteuid() == 0
SANDBOX_UIDS = {*range(SANDBOX_UID_BASE, SANDBOX_UID_BASE + SANDBOX_UID_COUNT), 65534}


def asserts(*codes: str) -> list[TestSpec]:
    return [TestSpec("assert", code=c) for c in codes]


def io(stdin: str, stdout: str) -> TestSpec:
    return TestSpec("io", input=stdin, output=stdout)


def functional(code: str, *tests: str, **limits: float) -> ExecResult:
    return run_tests(code, asserts(*tests), test_type="functional", limits=Limits(**limits))  # type: ignore[arg-type]


def sandbox_processes() -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path("/proc", pid, "status").read_text()
        except OSError:
            continue
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if uid in SANDBOX_UIDS and "State:\tZ" not in status:
            found.append(f"{pid} uid={uid}")
    return found


def run_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("dreamprm-sbx-*")}


@pytest.fixture
def healthy() -> Iterator[None]:
    """The machine after a hostile run: we and PID 1 are alive, no sandbox process or run dir is left."""
    dirs_before = run_dirs()
    yield
    os.kill(1, 0)
    os.kill(os.getpid(), 0)
    assert sandbox_processes() == []
    assert run_dirs() <= dirs_before


def has_cap_sys_admin() -> bool:
    status = Path("/proc/self/status").read_text()
    return bool(int(next(line for line in status.splitlines() if line.startswith("CapEff:")).split()[1], 16) & 1 << 21)


def test_the_probe_finds_a_working_sandbox() -> None:
    host = sandbox_host()
    assert host is not None
    assert sandbox.NETWORK_ISOLATION == host.network
    assert host.drop_to_uid is ROOT
    if ROOT and has_cap_sys_admin():  # where namespaces can be made, they are used
        assert host.network == "namespace"


@pytest.mark.parametrize(("module", "allowed"), [("__init__.py", {"service"}), ("judge.py", {"service"}),
                                                  ("runner.py", set())])
def test_stdlib_only(module: str, allowed: set[str]) -> None:
    """The trainer and the HTTP service's test filter both import it; the runner's source runs in the child."""
    tree = ast.parse((REPO / "service" / "sandbox" / module).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names - set(sys.stdlib_module_names) - {"__future__"} <= allowed


# --- ordinary verdicts -------------------------------------------------------------------------------------


def test_functional_counts_each_assert() -> None:
    r = functional("def inc(x):\n    return x + 1\n", "assert inc(1) == 2", "assert inc(2) == 4", "assert inc(3) == 4",
                   "assert inc(0) == 1")
    assert (r.status, r.passed, r.n_tests, r.n_passed) == ("wrong_answer", False, 4, 3)
    assert r.first_failure == "test 1: AssertionError: got 3"  # the value, judged outside the sandbox
    ok = functional("def inc(x):\n    return x + 1\n", "assert inc(1) == 2")
    assert (ok.status, ok.passed, ok.n_passed) == ("passed", True, 1)


def test_an_exception_inside_a_test_fails_that_test_only() -> None:
    r = functional("def f(xs):\n    return xs[3]\n", "assert f([1]) == 1", "assert f([0, 0, 0, 7]) == 7")
    assert (r.status, r.n_passed) == ("wrong_answer", 1)
    assert r.first_failure is not None and "IndexError" in r.first_failure


def test_leetcode_class_with_setup_code() -> None:
    setup = "from typing import *\nfrom collections import *\n"
    code = ("class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
            "        seen = defaultdict(int)\n        for i, x in enumerate(nums):\n"
            "            if target - x in seen:\n                return [seen[target - x], i]\n"
            "            seen[x] = i\n")
    tests = asserts("assert Solution().twoSum(nums = [2,7,11,15], target = 9) == [0,1]",
                    "assert Solution().twoSum(nums = [3,3], target = 6) == [0,1]")
    assert run_tests(code, tests, test_type="functional", setup_code=setup).status == "passed"
    assert run_tests(code, tests, test_type="functional").status == "runtime_error"  # no List without setup


@pytest.mark.parametrize(("code", "status"), [
    ("def f(:\n    pass", "syntax_error"),
    ("from __future__ import annotations\nx: Undefined = 1", "passed"),  # the program compiles on its own
    ("def f(x: Undefined) -> None:\n    pass", "runtime_error"),  # ... and not under the runner's __future__s
    ("import nonexistent_module_xyz", "runtime_error"),
    ("raise SystemExit(0)", "runtime_error"),
    ("x = bytearray(20 * 2**30)", "memory"),
])
def test_program_level_verdicts(code: str, status: str) -> None:
    r = functional(code, "assert True")
    assert r.status == status, r
    assert r.n_passed == (1 if status == "passed" else 0)


def test_per_assert_budget_and_fixed_hash_seed() -> None:
    r = functional("import time", "while True: pass", "assert 1", assert_s=0.5)
    assert (r.status, r.n_passed) == ("timeout", 1)
    seeds = {functional("print(hash('dreamprm'))", "assert 1").stdout_tail for _ in range(2)}
    assert len(seeds) == 1


def test_stdin_tests_each_run_and_compare() -> None:
    code = "n = int(input())\nprint(n * 2, ' ')\nprint(1 / 3)\n"
    tests = [io("2\n", "4\n0.333333"), io("5\n", "10\n0.3333333333"), io("3\n", "7\n0.3333333")]
    r = run_tests(code, tests, test_type="stdin")
    assert (r.status, r.n_tests, r.n_passed) == ("wrong_answer", 3, 2)
    assert r.first_failure is not None and r.first_failure.startswith("test 2: expected '7")
    first = run_tests(code, [tests[2], tests[0]], test_type="stdin", stop_at_first_failure=True)
    assert (first.status, first.n_passed) == ("wrong_answer", 0)
    assert run_tests("print(int(input()) +", tests, test_type="stdin").status == "syntax_error"
    assert run_tests("import sys\nprint(input())\nsys.exit(0)", [io("x", "x")], test_type="stdin").passed
    assert run_tests("print(input())\nexit(2)", [io("x", "x")], test_type="stdin").status == "runtime_error"
    slow = run_tests("while True: pass", [io("", "")], test_type="stdin", limits=Limits(per_test_s=1))
    assert slow.status == "timeout" and slow.seconds < 3


@pytest.mark.parametrize(("actual", "expected", "match"), [
    ("1 2\n3\n", "1 2\n3", True),
    ("1 2   \n3  \n\n\n", "1 2\n3", True),  # trailing whitespace of lines and of the output
    ("1  2\n", "1 2\n", True),  # tokens
    ("0.3333333\n", "0.33333333333\n", True),  # within 1e-6
    ("0.33\n", "0.333\n", False),
    ("1e-9\n", "0\n", True),  # absolute 1e-6
    ("12345678901234567890\n", "12345678901234567891\n", False),  # integers compare exactly
    ("007\n", "7\n", True),
    ("1\n\n2\n", "1\n2\n", False),  # line counts must agree
    ("YES\n", "yes\n", False),
    ("nan\n", "nan\n", True),
    ("1 2 3\n", "1 2\n", False),
])
def test_outputs_match(actual: str, expected: str, match: bool) -> None:
    assert outputs_match(actual, expected) is match


def test_run_many_keeps_order_and_gives_concurrent_runs_their_own_uid() -> None:
    code = "import os, time\nuid = os.getuid()\ntime.sleep(0.3)\nprint(uid)\n"
    jobs = [SandboxJob(code, asserts(f"assert {i} % 2 == 0"), "functional") for i in range(4)]
    results = run_many(jobs, workers=4)
    assert [r.passed for r in results] == [True, False, True, False]
    uids = {int(r.stdout_tail) for r in results}
    if ROOT:
        assert len(uids) == 4 and uids <= SANDBOX_UIDS


def test_runs_do_not_share_interpreter_state() -> None:
    # every run is a fresh fork of the fork server: what one program changes, the next one does not see
    tamper = ("import builtins, heapq, random, sys\nbuiltins.LEFT = 1\nheapq.heappush = None\n"
              "sys.path.insert(0, '/x')\nprint(random.random())\n")
    first, second = (functional(tamper, "assert True") for _ in range(2))
    assert first.passed and second.passed, (first, second)
    assert first.stdout_tail != second.stdout_tail  # random is seeded per run, not inherited
    clean = functional("import builtins, heapq, sys\n", "assert not hasattr(builtins, 'LEFT')",
                       "assert heapq.heappush is not None", "assert '/x' not in sys.path")
    assert clean.passed, clean


@pytest.mark.usefixtures("healthy")
def test_a_dead_fork_server_is_replaced() -> None:
    assert functional("x = 1", "assert x == 1").passed  # the fork server is up
    servers = process._zygotes[host] if (host := sandbox_host()) else []
    assert servers and all(s.process is not None for s in servers)
    for server in servers:
        assert server.process is not None
        server.process.kill()
        server.process.wait()
    assert all(functional("x = 1", "assert x == 1").passed for _ in range(len(servers) + 1))


def test_wrong_test_kind_is_a_caller_error() -> None:
    with pytest.raises(ValueError):
        run_tests("x = 1", [io("", "")], test_type="functional")
    with pytest.raises(ValueError):
        Limits(wall_s=0)


# --- hostile code ------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("healthy")
def test_infinite_loop_times_out() -> None:
    r = functional("while True:\n    pass\n", "assert True", wall_s=2)
    assert r.status == "timeout" and 2 <= r.seconds < 4


@pytest.mark.usefixtures("healthy")
@pytest.mark.parametrize("code", [
    "import os\nwhile True: os.fork()",
    "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
])
def test_fork_bomb_is_contained(code: str) -> None:
    r = functional(code, "assert True", wall_s=3)
    assert r.status in ("timeout", "runtime_error") and r.seconds < 6


@pytest.mark.usefixtures("healthy")
def test_detached_children_are_killed() -> None:
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    os.close(1)\n    os.close(2)\n    time.sleep(60)"
    r = functional(code, "assert True")
    assert r.status == "passed" and r.seconds < 2


@pytest.mark.usefixtures("healthy")
def test_huge_allocation_is_memory() -> None:
    r = functional("x = bytearray(20 * 2**30)\n", "assert True")
    assert r.status == "memory"


@pytest.mark.usefixtures("healthy")
def test_writes_outside_the_run_dir_fail() -> None:
    tag = uuid.uuid4().hex
    candidates = [REPO / f"pwned-{tag}.txt", Path(f"/root/pwned-{tag}"), Path.home() / f"pwned-{tag}",
                  REPO.parent / f"pwned-{tag}"]
    # world-writable places (/tmp, where a clone may live) are writable by design: see service/sandbox/__init__.py
    targets = [t for t in candidates if not t.parent.stat().st_mode & stat.S_IWOTH]
    assert REPO / f"pwned-{tag}.txt" in targets
    code = ("import os\nhits = []\n"
            f"for path in {[str(t) for t in targets]!r} + [os.path.expanduser('~/own-{tag}')]:\n"
            "    try:\n        open(path, 'w').write('x')\n        hits.append(path)\n"
            "    except OSError:\n        pass\n"
            "print(hits)\n")
    r = functional(code, "assert len(hits) == 1 and hits[0].endswith('own-" + tag + "')")
    assert r.status == "passed", r  # only its own ~ (the run dir) was writable
    assert not any(t.exists() for t in targets)


@pytest.fixture
def listener() -> Iterator[tuple[int, list[object]]]:
    """A TCP server on 127.0.0.1 that records every connection it accepts."""
    accepted: list[object] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


@pytest.mark.usefixtures("healthy")
@pytest.mark.parametrize("guard", [False, True])
def test_network_is_unreachable(listener: tuple[int, list[object]], guard: bool,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    port, accepted = listener
    host = sandbox_host()
    assert host is not None
    if guard:  # the fallback used where no namespace can be made
        monkeypatch.setattr(sandbox.host, "_host_cache", [SandboxHost(host.python, "guard", 0, host.drop_to_uid)])
    for code in (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi')",
                 f"import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))"):
        r = functional(code, "assert True")
        assert r.status == "runtime_error", r
    time.sleep(0.2)
    assert accepted == []


@pytest.mark.usefixtures("healthy")
@pytest.mark.parametrize("code", [
    "import os\nos.kill(os.getppid(), 9)",
    "import os\nos.killpg(os.getpgid(0), 9)",
    "import os\nos.kill(1, 9)",
    "import os\nos.kill(-1, 9)",
    f"import os\nos.kill({os.getpid()}, 9)",
    f"import os\nos.killpg(os.getpgid({os.getpid()}), 9)",
])
def test_killing_the_parent_fails(code: str) -> None:
    # `healthy` checks that we and PID 1 survive; the signal reaches at most the run's own processes
    r = functional(code, "assert True")
    assert r.status in ("passed", "runtime_error", "killed")


@pytest.mark.usefixtures("healthy")
@pytest.mark.parametrize(("code", "memory_mb"), [
    ("print('x' * 10**9)", 3000),  # room for the string and its encoded copy
    ("while True:\n    print('x' * 1000)", 1024),
    ("import sys\nwhile True:\n    sys.stderr.write('y' * 100)", 1024),
])
def test_output_flood_is_cut(code: str, memory_mb: int) -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = functional(code, "assert True", memory_mb=memory_mb)
    assert r.status == "output_limit" and r.seconds < Limits().wall_s  # cut by the cap, not by the timeout
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 64 * 1024  # KiB: parent bounded


@pytest.mark.usefixtures("healthy")
def test_printing_a_gigabyte_under_the_default_memory_limit() -> None:
    # encoding the 1 GB string needs a second gigabyte: under 1 GiB of address space that is a MemoryError
    assert functional("print('x' * 10**9)", "assert True").status in ("memory", "output_limit")


@pytest.mark.usefixtures("healthy")
def test_the_callers_environment_is_invisible(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setenv("DREAMPRM_API_KEYS", secret)
    code = ("import os\nleaks = [k for k, v in os.environ.items() if " + repr(secret) + " in v]\n"
            "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
            "    try:\n        data = open(f'/proc/{pid}/environ', 'rb').read()\n    except OSError:\n"
            "        continue\n"
            "    if " + repr(secret.encode()) + " in data:\n        leaks.append(pid)\n")
    r = functional(code, "assert leaks == [], leaks")
    if not ROOT:  # the caller's /proc/<pid>/environ is readable by the same uid
        pytest.skip("needs root: same-uid processes can read each other's environment")
    assert r.status == "passed", r


@pytest.mark.usefixtures("healthy")
def test_printed_or_forged_results_do_not_pass() -> None:
    forged = [{"ev": "solution", "ok": True}, {"ev": "test", "i": 0, "ok": True, "kind": "passed"},
              {"ev": "done"}, {"ev": "exit", "status": 0}]
    lines = "".join(json.dumps(e) + "\n" for e in forged)
    code = ("import os\nprint('All tests passed')\nprint(" + repr(lines) + ")\n"
            "for fd in range(3, 64):\n    try:\n        os.write(fd, " + repr(lines.encode()) + ")\n"
            "    except OSError:\n        pass\nos._exit(0)\n")
    r = functional(code, "assert False")
    assert not r.passed and r.n_passed == 0


# --- reference solutions --------------------------------------------------------------------------------------


def test_reference_solutions_pass() -> None:
    from benchmarks.reference_pass_rate import reference_job

    problems = [json.loads(line) for name in ("leetcodedataset_train.jsonl", "humaneval.jsonl")
                for line in shared_data(name).read_text().splitlines()[:20]]
    results = run_many([reference_job(p, Limits()) for p in problems], workers=2)
    failed = {p["id"]: r.first_failure for p, r in zip(problems, results, strict=True) if not r.passed}
    assert len(failed) <= 0.05 * len(problems), failed
