"""Running the `offload` command as a user would: the one CLI runner every test uses.

With OFFLOAD_TEST_CLI=fork (the VM lane sets it), a call runs the command's own entry point,
`offload.cli.main`, in a child forked from the test process, with the same argv, environment,
stdout/stderr pipes and exit code: only the interpreter's start and offload's imports are skipped,
which cost 10-20 s per call under qemu TCG (0.3 s on the host). Runs as another user (`user=`) or
with an environment other than the one this module was imported in are always real executions of
the installed command.

A run as another user must reach the checkout, its .venv and the package data, which a clone under
a directory that user cannot traverse (root's home, mode 0700) hides from it. So the command runs in
a private mount namespace (`unshare --mount`, as root, before setpriv drops privileges) in which the
checkout is bind-mounted under a fresh 0755 directory in the temporary directory: the venv's python
and `offload` script are run by that path and PYTHONPATH names the bind-mounted package, so
`import offload` and its data resolve there. Nothing outside that namespace sees the mounts."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

OFFLOAD = str(Path(sys.executable).parent / "offload")
FORK = os.environ.get("OFFLOAD_TEST_CLI") == "fork"


def _env_now(extra: dict | None = None) -> dict:
    return {k: v for k, v in {**os.environ, **(extra or {})}.items() if not k.startswith("PYTEST_")}


# offload reads some settings from the environment once, at import (OFFLOAD_BPFFS, OFFLOAD_RUN_DIR):
# a call whose environment differs from the one this module was imported in runs the real command.
_FORK_ENV = _env_now()


def offload(*args: str, netns: str | None = None, check: bool = True, user: str | None = None,
            extra_env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`offload ARGS [--netns NS]`; with `user`, as that uid with no capabilities (setpriv).
    With `check`, a non-zero exit fails the test with the command's output."""
    argv = [OFFLOAD, *args] + (["--netns", netns] if netns else [])
    env = {**os.environ, **(extra_env or {})}
    if user:
        with reachable_checkout() as mounts:
            res = _run(as_user(user, argv, mounts), timeout, {**env, "PYTHONPATH": mirrored(_import_root(), mounts)})
    elif FORK and _env_now(extra_env) == _FORK_ENV:
        res = run_forked(argv, extra_env or {}, timeout)
    else:
        res = _run(argv, timeout, env)
    if check and res.returncode != 0:
        raise AssertionError(f"{res.args} exited {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}")
    return res


def _run(argv: list[str], timeout: float, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def _import_root() -> Path:
    """The directory `import offload` resolves in (the checkout, for an editable install)."""
    return Path(importlib.util.find_spec("offload").origin).resolve().parents[1]


def mount_sources() -> list[Path]:
    """What a run as another user needs: the package's import root, and the venv unless inside it."""
    roots = [_import_root()]
    venv = Path(sys.prefix).resolve()
    if sys.prefix != sys.base_prefix and not venv.is_relative_to(roots[0]):
        roots.append(venv)
    return roots


@contextlib.contextmanager
def reachable_checkout() -> Iterator[dict[Path, Path]]:
    """{source: mount point}: empty 0755 directories under a fresh 0755 one in the temporary
    directory, for the bind mounts of a private mount namespace; removed afterwards, whatever
    happened (the mounts die with the namespace's last process)."""
    with tempfile.TemporaryDirectory(prefix="offload-cli-") as top:
        os.chmod(top, 0o755)
        mounts = {}
        for i, src in enumerate(mount_sources()):
            (Path(top) / str(i)).mkdir(mode=0o755)
            mounts[src] = Path(top) / str(i)
        yield mounts


def mirrored(path: str | Path, mounts: dict[Path, Path]) -> str:
    """`path` as seen through the bind mounts (unchanged outside them). Its last component is not
    resolved: the venv's python, a link to the system's, finds its venv by its own path."""
    p = Path(os.path.realpath(os.path.dirname(os.path.abspath(path)))) / os.path.basename(path)
    for src, dst in mounts.items():
        if p.is_relative_to(src):
            return str(dst / p.relative_to(src))
    return str(p)


# In the new namespace, as root: bind each source, enter the working directory, drop privileges.
_BIND_THEN_EXEC = 'while [ "$1" != -- ]; do mount --bind "$1" "$2"; shift 2; done; shift; cd "$1"; shift; exec "$@"'


def as_user(user: str, argv: list[str], mounts: dict[Path, Path]) -> list[str]:
    """argv (OFFLOAD first) as uid/gid `user` without capabilities, by the venv's python and the
    paths through `mounts` (the caller sets PYTHONPATH to the bind-mounted package)."""
    binds = [str(p) for src, dst in mounts.items() for p in (src, dst)]
    python = mirrored(sys.executable, mounts)
    drop = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--inh-caps=-all"]
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-euc", _BIND_THEN_EXEC, "sh",
            *binds, "--", mirrored(os.getcwd(), mounts), *drop, python, mirrored(argv[0], mounts), *argv[1:]]


def offload_json(*args: str, **kw) -> Any:
    """`offload ARGS --json`, which must succeed, parsed."""
    return json.loads(offload(*args, "--json", **{**kw, "check": True}).stdout)


def run_forked(argv: list[str], extra_env: dict, timeout: float) -> subprocess.CompletedProcess:
    """argv (OFFLOAD first) through offload.cli.main in a forked child, as subprocess.run would."""
    # imported once, in the test process: every child inherits it
    from offload import cli

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 70
        try:
            os.close(out_r)
            os.close(err_r)
            null = os.open(os.devnull, os.O_RDONLY)
            for fd, target in ((null, 0), (out_w, 1), (err_w, 2)):
                os.dup2(fd, target)
            os.environ.update(extra_env)
            # pytest's capture objects are replaced by plain streams on the new fds 0-2
            sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
            sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False))
            sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
            sys.argv = list(argv)
            try:
                cli.main.main(args=argv[1:], prog_name="offload")
                code = 0
            except SystemExit as e:  # what the interpreter would make of it
                if e.code is None or isinstance(e.code, int):
                    code = e.code or 0
                else:
                    print(e.code, file=sys.stderr)
                    code = 1
            except BaseException:
                import traceback
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(out_w)
    os.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as sel:
            for fd in chunks:
                sel.register(fd, selectors.EVENT_READ)
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(argv, timeout)
                for key, _ in sel.select(left):
                    data = os.read(key.fd, 65536)
                    if data:
                        chunks[key.fd].append(data)
                    else:
                        sel.unregister(key.fd)
        _, status = os.waitpid(pid, 0)
        pid = 0
    finally:
        if pid:  # time-out, or pytest's own time-out interrupted the wait: no child outlives its test
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(out_r)
        os.close(err_r)
    text = {fd: b"".join(c).decode(errors="replace") for fd, c in chunks.items()}
    return subprocess.CompletedProcess(argv, os.waitstatus_to_exitcode(status), text[out_r], text[err_r])
