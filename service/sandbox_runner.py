"""Child side of ``service.sandbox`` (launcher, monitor, test runner) and the wire format both sides share.

Stdlib only and self-contained: the parent passes this file's source to ``python -c``, so it must never
import ``service`` (or anything outside the stdlib). Nothing runs on import; the ``__main__`` block dispatches.
``launcher_argv`` and ``parse_events`` are the parent's half of the protocol, kept next to the child's half.

``launch CFG`` (trusted interpreter, as the caller's user): enter new network + PID namespaces (plus a user
namespace when not root), fork the *monitor* (PID 1 of the new namespace), which forks the *candidate*:
rlimits, drop to the sandbox uid with no groups, parent-death signal, ``execve`` of ``run``. The monitor reaps,
reports the candidate's wait status and exits, which makes the kernel kill everything left in the namespace.
``run FD`` (sandbox interpreter, unprivileged): load and delete the payload file, optionally install the socket
guard, compile and run the program, run each test, and report JSON lines tagged with the payload's nonce on
the inherited pipe ``FD``; the program's own stdout/stderr never carry results.
"""

from __future__ import annotations

import builtins
import ctypes
import json
import os
import resource
import signal
import sys
from typing import Any, NoReturn

PAYLOAD_NAME = ".sandbox_payload.json"
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_PR_SET_PDEATHSIG = 1
_MSG_CAP = 300


def launcher_argv(*, exe: str, run_dir: str, res_fd: int, unshare: int, uid: int | None,
                  rlimits: list[tuple[int, int, int]], env: dict[str, str]) -> list[str]:
    """The command that runs this file as launcher; it will ``exe -s -P -c <this file> run <res_fd>``."""
    with open(__file__, encoding="utf-8") as fh:
        source = fh.read()
    cfg = {"result_fd": res_fd, "parent_pid": os.getpid(), "unshare": unshare, "uid": uid, "rlimits": rlimits,
           "cwd": run_dir, "exe": exe, "env": env, "argv": [exe, "-s", "-P", "-c", source, "run", str(res_fd)]}
    return [sys.executable, "-I", "-S", "-c", source, "launch", json.dumps(cfg)]


def parse_events(data: bytes, nonce: str) -> tuple[list[dict[str, Any]], int | None]:
    """Runner events that carry ``nonce``, launcher errors, and the monitor's last exit report (a wait status).

    Launcher and monitor events are unsigned (their command line is world-readable); forging them can only
    turn a failure into another kind of failure.
    """
    events, status = [], None
    for line in data.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if not isinstance(ev, dict) or not isinstance(ev.get("ev"), str):
            continue
        if ev["ev"] == "exit" and isinstance(ev.get("status"), int):
            status = ev["status"]
        elif ev["ev"] == "sandbox_error" or ev.get("nonce") == nonce:
            events.append(ev)
    return events, status


def proc_status(pid: str) -> dict[str, str] | None:
    """``/proc/<pid>/status`` as a dict, None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            text = fh.read()
    except OSError:
        return None
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def is_live_task_of(fields: dict[str, str] | None, uid: int) -> bool:
    return fields is not None and int(fields["Uid"].split()[0]) == uid and not fields["State"].startswith("Z")


def uid_tasks(uid: int) -> list[tuple[int, int]]:
    """(pid, threads) of the live processes whose real uid is ``uid``."""
    found = []
    for name in os.listdir("/proc"):
        fields = proc_status(name) if name.isdigit() else None
        if fields is not None and is_live_task_of(fields, uid):
            found.append((int(name), int(fields["Threads"])))
    return found


def _write_event(fd: int, event: dict[str, Any]) -> None:
    data = (json.dumps(event) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def _fail(fd: int, what: str, exc: BaseException) -> NoReturn:
    try:
        _write_event(fd, {"ev": "sandbox_error", "msg": f"{what}: {exc!r}"[:_MSG_CAP]})
    finally:
        os._exit(1)


def _quiet_stdio() -> None:
    """Point 0-2 at /dev/null so the parent sees EOF as soon as the candidate's processes are gone."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _map_own_ids() -> None:
    """In a fresh user namespace (non-root callers) map our uid/gid onto themselves."""
    uid, gid = os.getuid(), os.getgid()
    with open("/proc/self/setgroups", "w") as fh:
        fh.write("deny")
    with open("/proc/self/uid_map", "w") as fh:
        fh.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as fh:
        fh.write(f"{gid} {gid} 1")


def _exec_candidate(cfg: dict[str, Any], libc: ctypes.CDLL) -> NoReturn:
    res_fd = cfg["result_fd"]
    try:
        for res, soft, hard in cfg["rlimits"]:
            if res == resource.RLIMIT_NPROC and cfg["uid"] is None:  # it counts all the caller's tasks
                soft = hard = soft + sum(threads for _, threads in uid_tasks(os.getuid()))
            resource.setrlimit(res, (soft, hard))
        if cfg["uid"] is not None:
            os.setgroups([])
            os.setgid(cfg["uid"])
            os.setuid(cfg["uid"])
        if 0 in (os.getuid(), os.geteuid()):  # never run a program as root, whatever the caller asked
            raise PermissionError("refusing to run the program as root")
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it
        os.chdir(cfg["cwd"])
        os.execve(cfg["exe"], cfg["argv"], cfg["env"])
    except BaseException as exc:  # noqa: BLE001 - report anything
        _fail(res_fd, "exec", exc)


