"""Enter a named network namespace for a block of code, and always come back."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from offload.errors import EnvironmentProblem, UsageError
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
    if name is None or name == _identify():
        yield
        return
    # "host" is how offload names the initial namespace (PID 1's), which has no /run/netns entry
    path = "/proc/1/ns/net" if name == HOST else os.path.join(NETNS_RUN_DIR, check_netns(name))
    try:
        target = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        raise UsageError(f"no such network namespace: {name}", hint="list them with `ip netns list`") from None
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        setns(target)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(target)
        os.close(home)


# The initial namespaces' fixed inode numbers (include/linux/proc_ns.h): the pid one since Linux
# 3.8, the net one since 6.x kernels gave init_net a static number too.
PROC_PID_INIT_INO = 0xEFFFFFFC
PROC_NET_INIT_INO = 0xEFFFFFF9


_names: dict[tuple[int, int], str] = {}   # a namespace's (dev, inode) -> the name it was last found by


def _named(mine: os.stat_result) -> str | None:
    """The name under /run/netns of namespace `mine`: the one it had last time if that still
    names it (one stat, not a scan of every namespace on a node of hundreds of pods), else found
    by a scan; a namespace deleted during the scan is passed over."""
    key = (mine.st_dev, mine.st_ino)
    for entry in ([_names[key]] if key in _names else []) + _listdir(NETNS_RUN_DIR):
        try:
            st = os.stat(os.path.join(NETNS_RUN_DIR, entry))
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == key:
            _names[key] = entry
            return entry
    return None


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _identify() -> str | None:
    """The name `ip netns` knows this thread's namespace by, HOST for the initial one, or None for
    one that has no name (made by `unshare -n` or a container runtime, or /run/netns not mounted)."""
    try:
        mine = os.stat("/proc/thread-self/ns/net")   # this thread's: setns() is per thread
    except OSError:
        return HOST                                   # no /proc: nothing to tell namespaces apart by
    named = _named(mine)
    if named is not None:
        return named
    if mine.st_ino == PROC_NET_INIT_INO:
        return HOST
    # In the initial PID namespace, kthreadd (PID 2) is a kernel thread, always in the initial
    # network namespace (and readable where PID 1's namespaces may not be).
    for pid in ("2", "1"):
        try:
            if os.stat("/proc/self/ns/pid").st_ino == PROC_PID_INIT_INO:
                return HOST if os.stat(f"/proc/{pid}/ns/net").st_ino == mine.st_ino else None
        except OSError:
            continue
    # A PID namespace of its own (a container) on a kernel without a static init_net number:
    # nothing tells; a container that joined a named namespace mounts /run/netns (docs/policy.md).
    return HOST


def no_such_interface(*ifaces: str) -> UsageError:
    """The error for interfaces this namespace does not hold: which namespace that is, and how to
    list what it holds."""
    name = _identify()
    where = {None: "this network namespace", HOST: "the host's network namespace"}.get(name, f"network namespace {name}")
    listing = "offload probe" + (f" --netns {name}" if name not in (None, HOST) else "")
    return UsageError(f"{', '.join(ifaces)}: no such interface in {where}",
                      hint=f"list them with `{listing}`; another namespace's with `offload probe --netns NS`")


def current_name() -> str:
    """Name of the namespace we are in (as `ip netns` knows it), or 'host' for the initial one.

    offload files pins and records per namespace name; an unnamed namespace filed as "host" would
    let the host's `gc` free pins of programs still attached here, so it is refused instead."""
    name = _identify()
    if name is None:
        raise EnvironmentProblem(
            "this network namespace has no name under /run/netns, and offload keeps its pins and records "
            "per named namespace",
            hint="name it (`ip netns attach NAME PID`) and use --netns NAME, or, in a container, mount the "
                 "host's /run/netns and join the namespace by that name")
    return name
