"""Enter a named network namespace for a block of code, and always come back."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import netns as pr_netns

from offload.errors import UsageError

NETNS_RUN_DIR = "/run/netns"


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_RUN_DIR, name))


@contextmanager
def inside(name: str | None) -> Iterator[None]:
    """Run the block in netns `name` (None: stay). Sockets opened inside stay bound to it."""
    if name is None:
        yield
        return
    path = os.path.join(NETNS_RUN_DIR, name)
    try:
        target = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise UsageError(f"no such network namespace: {name}", hint="list them with `ip netns list`") from None
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        pr_netns.setns(target, flags=0)  # os.setns needs Python 3.12
        try:
            yield
        finally:
            pr_netns.setns(home, flags=0)
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
    return "host"
