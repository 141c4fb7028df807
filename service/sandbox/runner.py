"""Child side of ``service.sandbox`` (fork server, launcher, monitor, test runner) and the shared wire format.

Stdlib only and self-contained: the parent passes this file's source to ``python -c``, so it must never
import ``service`` (or anything outside the stdlib); that is also why it is one long file, not several.
Nothing runs on import; the ``__main__`` block dispatches. ``zygote_argv``, ``parse_events`` and
``encode_value`` are shared with the parent (``service.sandbox.process``, ``service.sandbox.judge``).

``zygote FD`` (the sandbox interpreter, as the caller's user, started once per caller process with a minimal
environment): a fork server. Per run it forks the run's top process: own session, the run's fds (stdio;
result, payload and control pipes on 3-5), new mount + network + PID namespaces. As root the server makes it
PID 1 of a fresh PID namespace and lends it an idle empty network namespace (``_Nets``), so it is the
*monitor* itself; with a user namespace (not root) it is a *launcher* that unshares them all and forks the
monitor. The monitor mounts the run's private root (``_private_root``) and forks the *candidate*: rlimits,
drop to the sandbox uid with no groups (no capabilities in a user namespace), no_new_privs, parent-death
signal, the run's cwd and environment, the control pipe closed; then the payload runs in that same, already
initialised interpreter (no exec: every run is a fresh copy-on-write fork of a zygote that never runs
untrusted code). The monitor reaps, reports the candidate's wait status on the control pipe, kills and reaps
everything left in the namespace and reports the whole tree's CPU time (the launcher does, where there is
one). The runner (``run``) reads the payload from its fd (closed before the program runs), optionally installs
the socket guard, compiles and runs the program, runs each test (an ``expr`` test reports only its value; the
judge outside compares it), and reports JSON lines tagged with the payload's nonce on the result pipe; the
program's own stdout/stderr never carry results.
"""

from __future__ import annotations

import builtins
import ctypes
import fcntl
import gc
import json
import numbers  # imported here, in the fork server: a run's uid may not reach the stdlib
import os
import resource
import select
import signal
import sys
from contextlib import suppress
from typing import Any, NoReturn

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_NAME, _PR_SET_NO_NEW_PRIVS = 1, 4, 15, 38
_MSG_CAP = 300
# the launcher arranges the run's fds as: 0-2 stdio, then these (see ``_launch``)
RESULT_FD, PAYLOAD_FD, CONTROL_FD = 3, 4, 5
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MS_NOATIME, _MS_NODIRATIME, _MS_BIND, _MS_REC, _MS_PRIVATE, _MS_RELATIME = 1024, 2048, 4096, 16384, 1 << 18, 1 << 21
_MNT_DETACH = 2
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_DEVICES = ("null", "zero", "full", "random", "urandom")


def zygote_argv(exe: str, sock_fd: int) -> list[str]:
    """The command that starts this file as the fork server on the inherited socket ``sock_fd``."""
    with open(__file__, encoding="utf-8") as fh:
        return [exe, "-s", "-P", "-c", fh.read(), "zygote", str(sock_fd)]


def parse_lines(data: bytes) -> list[dict[str, Any]]:
    """The well-formed JSON event lines of ``data`` (anything else is skipped)."""
    events = []
    for line in data.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and isinstance(ev.get("ev"), str):
            events.append(ev)
    return events


def parse_events(results: bytes, control: bytes, nonce: str) -> tuple[list[dict[str, Any]], int | None, float]:
    """Runner events that carry ``nonce``; the control pipe's launch errors, the candidate's wait status (from
    the monitor) and the run's CPU seconds (from the monitor or the launcher).

    The control pipe is written only by the launcher and the monitor, which never run the program (the
    candidate closes its end before the program starts), so a program cannot forge its exit or usage.
    """
    events = [ev for ev in parse_lines(results) if ev.get("nonce") == nonce and ev["ev"] != "sandbox_error"]
    status, cpu = None, 0.0
    for ev in parse_lines(control):
        if ev["ev"] == "exit" and isinstance(ev.get("status"), int):
            status = ev["status"]
        elif ev["ev"] == "usage" and isinstance(ev.get("cpu"), float):
            cpu = ev["cpu"]
        elif ev["ev"] == "sandbox_error":
            events.append(ev)
    return events, status, cpu


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


