"""One pre-started sandbox worker: forks a fresh, filtered grandchild per snippet.

Run as a script (`python -I _worker.py`), standard library only, so the snippet's `sys.path` holds
nothing of ours. Protocol on the inherited stdin/stdout pipes: each message is a 4-byte big-endian
length and a JSON object. The worker first sends a hello (`{"isolation": {...}}` or `{"error": ...}`),
then answers every request `{"code", "timeout_s", "memory_mb"}` with one result and exits on EOF.

Layers, applied once per worker (root only; each one that fails is recorded, not skipped silently):
  net/ipc namespace    an empty network namespace: no interface but a downed loopback
  pid namespace        the worker forks once after unshare(CLONE_NEWPID) and carries on as pid 1
                       of a fresh namespace (the first process only waits for it); a fresh /proc
                       there, mounted hidepid=2: a snippet sees its own process and no other
  mount namespace      `/` recursively read-only, a private size-capped tmpfs over `/tmp`; a
                       directory uid 65534 cannot enter on the way to the interpreter (a 0700
                       /root holding pyenv) is replaced by a tmpfs showing only that way
and per snippet, in the forked grandchild, after everything the wrapper needs is imported:
  session + PDEATHSIG  a new session (no controlling tty); killed with the worker
  rlimits              CPU time, address space, file size, open files, no core files
  uid 65534 (root)     setresuid drops every capability and makes host files read-only by DAC too
  seccomp              process creation, exec, sockets, ptrace, mounts/namespaces, kernel knobs and
                       signals to other processes are refused with EPERM; the worker is told of
                       each refusal through a user-notification fd, so a swallowed error still
                       counts as `blocked`
"""

from __future__ import annotations

import atexit
import builtins
import ctypes
import errno
import gc
import json
import linecache
import math
import os
import resource
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
import traceback
import types

EXIT_OK, EXIT_ERROR, EXIT_BLOCKED, EXIT_MEMORY = 0, 1, 90, 91
NOBODY = 65534
STREAM_CAP = 64 * 1024  # bytes kept per stream; the rest is read and dropped
TMPFS_SIZE_MB = 64      # the worker's private /tmp, shared by its (sequential) snippets
FSIZE_MB = 16
NOFILE = 64

CLONE_THREAD = 0x00010000
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x08000000, 0x20000000, 0x40000000
CLONE_NEW_ANY = (CLONE_NEWNS, 0x02000000, 0x04000000, CLONE_NEWIPC, 0x10000000, 0x20000000, CLONE_NEWNET)
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x1000, 0x4000, 0x40000
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 0x1, 0x2
NR_MOUNT_SETATTR = 442  # the same on every architecture (syscalls >= 424 are unified)
PR_SET_PDEATHSIG = 1

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_NOTIFY = 0x7FC00000
SCMP_CMP_NE, SCMP_CMP_MASKED_EQ = 1, 7


def scmp_act_errno(e: int) -> int:
    """libseccomp's scmp_act_errno(e): the call fails with errno `e`."""
    return 0x00050000 | (e & 0xFFFF)


# refused outright (EPERM)
REFUSED = (
    "fork", "vfork", "execve", "execveat",
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open", "pidfd_getfd", "pidfd_send_signal",
    "tkill", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "mount_setattr",
    "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "open_by_handle_at", "name_to_handle_at", "keyctl", "add_key", "request_key",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog",
)
# refused when the first argument is not this process (signals, limits of other processes)
NOT_SELF = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")


class ScmpArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class SeccompData(ctypes.Structure):
    _fields_ = [("nr", ctypes.c_int), ("arch", ctypes.c_uint32), ("ip", ctypes.c_uint64),
                ("args", ctypes.c_uint64 * 6)]


