"""Running the `offload` command as a user would: the one CLI runner every test uses.

With OFFLOAD_TEST_CLI=fork (the VM lane sets it), a call runs the command's own entry point,
`offload.cli.main`, in a child forked from the test process, with the same argv, environment,
stdout/stderr pipes and exit code: only the interpreter's start and offload's imports are skipped,
which cost 10-20 s per call under qemu TCG (0.3 s on the host). Runs as another user (`user=`) or
with an environment other than the one this module was imported in are always real executions of
the installed command."""

from __future__ import annotations

import io
import json
import os
import selectors
import signal
import subprocess
import sys
import time
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
    if user:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--inh-caps=-all", *argv]
    if FORK and not user and _env_now(extra_env) == _FORK_ENV:
        res = run_forked(argv, extra_env or {}, timeout)
    else:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, **(extra_env or {})})
    if check and res.returncode != 0:
        raise AssertionError(f"{argv} exited {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}")
    return res


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
