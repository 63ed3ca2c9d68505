"""The kernel's rules for names that reach the file system: interface names (dev_valid_name())
and network namespace names (entries of /run/netns, as `ip netns` makes them). A name that
passes is one path component, never a path."""

from __future__ import annotations

import socket

from offload.errors import UsageError, excerpt

IFNAMSIZ = 16      # include/uapi/linux/if.h, with the terminating NUL
NAME_MAX = 255


def check_ifname(name: str) -> str:
    """`name` if the kernel would accept it as an interface name (net/core/dev.c: dev_valid_name)."""
    raw = name.encode(errors="surrogateescape") if isinstance(name, str) else b""
    why = None
    if not raw:
        why = "it is empty"
    elif len(raw) >= IFNAMSIZ:
        why = f"it is {len(raw)} bytes long; the kernel takes at most {IFNAMSIZ - 1}"
    elif name in (".", ".."):
        why = "'.' and '..' are not interface names"
    elif any(c in "/:" or c.isspace() or c == "\0" for c in name):
        why = "it holds '/', ':', white space or NUL"
    if why:
        raise UsageError(f"bad interface name {excerpt(name)}: {why}", hint="list interfaces with `offload probe`")
    return name


def ifindex_of(iface: str) -> int:
    """`iface`'s index in the current namespace; a missing interface is bad input (exit 2), not
    "nothing of offload's attached" (exit 10)."""
    try:
        return socket.if_nametoindex(check_ifname(iface))
    except OSError:
        from offload.kernel import netns   # it imports this module

        raise netns.no_such_interface(iface) from None


def check_netns(name: str) -> str:
    """`name` if it can be a network namespace name under /run/netns (one path component)."""
    raw = name.encode(errors="surrogateescape") if isinstance(name, str) else b""
    why = None
    if not raw:
        why = "it is empty"
    elif len(raw) > NAME_MAX:
        why = f"it is {len(raw)} bytes long; at most {NAME_MAX}"
    elif name in (".", ".."):
        why = "'.' and '..' are not namespace names"
    elif "/" in name or "\0" in name:
        why = "a namespace is named, not given as a path: it holds '/' or NUL"
    if why:
        raise UsageError(f"bad network namespace name {excerpt(name)}: {why}", hint="list them with `ip netns list`")
    return name