class SeccompNotif(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("pid", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("data", SeccompData)]


class SeccompNotifResp(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("val", ctypes.c_int64), ("error", ctypes.c_int32),
                ("flags", ctypes.c_uint32)]


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class Seccomp:
    """libseccomp through ctypes: the filter is compiled in each grandchild (its pid is in the rules)."""

    def __init__(self, notify: bool):
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as e:
            raise OSError(f"{e} (Debian/Ubuntu: apt-get install libseccomp2)") from None
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(ScmpArgCmp)]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_notify_fd.argtypes = [ctypes.c_void_p]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_api_get.restype = ctypes.c_uint
        self.lib = lib
        # API level 5: SCMP_ACT_NOTIFY and the notification calls (kernel >= 5.0, libseccomp >= 2.5)
        self.notify = notify and lib.seccomp_api_get() >= 5
        if self.notify:
            lib.seccomp_notify_alloc.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            lib.seccomp_notify_receive.argtypes = [ctypes.c_int, ctypes.c_void_p]
            lib.seccomp_notify_respond.argtypes = [ctypes.c_int, ctypes.c_void_p]
        self.names: dict[int, str] = {}
        self.unknown: list[str] = []
        for name in (*REFUSED, *NOT_SELF, "clone", "clone3", "prlimit64"):
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr == -1:  # libseccomp older than the syscall: it stays allowed, and isolation() says so
                self.unknown.append(name)
            else:
                self.names[nr] = name
        self.nr = {v: k for k, v in self.names.items()}
        if self.notify:
            req, resp = ctypes.c_void_p(), ctypes.c_void_p()
            if lib.seccomp_notify_alloc(ctypes.byref(req), ctypes.byref(resp)) != 0:
                raise OSError("seccomp_notify_alloc failed")
            self.req = ctypes.cast(req, ctypes.POINTER(SeccompNotif))
            self.resp = ctypes.cast(resp, ctypes.POINTER(SeccompNotifResp))

    def load(self) -> int:
        """Install the filter on this process; return the notification fd (-1 without notify)."""
        lib, act = self.lib, (SCMP_ACT_NOTIFY if self.notify else scmp_act_errno(errno.EPERM))
        ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
        if not ctx:
            raise OSError("seccomp_init failed")

        def rule(action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
            if name not in self.nr:
                return
            arr = (ScmpArgCmp * max(1, len(cmps)))(*[ScmpArgCmp(*c) for c in cmps])
            rc = lib.seccomp_rule_add_array(ctx, action, self.nr[name], len(cmps), arr)
            if rc != 0:
                raise OSError(-rc, f"seccomp_rule_add({name}): {os.strerror(-rc)}")

        me = os.getpid()
        try:
            for name in REFUSED:
                rule(act, name)
            for name in NOT_SELF:
                rule(act, name, (0, SCMP_CMP_NE, me, 0))
            rule(act, "prlimit64", (0, SCMP_CMP_NE, 0, 0))  # glibc's setrlimit is prlimit64(0, ...)
            # a thread is allowed, any other clone (fork, vfork, posix_spawn) is refused, and so is
            # a thread asking for a new namespace (rules for one call are alternatives)
            rule(act, "clone", (0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0))
            for flag in CLONE_NEW_ANY:
                rule(act, "clone", (0, SCMP_CMP_MASKED_EQ, flag, flag))
            # clone3 hides its flags behind a pointer: ENOSYS makes glibc fall back to clone (above)
            rule(scmp_act_errno(errno.ENOSYS), "clone3")
            rc = lib.seccomp_load(ctx)  # sets no_new_privs first (libseccomp's default)
            if rc != 0:
                raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")
            return lib.seccomp_notify_fd(ctx) if self.notify else -1
        finally:
            lib.seccomp_release(ctx)

    def answer(self, fd: int) -> str | None:
        """Receive one notification, refuse the call with EPERM, return its name."""
        req, resp = self.req, self.resp
        ctypes.memset(req, 0, ctypes.sizeof(SeccompNotif))
        if self.lib.seccomp_notify_receive(fd, req) != 0:
            return None  # the caller died meanwhile
        resp.contents.id = req.contents.id
        resp.contents.val = 0
        resp.contents.error = -errno.EPERM
        resp.contents.flags = 0
        self.lib.seccomp_notify_respond(fd, resp)  # ENOENT when the caller died meanwhile: fine
        return self.names.get(req.contents.data.nr, f"syscall {req.contents.data.nr}")


_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
        _LIBC.syscall.restype = ctypes.c_long
    return _LIBC


def _close_range(first: int, last: int) -> None:
    if first > last:
        return
    libc = _libc()
    if hasattr(libc, "close_range"):  # glibc >= 2.34: one call instead of one per possible fd
        _check(libc.close_range(ctypes.c_uint(first), ctypes.c_uint(last), 0), "close_range")
    else:
        os.closerange(first, min(last + 1, os.sysconf("SC_OPEN_MAX")))


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def setup_worker(notify: bool) -> tuple[Seccomp, dict]:
    """Namespaces and the read-only root, once per worker; returns the seccomp helper and the layers."""
    seccomp = Seccomp(notify)
    layers: dict = {"seccomp": True, "seccomp_notify": seccomp.notify, "unfiltered_syscalls": seccomp.unknown,
                    "net_namespace": False, "ipc_namespace": False, "pid_namespace": False,
                    "mount_namespace": False, "private_proc": False, "readonly_root": False, "private_tmp": False,
                    "revealed_for_uid_65534": [], "closed_to_snippets": [],
                    "uid": NOBODY if os.geteuid() == 0 else os.geteuid(),
                    "rlimits": ["cpu", "as", "fsize", "nofile", "core"]}
    if os.geteuid() != 0:
        layers["namespace_error"] = "not root: no namespaces, network refused by seccomp only"
        return seccomp, layers
    libc = _libc()
    try:
        _check(libc.unshare(CLONE_NEWNET | CLONE_NEWIPC), "unshare(CLONE_NEWNET|CLONE_NEWIPC)")
        layers["net_namespace"] = layers["ipc_namespace"] = True
        try:
            _become_pid_namespace_init(libc)
            layers["pid_namespace"] = True
        except OSError as e:  # the rest does not depend on it
            layers["pid_namespace_error"] = str(e)
        _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        layers["mount_namespace"] = True
        _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
        if layers["pid_namespace"]:  # before the root turns read-only, so this /proc is read-only too
            try:
                _check(libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, b"hidepid=2"),
                       "mount proc /proc")
                layers["private_proc"] = True
            except OSError as e:  # the host's /proc stays (a container may refuse a new one)
                layers["private_proc_error"] = str(e)
        _setattr_ro(libc, "/")
        layers["readonly_root"] = True
        needed = _python_paths()
        # a private, writable /tmp for the snippets' working directories; python files under /tmp stay
        _cover(libc, "/tmp", _children_towards("/tmp", needed), f"size={TMPFS_SIZE_MB}m", writable=True)
        layers["private_tmp"] = True
        layers["revealed_for_uid_65534"] = _reveal(libc, needed)
    except OSError as e:
        layers["namespace_error"] = str(e)
    # without the mount namespace a closed directory (a 0700 /root) hides the interpreter's own
    # files from uid 65534: imports that the worker has not done already then fail in the snippet
    layers["closed_to_snippets"] = sorted({_first_closed_dir(p) for p in _python_paths()} - {None})
    return seccomp, layers