def _drop_capabilities(libc: ctypes.CDLL) -> None:
    """No capabilities at all (in a user namespace the candidate would otherwise hold them all there)."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def _become_candidate(cfg: dict[str, Any], libc: ctypes.CDLL) -> NoReturn:
    """Rlimits, the sandbox uid, no capabilities, the run's cwd and environment; then it runs the payload."""
    try:
        libc.prctl(_PR_SET_NAME, b"sbx-run")
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
        if cfg["unshare"] & CLONE_NEWUSER:
            _drop_capabilities(libc)
        libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it
        os.chdir(cfg["cwd"])
        os.environ.clear()
        os.environ.update(cfg["env"])
    except BaseException as exc:  # noqa: BLE001 - report anything
        _fail(CONTROL_FD, "exec", exc)
    os.close(CONTROL_FD)  # the program must not reach the trusted channel
    run(RESULT_FD)


def _mount(libc: ctypes.CDLL, source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    if libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(), ctypes.c_ulong(flags),
                  data and data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or source} on {target}: {os.strerror(err)}")


def _locked_flags(path: str) -> int:
    """The flags a read-only bind of ``path`` must keep (a user namespace may not clear the host's)."""
    have = os.statvfs(path).f_flag
    flags = have & (_MS_NOSUID | _MS_NODEV | _MS_NOEXEC | _MS_NOATIME | _MS_NODIRATIME)
    return flags | (_MS_RELATIME if have & 4096 else 0)  # ST_RELATIME


def _tmpfs(target: str, mb: float, inodes: int, mode: str, extra: int = 0) -> tuple[Any, ...]:
    options = f"size={max(4096, int(mb * (1 << 20)))},nr_inodes={inodes},mode={mode}"
    return ("mount", "tmpfs", target, "tmpfs", _MS_NOSUID | _MS_NODEV | extra, options)


