"""Running the `offload` command as a user would: the one CLI runner every test uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

OFFLOAD = str(Path(sys.executable).parent / "offload")


def offload(*args: str, netns: str | None = None, check: bool = True, user: str | None = None,
            extra_env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`offload ARGS [--netns NS]`; with `user`, as that uid with no capabilities (setpriv).
    With `check`, a non-zero exit fails the test with the command's output."""
    argv = [OFFLOAD, *args] + (["--netns", netns] if netns else [])
    if user:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--inh-caps=-all", *argv]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(extra_env or {})})
    if check and res.returncode != 0:
        raise AssertionError(f"{argv} exited {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}")
    return res


def offload_json(*args: str, **kw) -> Any:
    """`offload ARGS --json`, which must succeed, parsed."""
    return json.loads(offload(*args, "--json", **{**kw, "check": True}).stdout)