def _become_pid_namespace_init(libc) -> None:
    """unshare(CLONE_NEWPID) moves only this process's future children into a new PID namespace, and
    that namespace dies with its first process (later forks fail). So fork once: the child is pid 1
    there and carries on as the worker, forking every snippet; this process closes its copies of
    the protocol pipes (the parent must see EOF when the worker dies) and waits, passing on the
    exit status. Killing this process kills the worker (PDEATHSIG) and so the whole namespace."""
    _check(libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")
    alive_r, alive_w = os.pipe()  # EOF on alive_r once this process is gone (its parent is invisible there)
    pid = os.fork()
    if pid:
        os.close(alive_r)
        _close_range(0, alive_w - 1)
        _close_range(alive_w + 1, 0xFFFFFFFF)
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    os.close(alive_w)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    gone = select.select([alive_r], [], [], 0)[0]  # the outer process died before PDEATHSIG was set
    os.close(alive_r)
    if gone:
        os._exit(EXIT_ERROR)


def _python_paths() -> set[str]:
    """What the interpreter reads at import time: its prefixes and every existing sys.path entry."""
    paths = (sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix,
             os.path.dirname(sys.executable), *sys.path)
    return {os.path.realpath(p) for p in paths if p and os.path.exists(p)}


def _children_towards(d: str, paths: set[str]) -> set[str]:
    return {os.path.relpath(p, d).split(os.sep)[0] for p in paths if p.startswith(d.rstrip("/") + "/")}


def _first_closed_dir(path: str) -> str | None:
    """The first directory on `path` that uid 65534 may not enter, if any."""
    cur = "/"
    for part in path.strip("/").split("/"):
        st = os.stat(cur)
        bit = 0o100 if st.st_uid == NOBODY else 0o010 if st.st_gid == NOBODY else 0o001
        if not st.st_mode & bit:
            return cur
        cur = os.path.join(cur, part)
    return None


def _reveal(libc, needed: set[str]) -> list[str]:
    """Let uid 65534 reach the interpreter's files when a closed directory (a 0700 /root holding
    pyenv) is in the way: that directory becomes a read-only tmpfs holding only the entries on the
    way to them, bound from the original. The rest of it stays invisible to the snippet."""
    covered: list[str] = []
    for _ in range(16):
        closed = {_first_closed_dir(p) for p in needed} - {None}
        if not closed:
            return covered
        d = min(closed, key=len)
        _cover(libc, d, _children_towards(d, needed), "size=64k", writable=False)
        covered.append(d)
    raise OSError(errno.ELOOP, f"could not open a path to the interpreter's files: {sorted(needed)}")


def _cover(libc, d: str, keep: set[str], size: str, writable: bool) -> None:
    """Mount a fresh tmpfs over `d`, then bind (read-only) the original entries `keep` back into it."""
    orig = os.open(d, os.O_PATH | os.O_DIRECTORY)
    try:
        _check(libc.mount(b"tmpfs", d.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, f"{size},mode=0755".encode()),
               f"mount tmpfs {d}")
        for name in sorted(keep):
            src, dst = f"/proc/self/fd/{orig}/{name}", os.path.join(d, name)
            if os.path.isdir(src):
                os.mkdir(dst)
            else:
                os.close(os.open(dst, os.O_CREAT | os.O_WRONLY, 0o644))
            _check(libc.mount(src.encode(), dst.encode(), None, MS_BIND | MS_REC, None), f"bind {dst}")
            _setattr_ro(libc, dst)
    finally:
        os.close(orig)
    if not writable:
        _setattr_ro(libc, d)


def _setattr_ro(libc, path: str) -> None:
    attr = MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    _check(libc.syscall(ctypes.c_long(NR_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), path.encode(),
                        ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
           f"mount_setattr({path}, AT_RECURSIVE, RDONLY)")


def _exit_code_for(e: BaseException) -> int:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, MemoryError):
            return EXIT_MEMORY
        if isinstance(e, OSError) and e.errno in (errno.EPERM, errno.EACCES, errno.EROFS):
            return EXIT_BLOCKED
        e = e.__cause__ or e.__context__
    return EXIT_ERROR


def run_snippet(code: str) -> int:
    """Run `code` as `__main__` would; return the exit code that tells the worker how it ended."""
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    sys.argv = ["<snippet>"]
    linecache.cache["<snippet>"] = (len(code), None, code.splitlines(True), "<snippet>")
    try:
        exec(compile(code, "<snippet>", "exec"), main.__dict__)
        rc = EXIT_OK
    except SystemExit as e:
        rc = EXIT_OK if e.code in (None, 0) else EXIT_ERROR
        if e.code not in (None, 0) and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except BaseException as e:  # everything the snippet raises is its result
        rc = _exit_code_for(e)
        try:
            tb = e.__traceback__.tb_next if e.__traceback__ is not None else None  # drop this frame
            traceback.print_exception(type(e), e, tb)
        except BaseException:  # e.g. MemoryError while formatting
            os.write(2, f"{type(e).__name__}\n".encode())
    try:
        atexit._run_exitfuncs()
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # the code's own exit problems do not change how it ended
        pass
    return rc


def grandchild(seccomp: Seccomp, req: dict, workdir: str, fds: dict, sock: socket.socket) -> None:
    """Everything between fork and the snippet; never returns."""
    try:
        os.setsid()
        _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != fds["worker"]:
            os._exit(EXIT_ERROR)
        os.dup2(fds["null"], 0)
        os.dup2(fds["out"], 1)
        os.dup2(fds["err"], 2)
        keep = sock.fileno()
        _close_range(3, keep - 1)
        _close_range(keep + 1, 0xFFFFFFFF)  # every inherited fd but the hand-over socket
        os.chdir(workdir)
        os.environ.update(HOME=workdir, TMPDIR=workdir, PWD=workdir)
        tempfile.tempdir = None
        cpu = max(1, math.ceil(req["timeout_s"]))
        mem = int(req["memory_mb"]) << 20
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU, then SIGKILL a second later
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_MB << 20, FSIZE_MB << 20))
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write is an OSError, not a kill
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if os.geteuid() == 0:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
        sys.stdin = open(0, encoding="utf-8", closefd=False)
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
        atexit._clear()
        nfd = seccomp.load()
        # tell the worker the filter is in place (and hand over the notification fd), then let go
        # of both: a snippet holding the fd could answer its own refused calls
        socket.send_fds(sock, [b"1"], [nfd] if nfd >= 0 else [])
        if nfd >= 0:
            os.close(nfd)
        sock.close()
    except BaseException as e:  # reported to the worker as a setup failure
        try:
            os.write(2, f"sandbox setup failed: {type(e).__name__}: {e}\n".encode())
        finally:
            os._exit(EXIT_ERROR)
    os._exit(run_snippet(req["code"]))