def root_plan(binds: list[str], root: str) -> list[tuple[Any, ...]]:
    """The steps (mkdir, touch, symlink, mount) that build the read-only view under ``root``: ``binds`` (system
    dirs, the interpreter, its packages) where they exist, a minimal ``/dev`` and the mount points of a run's
    own ``/tmp``, ``/dev/shm`` and ``/proc`` (``run_mounts``). Worked out by the fork server, which sees the
    host (what exists, symlinks, the flags a bind must keep), so that building it is a replay (``_replay``)."""
    plan: list[tuple[Any, ...]] = [("mount", None, "/", None, _MS_REC | _MS_PRIVATE, None),  # nothing propagates
                                   _tmpfs(root, 1, 4096, "0755")]
    made = {root}

    def parents(target: str) -> None:
        missing = []
        parent = os.path.dirname(target)
        while parent not in made:
            missing.append(parent)
            parent = os.path.dirname(parent)
        for path in reversed(missing):
            plan.append(("mkdir", path))
            made.add(path)

    def bind(path: str, writable: bool = False) -> None:  # the host's path, read-only, at the same place
        target = root + path
        parents(target)
        if os.path.islink(path):  # a symlink stays a symlink
            plan.append(("symlink", os.readlink(path), target))
            return
        plan.append(("mkdir", target) if os.path.isdir(path) else ("touch", target))
        made.add(target)
        read_only = 0 if writable else _MS_RDONLY
        plan.append(("mount", path, target, None, _MS_BIND | _MS_REC, None))
        plan.append(("mount", None, target, None, _MS_BIND | _MS_REMOUNT | read_only | _MS_NOSUID |
                     _locked_flags(path), None))

    for path in binds:
        if os.path.lexists(path):
            bind(path)
    plan += [("mkdir", root + "/tmp"), ("mkdir", root + "/dev"), _tmpfs(root + "/dev", 0.0625, 64, "0755", _MS_NOEXEC)]
    made |= {root + "/tmp", root + "/dev"}
    for name in _DEVICES:
        bind("/dev/" + name, writable=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        plan.append(("symlink", target, f"{root}/dev/{name}"))
    plan += [("mkdir", root + "/dev/shm"), ("mkdir", root + "/proc"), ("mkdir", root + "/.old")]
    return plan


def run_mounts(fs: dict[str, Any], root: str) -> list[tuple[Any, ...]]:
    """What each run mounts for itself on the view of ``root_plan``: its ``/tmp``, ``/dev/shm`` and ``/proc``."""
    return [("mount", None, "/", None, _MS_REC | _MS_PRIVATE, None),
            _tmpfs(root + "/tmp", fs["tmp_mb"], fs["tmp_inodes"], "1777"),
            _tmpfs(root + "/dev/shm", fs["shm_mb"], fs["shm_inodes"], "1777", _MS_NOEXEC),
            ("mount", "proc", root + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None)]


def _replay(plan: list[tuple[Any, ...]], libc: ctypes.CDLL) -> None:
    for op, *args in plan:
        if op == "mount":
            _mount(libc, *args)
        elif op == "mkdir":
            os.mkdir(args[0], 0o755)
        elif op == "touch":
            os.close(os.open(args[0], os.O_CREAT | os.O_WRONLY, 0o644))
        else:
            os.symlink(*args)


def _enter_view(plan: list[tuple[Any, ...]], root: str, libc: ctypes.CDLL, mounts: list[tuple[Any, ...]]) -> None:
    """Build ``plan`` (``root_plan``) and ``mounts`` under ``root`` (``/proc`` while the host's is still visible,
    as a user namespace requires), make ``root`` the root of this mount namespace and detach the host's tree;
    read-only from then on."""
    _replay([*plan, *mounts], libc)
    if libc.syscall(_SYS_PIVOT_ROOT[os.uname().machine], root.encode(), (root + "/.old").encode()) != 0:
        raise OSError(ctypes.get_errno(), "pivot_root")
    os.chdir("/")
    if libc.umount2(b"/.old", _MNT_DETACH) != 0:
        raise OSError(ctypes.get_errno(), "umount /.old")
    os.rmdir("/.old")
    _mount(libc, None, "/", None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


def _private_root(cfg: dict[str, Any], libc: ctypes.CDLL) -> None:
    """In the run's own mount namespace: its private ``/tmp``, ``/dev/shm`` and ``/proc`` on the read-only view,
    which is either the fork server's (copied with the namespace; ``cfg["root"]`` is None) or built here.
    Everything is gone when the namespace's last process is."""
    if cfg["root"] is None:
        _replay(cfg["mounts"], libc)
    else:
        _enter_view(cfg["plan"], cfg["root"], libc, cfg["mounts"])


def _own_view(request: dict[str, Any], binds: list[str], view: list[str], libc: ctypes.CDLL) -> None:
    """Root without a user namespace: the fork server builds the read-only view once, in a mount namespace of
    its own, and each run's namespace copies it (three mounts per run instead of the whole view)."""
    fs, root = request["filesystem"], request["root"]
    if not view:
        view.append(json.dumps([binds, root]))
        try:
            if libc.unshare(CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "unshare")
            _enter_view(root_plan(binds, root), root, libc, [])
            _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)  # a run's mounts stay in its own namespace
        except OSError as exc:
            view.append(f"the fork server's view: {exc}")
    if view[1:] or view[0] != json.dumps([binds, root]):
        request["error"] = view[1] if view[1:] else "the fork server's view was built for another filesystem"
    request["root"], request["mounts"] = None, run_mounts(fs, "")


def _monitor(cfg: dict[str, Any], libc: ctypes.CDLL, *, launched: bool) -> NoReturn:
    """PID 1 of the run's namespace: its private root, the candidate, the candidate's wait status on the control
    pipe. ``launched``: a launcher above reports the tree's CPU time; otherwise (the zygote made this process
    PID 1 itself) the monitor ends and reaps the whole namespace and reports it."""
    libc.prctl(_PR_SET_NAME, b"sbx-monitor")
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with its parent (and so takes the namespace down)
    libc.prctl(_PR_SET_DUMPABLE, 0)  # its /proc entries (fds: the control pipe) stay closed to the candidate
    try:
        if cfg.get("filesystem"):
            _private_root(cfg, libc)
        pid = os.fork()
    except BaseException as exc:  # noqa: BLE001 - report anything
        _fail(CONTROL_FD, "namespaces" if cfg.get("filesystem") else "fork", exc)
    if pid == 0:
        _become_candidate(cfg, libc)
    _quiet_stdio()
    os.close(RESULT_FD)
    os.close(PAYLOAD_FD)
    while True:  # as PID 1 we also reap orphans; stop when the candidate itself is done
        done, status = os.wait()
        if done == pid:
            break
    _write_event(CONTROL_FD, {"ev": "exit", "status": status})
    if not launched:
        with suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)  # from PID 1: everything else in the namespace
        _report_usage()
    os._exit(0)


