"""rucai.sandbox: hostile snippets end with their status, inside their limits, leaving nothing behind."""

from __future__ import annotations

import os
import tempfile
import time
import uuid

import pytest

from rucai import sandbox

SLACK_S = 30.0  # "returned within its limit": generous, the test machine is shared


def _descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every live descendant of `pid` (from /proc: no psutil needed)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:  # exited meanwhile
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parent[int(entry)] = int(fields[1])
    found, frontier = {}, [pid]
    while frontier:
        p = frontier.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in found:
                try:
                    with open(f"/proc/{child}/cmdline", "rb") as f:
                        found[child] = f.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    found[child] = ""
                frontier.append(child)
    return found


def _stray_processes(before: set[int] = frozenset()) -> list[str]:
    """Anything below this test process but the pool's idle workers (their snippets must be gone) and
    what was already there before the test (other tests' helpers, e.g. multiprocessing's resource
    tracker, in a full suite run). A worker in a PID namespace is two processes: the one the pool
    started and, as its only child, pid 1 of the namespace."""
    found = _descendants(os.getpid())
    workers = {pid for pid, cmd in found.items() if cmd.rstrip().endswith("_worker.py") and _parent_of(pid) == os.getpid()}
    workers |= {pid for pid, cmd in found.items() if cmd.rstrip().endswith("_worker.py") and _parent_of(pid) in workers}
    return [f"{pid}: {cmd}" for pid, cmd in found.items() if pid not in before and pid not in workers]


def _parent_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def _our_tmp_files() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith(("rucai_sandbox", "snippet-"))}


@pytest.fixture
def clean():
    """Checks after the test: no stray process, no left-over working directory, the parent unchanged."""
    sandbox.isolation()  # the shared pool's first worker starts before the snapshot
    cwd, pid, files = os.getcwd(), os.getpid(), _our_tmp_files()
    before = set(_descendants(os.getpid()))
    yield
    assert _stray_processes(before) == []
    assert _our_tmp_files() <= files
    assert (os.getcwd(), os.getpid()) == (cwd, pid)


def _timed(code: str, **kw) -> tuple[sandbox.SandboxResult, float]:
    t0 = time.monotonic()
    r = sandbox.run(code, **kw)
    return r, time.monotonic() - t0


def test_ok_returns_stdout(clean):
    r = sandbox.run("print(sum(range(100)))")
    assert (r.status, r.stdout, r.refused) == ("ok", "4950\n", ())
    assert r.seconds > 0


def test_exception_is_error_with_traceback(clean):
    r = sandbox.run("x = 1\nraise ValueError('bad value')")
    assert r.status == "error"
    assert "Traceback" in r.stderr and 'File "<snippet>", line 2' in r.stderr
    assert r.stderr.rstrip().endswith("ValueError: bad value")


