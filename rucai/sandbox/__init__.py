"""Run model-written Python in a sandbox: `run(code)`, `run_many(codes)`, `isolation()`.

Design. A pool of long-lived worker processes (`_worker.py`, standard library only) each forks a
fresh grandchild per snippet, so one snippet cannot poison the next and nothing pays for a Python
start-up per snippet. Each grandchild gets its own working directory (deleted afterwards), rlimits
(CPU time, address space, file size, open files, no core files), a new session, and a seccomp
filter that refuses process creation, exec, sockets, ptrace, mount/namespace calls, kernel knobs
and signals or rlimits aimed at other processes; threads stay allowed (clone with CLONE_THREAD).
Run as root, the worker first enters fresh network, IPC, PID and mount namespaces (it carries on
as pid 1 of its PID namespace, under a fresh /proc mounted hidepid=2, so a snippet sees no process
but its own), makes `/` recursively read-only and puts a private tmpfs over `/tmp`; the grandchild
then drops to uid 65534, which sheds every capability. An audit hook or RLIMIT_NPROC would not be
a boundary (ctypes bypasses the first, root ignores the second), so neither is used.

Why seccomp through ctypes and not bubblewrap: bwrap sets up its namespaces and then execs a new
program, so every snippet would pay a full interpreter start (the cost the pool exists to avoid),
and CI would need another system package. libseccomp and unshare/mount via ctypes work on an
already-running interpreter: the filter goes on after fork, after the wrapper's imports, right
before the snippet. Refused calls are answered by the worker through seccomp user notification
(EPERM to the snippet), so an attempt counts as `blocked` even when the code swallows the error
(`os.system` just returns -1); without notify support, `blocked` comes from an uncaught
PermissionError/EROFS. Not root (or no namespaces allowed): no network or mount namespace,
network is refused by seccomp alone and files outside the temp dir are protected only by file
permissions. Which layers are active on this machine is never guessed: `isolation()` reports them.

Statuses, first match wins: `blocked` (a refused call was attempted), `timeout` (wall-clock or CPU
limit; the process is killed), `memory` (MemoryError, e.g. the address-space limit), `error`
(any other exception or non-zero exit; the traceback is in stderr), `ok`. `run` and `run_many`
never raise because of what the code did; they raise SandboxUnavailable when this machine cannot
build the sandbox (no libseccomp, seccomp refused), rather than run code unconfined.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field

STATUSES = ("ok", "error", "timeout", "memory", "blocked")
_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_worker.py")
_START_S = 120.0  # a worker's start-up, generous for a loaded machine
_GRACE_S = 30.0   # beyond the snippet's own limit before a silent worker is given up on


class SandboxUnavailable(RuntimeError):
    """This machine cannot build the sandbox; code is never run without it."""


@dataclass(frozen=True)
class SandboxResult:
    status: str                    # ok | error | timeout | memory | blocked
    stdout: str                    # first 64 KiB of each stream, then a truncation note
    stderr: str
    seconds: float                 # wall clock, fork to exit
    refused: tuple[str, ...] = field(default=())  # system calls the filter refused, first 32 names


class _Worker:
    """The parent's handle on one worker process: length-prefixed JSON over its stdin/stdout."""

    def __init__(self, notify: bool):
        import subprocess

        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp",
               "RUCAI_SANDBOX_NOTIFY": "1" if notify else "0"}  # no parent secrets (API keys) inside
        self.proc = subprocess.Popen([sys.executable, "-I", _WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, bufsize=0, start_new_session=True)
        hello = self._recv(_START_S)
        if hello is None or "isolation" not in hello:
            why = (hello or {}).get("error", "it exited before saying hello")
            self.close()
            raise SandboxUnavailable(f"sandbox worker could not start: {why}")
        self.isolation: dict = hello["isolation"]

    def call(self, req: dict) -> dict | None:
        """One request and its reply; None when the worker died or went silent (it is then killed)."""
        import json
        import struct

        body = json.dumps(req).encode()
        data = memoryview(struct.pack(">I", len(body)) + body)
        try:
            while data:
                data = data[self.proc.stdin.write(data):]
        except OSError:
            self.close()
            return None
        reply = self._recv(req["timeout_s"] + _GRACE_S)
        if reply is None:
            self.close()
        return reply

    def _recv(self, wait_s: float) -> dict | None:
        import json
        import select
        import struct
        import time

        fd, buf, need, deadline = self.proc.stdout.fileno(), b"", 4, time.monotonic() + wait_s
        while True:
            while len(buf) < need:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    return None
                chunk = os.read(fd, need - len(buf))
                if not chunk:
                    return None
                buf += chunk
            if need == 4:
                need = 4 + struct.unpack(">I", buf)[0]
                if need == 4:
                    return None
            else:
                return json.loads(buf[4:])

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        import subprocess

        try:
            self.proc.stdin.close()  # EOF: the worker finishes and exits
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


class SandboxPool:
    """Pre-started workers; `run` checks one out per call, so calls from several threads run in parallel.

    `notify=False` refuses calls with a plain EPERM and detects `blocked` from the exception only
    (what a kernel or libseccomp without user notification gets).
    """

    def __init__(self, notify: bool = True):
        self.notify = notify
        self._free: list[_Worker] = []
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._isolation: dict | None = None

    def _checkout(self) -> _Worker:
        with self._lock:
            while self._free:
                w = self._free.pop()
                if w.alive:
                    return w
                self._all.remove(w)
        w = _Worker(self.notify)
        with self._lock:
            self._all.append(w)
            self._isolation = self._isolation or w.isolation
        return w

    def _checkin(self, w: _Worker) -> None:
        with self._lock:
            if w.alive:
                self._free.append(w)
            elif w in self._all:
                self._all.remove(w)

    def isolation(self) -> dict:
        """The layers a worker on this machine actually got (starts one if none is running)."""
        if self._isolation is None:
            self._checkin(self._checkout())
        return dict(self._isolation)

    def run(self, code: str, timeout_s: float = 5, memory_mb: int = 512) -> SandboxResult:
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, got {type(code).__name__}")
        if not timeout_s > 0 or memory_mb < 16:
            raise ValueError(f"need timeout_s > 0 and memory_mb >= 16, got {timeout_s} and {memory_mb}")
        w = self._checkout()
        try:
            reply = w.call({"code": code, "timeout_s": float(timeout_s), "memory_mb": int(memory_mb)})
        finally:
            self._checkin(w)
        if reply is None:
            return SandboxResult("error", "", "[sandbox] the worker died or went silent; it was replaced", 0.0)
        if "setup_error" in reply:
            raise SandboxUnavailable(f"sandbox setup failed: {reply['setup_error']}")
        return SandboxResult(reply["status"], reply["stdout"], reply["stderr"], reply["seconds"],
                             tuple(reply["refused"]))

    def run_many(self, codes: list[str], timeout_s: float = 5, memory_mb: int = 512,
                 workers: int | None = None) -> list[SandboxResult]:
        """All `codes`, `workers` at a time (default: one per CPU), results in input order."""
        codes = list(codes)
        n = min(len(codes), workers or os.cpu_count() or 1)
        if n <= 1:
            return [self.run(c, timeout_s, memory_mb) for c in codes]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(n, thread_name_prefix="rucai-sandbox") as ex:
            return list(ex.map(lambda c: self.run(c, timeout_s, memory_mb), codes))

    def close(self) -> None:
        with self._lock:
            workers, self._all, self._free = self._all, [], []
        for w in workers:
            w.close()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_shared: SandboxPool | None = None
_shared_lock = threading.Lock()


def _pool() -> SandboxPool:
    global _shared
    with _shared_lock:
        if _shared is None:
            import atexit

            _shared = SandboxPool()
            atexit.register(_shared.close)
        return _shared


def _forget_in_child() -> None:
    """A forked parent must not share the workers' pipes with us: it starts its own pool."""
    global _shared, _shared_lock
    _shared, _shared_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


def run(code: str, timeout_s: float = 5, memory_mb: int = 512) -> SandboxResult:
    """Run one snippet in a fresh sandboxed process (from the shared pool)."""
    return _pool().run(code, timeout_s, memory_mb)


def run_many(codes: list[str], timeout_s: float = 5, memory_mb: int = 512,
             workers: int | None = None) -> list[SandboxResult]:
    """Run every snippet in its own fresh sandboxed process; results in input order."""
    return _pool().run_many(codes, timeout_s, memory_mb, workers)


def isolation() -> dict:
    """Which isolation layers this machine gives the sandbox, e.g. {"net_namespace": True, ...}."""
    return _pool().isolation()