def _report_usage() -> None:
    """Reap every child left, then report the CPU time of all this process reaped (the whole tree)."""
    with suppress(ChildProcessError):
        while True:
            os.wait()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    _write_event(CONTROL_FD, {"ev": "usage", "cpu": float(usage.ru_utime + usage.ru_stime)})


def _arrange_fds(fds: list[int]) -> None:
    """stdio on 0-2, the result, payload and control fds on 3-5, nothing else open."""
    stdin, stdout, stderr, *rest = fds
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 1 << 12) for fd in rest]
    for fd, target in zip(high, (RESULT_FD, PAYLOAD_FD, CONTROL_FD), strict=True):
        os.dup2(fd, target)
    os.closerange(CONTROL_FD + 1, 1 << 16)  # the zygote's socket, the originals and anything else it held


def _launch(cfg: dict[str, Any], fds: list[int], zygote_fd: int, libc: ctypes.CDLL, *, pid_one: bool,
            net: int | None) -> NoReturn:
    """In a fresh fork of the zygote: its own session and stdio, namespaces, then monitor -> candidate; it
    reports the whole tree's CPU time on the control pipe once the monitor (and with it the tree) is gone.
    ``pid_one``: the zygote forked this process into a new PID namespace (root callers), so it is the monitor
    itself, one process less per run; ``net``: the zygote's idle network namespace to join (``_Nets``)."""
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # the zygote died (its caller is gone): take all down
    orphan = bool(select.select([zygote_fd], [], [], 0)[0])  # it died before that line (its pidfd is readable)
    net_errno = 0 if net is None or libc.setns(net, CLONE_NEWNET) == 0 else ctypes.get_errno()
    try:
        os.setsid()
        _arrange_fds(fds)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        libc.prctl(_PR_SET_NAME, b"sbx-monitor" if pid_one else b"sbx-launcher")
        if orphan:
            raise ProcessLookupError("the zygote is gone")
        if cfg.get("error"):
            raise OSError(cfg["error"])
        if net_errno:
            raise OSError(net_errno, f"setns(CLONE_NEWNET): {os.strerror(net_errno)}")
        flags = cfg["unshare"] & ~(CLONE_NEWPID if pid_one else 0)  # the zygote made this one
        flags &= ~(CLONE_NEWNET if net is not None else 0)  # joined above
        if flags and libc.unshare(flags) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        if flags & CLONE_NEWUSER:
            _map_own_ids()  # before the next line, which hands our /proc/self files to root
        libc.prctl(_PR_SET_DUMPABLE, 0)
        pid = 0 if pid_one else os.fork()
    except BaseException as exc:  # noqa: BLE001 - report anything
        _fail(CONTROL_FD, "namespaces", exc)
    if pid == 0:
        _monitor(cfg, libc, launched=not pid_one)
    _quiet_stdio()
    os.close(RESULT_FD)
    os.close(PAYLOAD_FD)
    _report_usage()  # the monitor and all it reaped
    os._exit(0)


