"""Child side of ``service.sandbox`` (fork server, launcher, monitor, test runner) and the shared wire format.

Stdlib only and self-contained: the parent passes this file's source to ``python -c``, so it must never
import ``service`` (or anything outside the stdlib). Nothing runs on import; the ``__main__`` block dispatches.
``zygote_argv`` and ``parse_events`` are the parent's half of the protocol, kept next to the child's half.

``zygote FD`` (the sandbox interpreter, as the caller's user, started once per caller process with a minimal
environment): a fork server. Per run it forks a *launcher*: own session, the run's stdio, new network + PID
namespaces (plus a user namespace when not root), then the *monitor* (PID 1 of the new namespace), which forks
the *candidate*: rlimits, drop to the sandbox uid with no groups, parent-death signal, the run's cwd and
environment, then the payload runs in that same, already initialised interpreter (no exec: two interpreter
starts per run saved; every run is a fresh copy-on-write fork of a zygote that never runs untrusted code).
The monitor reaps, reports the candidate's wait status and exits, which makes the kernel kill everything left
in the namespace. The runner (``run``) loads and deletes the payload file, optionally installs the socket
guard, compiles and runs the program, runs each test, and reports JSON lines tagged with the payload's nonce
on the inherited result pipe; the program's own stdout/stderr never carry results.
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


def zygote_argv(exe: str, sock_fd: int) -> list[str]:
    """The command that starts this file as the fork server on the inherited socket ``sock_fd``."""
    with open(__file__, encoding="utf-8") as fh:
        return [exe, "-s", "-P", "-c", fh.read(), "zygote", str(sock_fd)]


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


def _become_candidate(cfg: dict[str, Any], libc: ctypes.CDLL) -> NoReturn:
    """Rlimits, the sandbox uid, the run's cwd and environment; then this process runs the payload."""
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
        os.environ.clear()
        os.environ.update(cfg["env"])
    except BaseException as exc:  # noqa: BLE001 - report anything
        _fail(res_fd, "exec", exc)
    run(res_fd)


def _monitor(cfg: dict[str, Any], libc: ctypes.CDLL) -> NoReturn:
    res_fd = cfg["result_fd"]
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with the launcher (and so takes the namespace down)
    try:
        pid = os.fork()
    except BaseException as exc:  # noqa: BLE001 - report anything
        _fail(res_fd, "fork", exc)
    if pid == 0:
        _become_candidate(cfg, libc)
    _quiet_stdio()
    while True:  # as PID 1 we also reap orphans; stop when the candidate itself is done
        done, status = os.wait()
        if done == pid:
            break
    _write_event(res_fd, {"ev": "exit", "status": status})
    os._exit(0)


def _launch(cfg: dict[str, Any], fds: list[int], zygote_pid: int) -> NoReturn:
    """In a fresh fork of the zygote: its own session and stdio, namespaces, then monitor -> candidate."""
    stdin, stdout, stderr, res_fd = fds
    try:
        os.setsid()
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
        os.closerange(3, res_fd)
        os.closerange(res_fd + 1, 1 << 16)  # the zygote's socket and anything else it held
        cfg["result_fd"] = res_fd
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # the zygote died (its caller is gone): take all down
        if os.getppid() != zygote_pid:
            raise ProcessLookupError("the zygote is gone")
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


def zygote(sock_fd: int) -> NoReturn:
    """The fork server: one single-threaded, pristine interpreter that forks a launcher per run.

    Requests on the SOCK_SEQPACKET socket: ``{"op": "run", **cfg}`` with the run's stdin, stdout, stderr
    and result fds attached, answered with ``{"pid": launcher_pid}`` and a pidfd of the launcher; and
    ``{"op": "reap", "pid": pid}`` (no answer) once the caller has seen the launcher exit, so a launcher's
    pid (its process group id) is never recycled while the caller may still signal it. EOF: the caller is
    gone, so we exit, and every launcher follows (parent-death signal). Needs Linux >= 5.3 (pidfd).
    """
    import socket

    sock, me = socket.socket(fileno=sock_fd), os.getpid()
    while True:
        msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 4)
        if not msg:
            os._exit(0)
        request = json.loads(msg)
        if request["op"] == "reap":
            try:
                os.waitpid(request["pid"], 0)
            except ChildProcessError:  # not ours: the caller sent it to the zygote that replaced ours
                pass
            continue
        pid = os.fork()
        if pid == 0:
            _launch(request, fds, me)
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        socket.send_fds(sock, [json.dumps({"pid": pid}).encode()], [pidfd])
        os.close(pidfd)


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


if __name__ == "__main__" and sys.argv[1:2] == ["zygote"]:
    zygote(int(sys.argv[2]))