class Worker:
    def __init__(self, notify: bool):
        # the protocol pipes move off 0/1 so that a stray print cannot corrupt a message
        self.rx, self.tx = os.dup(0), os.dup(1)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        self.null = null
        self.counter = 0
        try:
            self.seccomp, self.layers = setup_worker(notify)
        except OSError as e:
            self.send({"error": f"{e}"})
            raise SystemExit(1) from None
        self.send({"isolation": self.layers})
        gc.freeze()  # what the worker holds now is never collected in a grandchild: fewer copied pages

    def send(self, msg: dict) -> None:
        data = json.dumps(msg).encode()
        data = struct.pack(">I", len(data)) + data
        while data:
            data = data[os.write(self.tx, data):]

    def recv(self) -> dict | None:
        head = self._read_exact(4)
        if head is None:
            return None
        body = self._read_exact(struct.unpack(">I", head)[0])
        return None if body is None else json.loads(body)

    def _read_exact(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            chunk = os.read(self.rx, n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def workdir(self) -> str:
        if self.layers["private_tmp"]:
            self.counter += 1
            path = f"/tmp/snippet-{self.counter}"
            os.mkdir(path, 0o700)
        else:
            path = tempfile.mkdtemp(prefix="rucai_sandbox_")
        if os.geteuid() == 0:
            os.chown(path, NOBODY, NOBODY)
        return path

    def execute(self, req: dict) -> dict:
        start = time.monotonic()
        workdir = self.workdir()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = {"worker": os.getpid(), "null": self.null, "out": out_w, "err": err_w}
        pid = os.fork()
        if pid == 0:
            parent_sock.close()
            grandchild(self.seccomp, req, workdir, fds, child_sock)
        child_sock.close()
        os.close(out_w)
        os.close(err_w)
        try:
            return self._supervise(req, pid, start, out_r, err_r, parent_sock)
        finally:
            for fd in (out_r, err_r):
                os.close(fd)
            parent_sock.close()
            shutil.rmtree(workdir, onerror=_force_remove)

    def _supervise(self, req, pid, start, out_r, err_r, sock) -> dict:
        deadline = start + float(req["timeout_s"])
        pidfd = os.pidfd_open(pid)
        kept = {out_r: bytearray(), err_r: bytearray()}
        dropped = {out_r: 0, err_r: 0}
        open_streams = {out_r, err_r}
        poller = select.poll()
        for fd in (out_r, err_r, pidfd, sock.fileno()):
            poller.register(fd, select.POLLIN)
        nfd, ready, exited, killed = -1, False, False, False
        refused: list[str] = []
        n_refused = 0
        try:
            while not exited or open_streams:
                wait_ms = 5000 if killed else max(0.0, deadline - time.monotonic()) * 1000
                events = poller.poll(wait_ms)
                if not events:
                    if killed:  # pipes still open 5 s after SIGKILL: give up on them
                        break
                    os.kill(pid, signal.SIGKILL)
                    killed = True
                    continue
                for fd, ev in events:
                    if fd == pidfd:
                        exited = True
                        poller.unregister(pidfd)
                    elif fd == sock.fileno():
                        poller.unregister(fd)
                        try:
                            msg, got, _, _ = socket.recv_fds(sock, 1, 1)
                        except OSError:
                            msg, got = b"", []
                        ready = msg == b"1" and (bool(got) or not self.seccomp.notify)
                        if got:
                            nfd = got[0]
                            poller.register(nfd, select.POLLIN)
                    elif fd == nfd:
                        if ev & select.POLLIN:
                            name = self.seccomp.answer(nfd)
                            if name is not None:
                                n_refused += 1
                                if name not in refused and len(refused) < 32:
                                    refused.append(name)
                        else:  # POLLHUP: the filtered process is gone
                            poller.unregister(nfd)
                    else:
                        chunk = os.read(fd, 65536)
                        if not chunk:
                            poller.unregister(fd)
                            open_streams.discard(fd)
                            continue
                        keep = max(0, STREAM_CAP - len(kept[fd]))
                        kept[fd] += chunk[:keep]
                        dropped[fd] += max(0, len(chunk) - keep)
        finally:
            if not exited:
                os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            os.close(pidfd)
            if nfd >= 0:
                os.close(nfd)
        seconds = time.monotonic() - start
        out, err = (_text(kept[fd], dropped[fd]) for fd in (out_r, err_r))
        if not ready and not killed:  # died before its filter was in place: the sandbox failed, not the code
            return {"setup_error": err.strip() or f"grandchild ended with wait status {status}"}
        cpu = usage.ru_utime + usage.ru_stime
        cpu_limit = max(1, math.ceil(req["timeout_s"]))
        code = os.waitstatus_to_exitcode(status)
        if refused or code == EXIT_BLOCKED:
            state = "blocked"
        elif killed or code == -signal.SIGXCPU or (code == -signal.SIGKILL and cpu >= cpu_limit - 0.05):
            state = "timeout"
        elif code == EXIT_MEMORY:
            state = "memory"
        elif code == EXIT_OK:
            state = "ok"
        else:
            state = "error"
        notes = []
        if killed:
            notes.append(f"wall-clock limit of {req['timeout_s']} s reached: killed")
        elif code < 0:
            notes.append(f"killed by signal {signal.strsignal(-code) or -code}")
        if refused:
            notes.append(f"refused {n_refused} system call(s): {', '.join(refused)}")
        if notes:
            err += ("" if not err or err.endswith("\n") else "\n") + "".join(f"[sandbox] {n}\n" for n in notes)
        return {"status": state, "stdout": out, "stderr": err, "seconds": seconds, "refused": refused,
                "exit_code": code, "cpu_seconds": cpu}

    def serve(self) -> None:
        while True:
            req = self.recv()
            if req is None:
                return
            try:
                reply = self.execute(req)
            except Exception as e:  # the parent turns it into one readable line
                reply = {"setup_error": f"worker: {type(e).__name__}: {e}"}
            try:
                self.send(reply)
            except BrokenPipeError:
                return


def _text(buf: bytearray, dropped: int) -> str:
    text = bytes(buf).decode("utf-8", errors="replace")
    return text + (f"\n[sandbox] output truncated: {dropped} more bytes dropped" if dropped else "")


def _force_remove(func, path, _exc) -> None:
    """rmtree's onerror: a snippet may leave a directory without permissions; give them back."""
    os.chmod(os.path.dirname(path), 0o700)
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, 0o700)
        shutil.rmtree(path, onerror=_force_remove)
    else:
        os.unlink(path)


def main() -> None:
    sys.dont_write_bytecode = True
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # BLAS thread pools in a 512 MB address space
    Worker(notify=os.environ.get("RUCAI_SANDBOX_NOTIFY", "1") == "1").serve()


if __name__ == "__main__":
    main()