ESCAPE = f"/tmp/rucai_sandbox_escape_{uuid.uuid4().hex}"
HOSTILE = {
    "os_system": ("import os\nprint(os.system('echo hi'))", {"blocked"}, 2),
    "subprocess": ("import subprocess\nsubprocess.run(['ls'])", {"blocked"}, 2),
    "os_fork": ("import os\nos.fork()", {"blocked"}, 2),
    "ctypes_fork_bomb": ("import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.fork()", {"blocked"}, 1),
    "infinite_loop": ("while True:\n    pass", {"timeout"}, 1),
    "alloc_4gib": ("x = bytearray(4 << 30)", {"memory"}, 2),
    "deep_recursion": ("def f(n):\n    return f(n + 1)\nf(0)", {"error"}, 2),
    "huge_bigint": ("x = 2**10**10", {"timeout", "memory"}, 2),
    "socket": ("import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM)", {"blocked"}, 2),
    "signal_parent": ("import os\nos.kill(os.getppid(), 9)", {"blocked"}, 2),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_snippet(name, clean):
    code, expect, timeout_s = HOSTILE[name]
    r, took = _timed(code, timeout_s=timeout_s)
    assert r.status in expect, (r.status, r.stderr[-2000:])
    assert took < timeout_s + SLACK_S
    assert "hi" not in r.stdout
    if name == "deep_recursion":
        assert "RecursionError" in r.stderr
    if name == "ctypes_fork_bomb":
        assert "clone" in r.refused  # every attempt was refused and reported, though never raised


def test_write_outside_workdir_is_refused(clean):
    if not sandbox.isolation()["readonly_root"]:
        pytest.skip(f"no read-only mount namespace here: {sandbox.isolation().get('namespace_error')}")
    r = sandbox.run(f"open({ESCAPE!r}, 'w').write('x')", timeout_s=2)
    assert r.status == "blocked", r.stderr
    assert not os.path.exists(ESCAPE)
    before = open(__file__).read()
    target = os.path.abspath(__file__)
    r = sandbox.run(f"open({target!r}, 'a').write('# escaped')", timeout_s=2)
    # a checkout under the host's /tmp (a fresh clone in `mktemp -d`) may be hidden behind the snippet's
    # private /tmp (the write fails as a missing file) or visible and read-only (refused): never written
    if sandbox.isolation()["private_tmp"] and target.startswith("/tmp/"):
        assert r.status == "blocked" or (r.status == "error" and "FileNotFoundError" in r.stderr), r.stderr
    else:
        assert r.status == "blocked", r.stderr
    assert open(__file__).read() == before


def test_workdir_is_private_and_writable(clean):
    r = sandbox.run("import os, tempfile\nopen('a.txt', 'w').write('x' * 10)\n"
                    "print(sorted(os.listdir('.')), tempfile.gettempdir() == os.getcwd())")
    assert (r.status, r.stdout) == ("ok", "['a.txt'] True\n")


def test_no_network_interfaces(clean):
    if not sandbox.isolation()["net_namespace"]:
        pytest.skip(f"no network namespace here: {sandbox.isolation().get('namespace_error')}")
    r = sandbox.run("print([ln.split(':')[0].strip() for ln in open('/proc/net/dev').read().splitlines()[2:]])")
    assert (r.status, r.stdout) == ("ok", "['lo']\n")


def test_no_other_process_is_visible(clean):
    iso = sandbox.isolation()
    if not iso.get("private_proc"):
        why = iso.get("private_proc_error") or iso.get("pid_namespace_error") or iso.get("namespace_error")
        pytest.skip(f"no private /proc here: {why}")
    code = "import os\nprint(sorted(int(e) for e in os.listdir('/proc') if e.isdigit()) == [os.getpid()], os.getppid())"
    r = sandbox.run(code)
    assert (r.status, r.stdout) == ("ok", "True 1\n"), r.stderr  # the worker is pid 1 and hidden


def test_only_std_streams_are_inherited(clean):
    # a leaked seccomp-notification or protocol fd would let the snippet answer its own refusals
    r = sandbox.run("import os\nprint(sorted(int(f) for f in os.listdir('/proc/self/fd'))[:3])")
    assert (r.status, r.stdout) == ("ok", "[0, 1, 2]\n")
    r = sandbox.run("import os\nprint(len(os.listdir('/proc/self/fd')))")
    assert r.stdout == "4\n"  # 0, 1, 2 and listdir's own


def test_threads_and_numpy_work(clean):
    pytest.importorskip("numpy")
    r = sandbox.run("import threading\nt = threading.Thread(target=print, args=('thread',))\nt.start(); t.join()\n"
                    "import numpy as np\nprint(float(np.linalg.inv(2 * np.eye(3)).sum()))", timeout_s=20)
    assert (r.status, r.stdout) == ("ok", "thread\n1.5\n"), r.stderr[-2000:]


def test_output_is_truncated(clean):
    r = sandbox.run("print('x' * 200_000)\nimport sys\nsys.stderr.write('e' * 200_000)")
    assert r.status == "ok"
    assert r.stdout.startswith("x" * 1000) and len(r.stdout) < 70_000 and "truncated" in r.stdout
    assert len(r.stderr) < 70_000 and "truncated" in r.stderr


def test_exit_codes(clean):
    assert sandbox.run("import sys\nsys.exit(0)").status == "ok"
    assert sandbox.run("import sys\nsys.exit(3)").status == "error"
    assert sandbox.run("import os\nos._exit(0)").status == "ok"
    r = sandbox.run("def broken(:\n    pass")
    assert r.status == "error" and "SyntaxError" in r.stderr


def test_run_many_keeps_order_and_isolation(clean):
    codes = [f"print({i})" for i in range(12)]
    codes += ["secret = 41\nopen('note.txt', 'w').write('x')",
              "import os\nprint('secret' in globals(), os.path.exists('note.txt'))",
              "while True:\n    pass"]
    rs = sandbox.run_many(codes, timeout_s=1, workers=2)
    assert [r.stdout for r in rs[:12]] == [f"{i}\n" for i in range(12)]
    assert [r.status for r in rs[12:]] == ["ok", "ok", "timeout"]
    assert rs[13].stdout == "False False\n"


def test_refusal_without_notification(clean):
    # plain EPERM: `blocked` only when the refusal surfaces as an exception
    with sandbox.SandboxPool(notify=False) as pool:
        assert pool.isolation()["seccomp_notify"] is False
        assert pool.run("import os\nos.fork()", timeout_s=2).status == "blocked"
        r = pool.run("import os\nprint(os.system('true'))", timeout_s=2)
        assert r.status == "ok" and r.stdout != "0\n" and r.refused == ()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="timeout_s > 0"):
        sandbox.run("pass", timeout_s=0)
    with pytest.raises(TypeError, match="code must be a str"):
        sandbox.run(b"pass")
