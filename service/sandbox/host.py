"""What this machine gives the sandbox, probed once: the interpreter candidates run on and the strongest
isolation that runs a probe program (``full`` > ``namespaces`` > ``none``). Stdlib only."""

from __future__ import annotations

import logging
import os
import shutil
import site
import sys
import threading

from service.sandbox import runner as sandbox_runner
from service.sandbox.process import Payload, SandboxHost, spawn, terminal, uid_lease
from service.sandbox.records import Isolation, Limits, NetworkIsolation

logger = logging.getLogger(__name__)

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


def _interpreters(root: bool) -> list[str]:
    """Candidate interpreters; as root the first one the sandbox uid can execute wins (pyenv under /root can't)."""
    if not root:
        return [sys.executable]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = [sys.executable, getattr(sys, "_base_executable", ""), os.path.realpath(sys.executable),
             shutil.which(version) or "", f"/usr/local/bin/{version}", f"/usr/bin/{version}"]
    return list(dict.fromkeys(p for p in found if p and os.path.isfile(p)))


# the candidate must be able to import from the interpreter's stdlib and site dirs as the sandbox uid
_PROBE = Payload("functional", "import bisect, heapq, statistics", "", (), None)


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
            with uid_lease(host) as uid:
                run = spawn(host, uid, _PROBE, Limits(), 10.0, None)
            if run.event("done") is not None:
                log = logger.info if host.isolation == "full" else logger.error
                log("sandbox: %s (+ %s), isolation %s (network %s), own uid per run: %s%s", exe, site_dirs,
                    host.isolation, network, root, "" if host.isolation == "full" else
                    " -- DEGRADED: runs share the host's /tmp, /dev/shm, /proc and filesystem view")
                return host
            logger.info("sandbox probe failed (%s, %s): %s", exe, network, terminal(run)[1])
    logger.error("sandbox: no interpreter/isolation combination works; every run will be sandbox_error")
    return None
