"""Enter a named network namespace for a block of code, and always come back."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from offload.errors import UsageError
from offload.kernel.names import check_netns

NETNS_RUN_DIR = "/run/netns"


HOST = "host"
CLONE_NEWNET = 0x40000000


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)   # the C library this process already runs on


def setns(fd: int) -> None:
    """setns(2) into the network namespace `fd` (os.setns needs Python 3.12)."""
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns(network namespace): {os.strerror(code)}")


def exists(name: str) -> bool:
    return name == HOST or os.path.exists(os.path.join(NETNS_RUN_DIR, check_netns(name)))


def names() -> list[str]:
    """Every named network namespace (`ip netns list`), and "host"."""
    try:
        named = sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        named = []
    return [HOST, *named]


@contextmanager
def inside(name: str | None) -> Iterator[None]:
    """Run the block in netns `name` (None: stay). Sockets opened inside stay bound to it."""
    if name is None or name == current_name():
        yield
        return
    # "host" is how offload names the initial namespace (PID 1's), which has no /run/netns entry
    path = "/proc/1/ns/net" if name == HOST else os.path.join(NETNS_RUN_DIR, check_netns(name))
    try:
        target = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        raise UsageError(f"no such network namespace: {name}", hint="list them with `ip netns list`") from None
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        setns(target)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(target)
        os.close(home)


def current_name() -> str:
    """Name of the namespace we are in (as `ip netns` knows it), or 'host' for the initial one."""
    try:
        mine = os.stat("/proc/self/ns/net")
        for entry in os.listdir(NETNS_RUN_DIR):
            st = os.stat(os.path.join(NETNS_RUN_DIR, entry))
            if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                return entry
    except OSError:
        pass
    return HOST
