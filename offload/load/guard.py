"""Do not cut the operator off: find the interfaces that carry the default route or the address
this host is reached on (the SSH session's), in the current network namespace."""

from __future__ import annotations

import ipaddress
import os
import socket

from offload.kernel import rtnl


def protected_interfaces() -> dict[str, str]:
    """ifname -> why it is protected."""
    out: dict[str, str] = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        for oif in rtnl.default_route_oifs(family):
            name = _name(oif)
            if name:
                out.setdefault(name, f"it carries the default route ({'IPv4' if family == socket.AF_INET else 'IPv6'})")
    ssh = os.environ.get("SSH_CONNECTION", "").split()
    if len(ssh) == 4:  # client_ip client_port server_ip server_port
        try:
            server = ipaddress.ip_address(ssh[2].split("%")[0])
        except ValueError:
            return out
        for index, raw in rtnl.addresses():
            if len(raw) in (4, 16) and ipaddress.ip_address(raw) == server:
                out.setdefault(_name(index) or "?", f"it holds {server}, the address this SSH session "
                                                     "reaches the host on")
    return out


def _name(ifindex: int) -> str | None:
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return None