def _pid_one(request: dict[str, Any], libc: ctypes.CDLL) -> bool:
    """Make the zygote's next child PID 1 of a new PID namespace (root, no user namespace; see ``_launch``)."""
    flags = request["unshare"]
    if not flags & CLONE_NEWPID or flags & CLONE_NEWUSER or request.get("error"):
        return False
    if libc.unshare(CLONE_NEWPID) != 0:
        request["error"] = f"unshare(CLONE_NEWPID): {os.strerror(ctypes.get_errno())}"
        return False
    return True


class _Nets:
    """Empty network namespaces (loopback down), each used by one run at a time and reused by the next: making
    and tearing one down per run took ~7 % of the CPU samples of a trivial-run benchmark
    (``benchmarks/results/sandbox_perf.txt``). A run cannot change one for the
    next (its program has no capabilities; only its own sockets live there, and they die with its processes:
    a namespace is handed out again only after the caller had the run's monitor reaped)."""

    _IDLE_CAP = 16

    def __init__(self, libc: ctypes.CDLL) -> None:
        self._libc = libc
        self._idle: list[int] = []
        self._busy: dict[int, int] = {}  # a run's top pid -> its namespace
        # opened before the server's view hides the host's /proc: ns/net through it follows our namespace
        self._ns = os.open("/proc/self/ns", os.O_RDONLY | os.O_DIRECTORY)
        self._host = os.open("net", os.O_RDONLY, dir_fd=self._ns)

    def take(self) -> int:
        if self._idle:
            return self._idle.pop()
        if self._libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
        try:
            return os.open("net", os.O_RDONLY, dir_fd=self._ns)
        finally:
            if self._libc.setns(self._host, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns(CLONE_NEWNET)")  # the caller starts another server

    def lend(self, net: int, pid: int) -> None:
        self._busy[pid] = net

    def give_back(self, pid: int) -> None:
        """The run of monitor ``pid`` was reaped: nothing of it is left in its namespace."""
        net = self._busy.pop(pid, None)
        if net is not None and len(self._idle) < self._IDLE_CAP:
            self._idle.append(net)
        elif net is not None:
            os.close(net)


def outermost(paths: list[str]) -> list[str]:
    """``paths`` without duplicates and without those inside another one (sorted)."""
    kept: list[str] = []
    for path in sorted({os.path.normpath(p) for p in paths if p.startswith("/")}):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def _interpreter_paths() -> list[str]:
    """This interpreter's stdlib and package dirs, and its ``PYTHONPATH`` (what a forked candidate imports from)."""
    import sysconfig

    paths = sysconfig.get_paths()
    found = [paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    found += os.environ.get("PYTHONPATH", "").split(os.pathsep)
    return [p for p in found if p and os.path.isdir(p)]


def zygote(sock_fd: int) -> NoReturn:
    """The fork server: one single-threaded, pristine interpreter that forks a run's top process per run.

    Requests on the SOCK_SEQPACKET socket: ``{"op": "run", **cfg}`` with the run's stdin, stdout, stderr,
    result, payload and control fds attached, answered with ``{"pid": pid}`` and a pidfd of the run's top
    process (monitor or launcher, ``_launch``); and ``{"op": "reap", "pid": pid}`` (no answer) once the caller
    has seen it exit, so its pid (its process group id) is never recycled while the caller may still signal
    it, and its network namespace is free again. EOF: the caller is gone, so we exit, and every run follows
    (parent-death signal). Needs Linux >= 5.3 (pidfd).
    """
    import socket

    sock, me, own = socket.socket(fileno=sock_fd), os.pidfd_open(os.getpid()), _interpreter_paths()
    plans: dict[str, list[tuple[Any, ...]]] = {}  # per-run views (user namespaces), by binds and root
    view: list[str] = []  # the server's own view (root): what it was built for, then an error if it failed
    libc = ctypes.CDLL(None, use_errno=True)
    own_pid_ns, nets = os.open("/proc/self/ns/pid", os.O_RDONLY), _Nets(libc)
    gc.collect()
    gc.freeze()  # the children's collections never walk (and so never copy) the server's own objects
    while True:
        msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 6)
        if not msg:
            os._exit(0)
        request = json.loads(msg)
        if request["op"] == "reap":
            try:
                os.waitpid(request["pid"], 0)
                nets.give_back(request["pid"])
            except ChildProcessError:  # not ours: the caller sent it to the zygote that replaced ours
                pass
            continue
        if request.get("filesystem"):
            binds = outermost([*request["filesystem"]["binds"], *own])
            if os.geteuid() == 0 and not request["unshare"] & CLONE_NEWUSER:
                _own_view(request, binds, view, libc)
            else:
                key = json.dumps([binds, request["root"]])
                if key not in plans:
                    if len(plans) >= 8:  # callers send one filesystem; never let the map grow
                        plans.clear()
                    plans[key] = root_plan(binds, request["root"])
                request["plan"], request["mounts"] = plans[key], run_mounts(request["filesystem"], request["root"])
        pid_one, pid, net = _pid_one(request, libc), -1, None
        if pid_one and request["unshare"] & CLONE_NEWNET:
            try:
                net = nets.take()
            except OSError as exc:
                request["error"] = str(exc)
        try:
            pid = os.fork()
        finally:  # in the server only: later children are back in its own namespace
            if pid_one and pid != 0 and libc.setns(own_pid_ns, CLONE_NEWPID) != 0:
                raise OSError(ctypes.get_errno(), "setns(CLONE_NEWPID)")  # the caller starts another server
        if pid == 0:
            _launch(request, fds, me, libc, pid_one=pid_one, net=net)
        if net is not None:
            nets.lend(net, pid)
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


def _run_test(test: dict[str, Any], ns: dict[str, Any], budget: float | None) -> dict[str, Any]:
    """One test: a ``code`` test reports ok/kind; an ``expr`` test reports only its value (judged outside)."""
    if budget:
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        if "expr" in test:
            value = eval(compile(test["expr"], "test.py", "eval", dont_inherit=True), ns)
            if budget:
                signal.setitimer(signal.ITIMER_REAL, 0)
            return {"v": bool(value) if test.get("bool") else encode_value(value)}
        exec(compile(test["code"], "test.py", "exec", dont_inherit=True), ns)
        return {"ok": True, "kind": "passed", "msg": ""}
    except BaseException as exc:  # noqa: BLE001 - report anything
        return {"ok": False, "kind": _kind(exc, "wrong_answer"),
                "msg": _describe(exc)}
    finally:
        if budget:
            signal.setitimer(signal.ITIMER_REAL, 0)


def encode_value(value: Any, depth: int = 0) -> Any:
    """A JSON form of a plain value that keeps its type (``service.sandbox.judge.decode_value`` reverses it).

    Subclasses of the builtin types become the builtin type; other numbers (numbers.Integral/Real) become
    int/float; anything else is ``{"opaque": type name}``, which equals no expected value.
    """
    if depth > 100:
        return {"opaque": "nesting deeper than 100"}
    if value is None or isinstance(value, bool):
        return None if value is None else bool(value)
    if isinstance(value, numbers.Integral):
        number = int(value)
        return number if abs(number) < 1 << 53 else {"int": hex(number)}
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, complex):
        return {"complex": [value.real, value.imag]}
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, dict):
        return {"dict": [[encode_value(k, depth + 1), encode_value(v, depth + 1)] for k, v in dict.items(value)]}
    for kind in (list, tuple, set, frozenset):
        if isinstance(value, kind):
            items = [encode_value(v, depth + 1) for v in kind.__iter__(value)]  # type: ignore[arg-type]
            return items if kind is list else {kind.__name__: items}
    return {"opaque": type(value).__name__[:_MSG_CAP]}


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
    with open(PAYLOAD_FD, "rb") as fh:  # the fd closes with it: the program cannot reread its tests
        payload = json.loads(fh.read())
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
    for i, test in enumerate(payload["tests"]):
        outcome = _run_test(test, ns, payload["assert_s"])
        emit("test", i=i, **outcome)
        if payload["stop"] and outcome.get("ok") is False:
            break
    emit("done")
    _flush_and_exit()


if __name__ == "__main__" and sys.argv[1:2] == ["zygote"]:
    zygote(int(sys.argv[2]))