def _monitor(cfg: dict[str, Any], libc: ctypes.CDLL) -> NoReturn:
    res_fd = cfg["result_fd"]
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with the launcher (and so takes the namespace down)
    try:
        pid = os.fork()
    except BaseException as exc:  # noqa: BLE001 - report anything
        _fail(res_fd, "fork", exc)
    if pid == 0:
        _exec_candidate(cfg, libc)
    _quiet_stdio()
    while True:  # as PID 1 we also reap orphans; stop when the candidate itself is done
        done, status = os.wait()
        if done == pid:
            break
    _write_event(res_fd, {"ev": "exit", "status": status})
    os._exit(0)


def launch(cfg: dict[str, Any]) -> NoReturn:
    """Namespaces, then launcher -> monitor -> candidate; see the module docstring."""
    res_fd = cfg["result_fd"]
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # the caller died: take everything down
        if os.getppid() != cfg["parent_pid"]:
            raise ProcessLookupError("the caller is gone")
        if cfg["unshare"] and libc.unshare(cfg["unshare"]) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        if cfg["unshare"] & CLONE_NEWUSER:
            _map_own_ids()
        pid = os.fork()
    except BaseException as exc:  # noqa: BLE001 - report anything
        _fail(res_fd, "namespaces", exc)
    if pid == 0:
        _monitor(cfg, libc)
    _quiet_stdio()
    os.close(res_fd)
    os.waitpid(pid, 0)
    os._exit(0)


class _TestTimeout(BaseException):
    """Raised by SIGALRM when a functional test exceeds its own budget."""


def _describe(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except BaseException:  # noqa: BLE001 - a hostile __str__
        text = type(exc).__name__
    return text[:_MSG_CAP]


def _kind(exc: BaseException, default: str) -> str:
    if isinstance(exc, MemoryError):
        return "memory"
    return "timeout" if isinstance(exc, _TestTimeout) else default


def _install_network_guard() -> None:
    """Fallback when no network namespace can be made: sockets refuse to be created (bypassable, see docs)."""
    import _socket
    import socket

    def deny(*args: Any, **kwargs: Any) -> NoReturn:
        raise PermissionError(13, "network access is disabled in the sandbox")

    class NoSocket(_socket.socket):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            deny()

    socket.socket = _socket.socket = NoSocket  # type: ignore[assignment,misc]
    for name in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo"):
        setattr(socket, name, deny)
    _socket.socketpair = deny


def _on_alarm(signum: int, frame: object) -> None:
    raise _TestTimeout("test time budget exceeded")


def _run_test(code: str, ns: dict[str, Any], budget: float | None) -> tuple[bool, str, str]:
    if budget:
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        exec(compile(code, "test.py", "exec", dont_inherit=True), ns)
        return True, "passed", ""
    except BaseException as exc:  # noqa: BLE001 - report anything
        return False, _kind(exc, "wrong_answer"), _describe(exc)
    finally:
        if budget:
            signal.setitimer(signal.ITIMER_REAL, 0)


def _print_traceback(exc: BaseException) -> None:
    try:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__ and exc.__traceback__.tb_next)
    except BaseException:  # noqa: BLE001 - best effort
        pass


def _flush_and_exit() -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the program may have replaced or closed them
            pass
    os._exit(0)  # skip atexit hooks and non-daemon threads of the program


def run(res_fd: int) -> NoReturn:
    """Run the payload's program and tests; one JSON event per phase on ``res_fd``."""
    main_pid = os.getpid()
    with open(PAYLOAD_NAME, "rb") as fh:
        payload = json.loads(fh.read())
    os.unlink(PAYLOAD_NAME)
    nonce, stdin_mode = payload.pop("nonce"), payload["mode"] == "stdin"

    def emit(ev: str, **fields: Any) -> None:
        if os.getpid() != main_pid:  # a process the program forked came back into the runner
            os._exit(0)
        _write_event(res_fd, {"ev": ev, "nonce": nonce, **fields})

    if payload["guard"]:
        _install_network_guard()
    sys.argv = ["solution.py"]
    ns: dict[str, Any] = {"__name__": "__main__" if stdin_mode else "solution", "__builtins__": builtins}
    try:
        program = compile(payload["code"], "solution.py", "exec", dont_inherit=True)
    except BaseException as exc:  # noqa: BLE001 - report anything
        emit("compile", ok=False, kind="syntax_error", msg=_describe(exc))
        _flush_and_exit()
    try:
        if payload["setup"]:
            exec(compile(payload["setup"], "setup.py", "exec", dont_inherit=True), ns)
        exec(program, ns)
    except SystemExit as exc:
        if not (stdin_mode and exc.code in (None, 0)):
            _print_traceback(exc)
            emit("solution", ok=False, kind="runtime_error", msg=_describe(exc))
            _flush_and_exit()
    except BaseException as exc:  # noqa: BLE001 - report anything
        _print_traceback(exc)
        emit("solution", ok=False, kind=_kind(exc, "runtime_error"), msg=_describe(exc))
        _flush_and_exit()
    emit("solution", ok=True)
    for i, code in enumerate(payload["tests"]):
        ok, kind, msg = _run_test(code, ns, payload["assert_s"])
        emit("test", i=i, ok=ok, kind=kind, msg=msg)
    emit("done")
    _flush_and_exit()


if __name__ == "__main__":
    if sys.argv[1] == "launch":
        launch(json.loads(sys.argv[2]))
    else:
        run(int(sys.argv[2]))
