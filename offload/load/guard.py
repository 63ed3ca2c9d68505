"""Do not cut the operator off: find the interfaces that carry the default route or the address
this host is reached on (the SSH session's), in the current network namespace."""

from __future__ import annotations

import os

from netaddr import IPAddress
from pyroute2.iproute import IPRoute


def protected_interfaces() -> dict[str, str]:
    """ifname -> why it is protected."""
    out: dict[str, str] = {}
    with IPRoute() as ipr:
        names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ipr.get_links()}
        for family in (2, 10):  # AF_INET, AF_INET6
            for r in ipr.get_default_routes(family=family):
                for oif in _route_oifs(r):
                    if oif in names:
                        out.setdefault(names[oif], f"it carries the default route ({'IPv4' if family == 2 else 'IPv6'})")
        ssh = os.environ.get("SSH_CONNECTION", "").split()
        if len(ssh) == 4:  # client_ip client_port server_ip server_port
            server = IPAddress(ssh[2].split("%")[0])
            for a in ipr.get_addr():
                if a.get_attr("IFA_ADDRESS") and IPAddress(a.get_attr("IFA_ADDRESS").split("%")[0]) == server:
                    out.setdefault(names.get(a["index"], "?"), f"it holds {server}, the address this SSH session "
                                                               "reaches the host on")
    return out


def _route_oifs(route) -> list[int]:
    oif = route.get_attr("RTA_OIF")
    if oif:
        return [oif]
    multipath = route.get_attr("RTA_MULTIPATH") or []
    return [hop["oif"] for hop in multipath if hop.get("oif")]
