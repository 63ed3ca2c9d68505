"""Ground truth from the kernel through iproute2, independent of offload's own code."""

from __future__ import annotations

import json
import subprocess

_MODE_NAMES = {1: "native", 2: "generic", 3: "hw"}   # XDP_ATTACHED_* in if_link.h


def _ip_json(*argv: str, netns: str | None = None) -> list:
    full = ["ip", *(["-n", netns] if netns else []), "-j", *argv]
    return json.loads(subprocess.run(full, capture_output=True, text=True, check=True, timeout=60).stdout or "[]")


def kernel_xdp(dev: str, netns: str | None = None) -> dict[str, int]:
    """mode -> prog id attached to `dev`, as `ip -d -j link` reports it."""
    x = _ip_json("-d", "link", "show", "dev", dev, netns=netns)[0].get("xdp")
    if not x:
        return {}
    if x.get("mode") == 4:  # XDP_ATTACHED_MULTI
        return {_MODE_NAMES[a["mode"]]: a["prog"]["id"] for a in x["attached"]}
    return {_MODE_NAMES[x["mode"]]: x["prog"]["id"]}


def xdp_ids(netns: str | None = None) -> dict[str, int]:
    """ifname -> prog id of every link carrying one XDP program."""
    return {ln["ifname"]: ln["xdp"]["prog"]["id"] for ln in _ip_json("-d", "link", "show", netns=netns)
            if ln.get("xdp", {}).get("prog")}


def netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {ln.split()[0] for ln in out.splitlines() if ln.strip()}


def host_links() -> list[str]:
    return sorted(d["ifname"] for d in _ip_json("link", "show"))
