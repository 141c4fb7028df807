"""One run in the sandbox's process tree: the caller's end of the fork servers (``runner.zygote``), the run's
fds, pipes and payload, collecting its output and events until EOF or a limit, ending its tree, leasing its uid.
See the package's docstring for the isolation model. Stdlib only. One module for a run's whole life (launch,
collect, end, reap) because each step holds what the next one releases (fds, pidfd, uid lease, the server's
reap)."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import math
import os
import resource
import secrets
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from service.sandbox import runner as sandbox_runner
from service.sandbox.records import STATUSES, Isolation, Limits, NetworkIsolation, Status, TestType

logger = logging.getLogger(__name__)

# what a run sees read-only besides the interpreter's own dirs (which its fork server adds)
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache",
                "/etc/localtime", "/etc/alternatives")
SANDBOX_UID_BASE = 64000
SANDBOX_UID_COUNT = 64
TAIL = 2000
_RESULT_CAP = 1 << 22
_GRACE_S = 0.2
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}


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
class Payload:
    mode: TestType
    code: str
    setup: str
    tests: tuple[dict[str, Any], ...]
    assert_s: float | None
    stop: bool = False


@dataclass(frozen=True, slots=True)
class Run:
    events: list[dict[str, Any]]
    stdout: bytes
    stderr: bytes
    limit: Literal["timeout", "output_limit", "stopped"] | None
    status: int | None  # the candidate's wait status, from the monitor
    wall_s: float = 0.0
    cpu_s: float = 0.0  # every process of the run (from the monitor or launcher)

    def event(self, name: str) -> dict[str, Any] | None:
        return next((ev for ev in self.events if ev["ev"] == name), None)


def status_of(kind: object) -> Status:
    return kind if isinstance(kind, str) and kind in STATUSES else "runtime_error"  # type: ignore[return-value]


def terminal(run: Run) -> tuple[Status, str]:
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
    memory = b"MemoryError" in run.stderr[-TAIL:]
    if os.WIFSIGNALED(run.status):
        sig = os.WTERMSIG(run.status)
        if sig == signal.SIGXCPU:
            return "timeout", "CPU time limit exceeded"
        kind: Status = "memory" if memory else "killed" if sig == signal.SIGKILL else "runtime_error"
        return kind, f"killed by signal {sig}"
    code = os.waitstatus_to_exitcode(run.status)
    return ("memory" if memory else "runtime_error"), f"exited with code {code} before reporting"


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
def uid_lease(host: SandboxHost) -> Iterator[int | None]:
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


def spawn(host: SandboxHost, uid: int | None, payload: Payload, limits: Limits, wall_s: float,
          stdin: bytes | None, stop: Callable[[dict[str, Any]], bool] | None = None) -> Run:
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
                return Run([{"ev": "sandbox_error", "msg": f"fork server: {exc!r}"}], b"", b"", None, None)
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
             stop: Callable[[dict[str, Any]], bool] | None = None) -> Run:
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
    return Run(events, bytes(bufs[out][:cap]), bytes(bufs[err][:cap]), limit, status, cpu_s=cpu)


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
