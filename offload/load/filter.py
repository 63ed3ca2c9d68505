"""`offload filter`: edit the blocklist of an attached `filter` program in place.

All prefixes are parsed first (netaddr); a bad one rejects the whole request. Entries added by a
request that then fails are taken out again, so the maps are never left half-updated.
"""

from __future__ import annotations

import os

from netaddr import AddrFormatError, IPNetwork

from offload.errors import NotAttachedError, UsageError
from offload.kernel import bpfsys, netns
from offload.load import pins

V4_KEY, V6_KEY = 8, 20      # struct lpm_v4 / lpm_v6 in bpf/filter.c
MAX_ENTRIES = 16384         # each blocklist's max_entries in bpf/filter.c


def parse_prefixes(items: list[str]) -> list[IPNetwork]:
    out = []
    for item in items:
        item = item.strip()
        try:
            net = IPNetwork(item)
        except (AddrFormatError, ValueError, TypeError):
            raise UsageError(f"bad prefix {item!r}: use e.g. 192.0.2.0/24 or 2001:db8::/32") from None
        if str(net.ip) != str(net.network):
            raise UsageError(f"bad prefix {item!r}: host bits are set; did you mean {net.cidr}?")
        out.append(net.cidr)
    if not out:
        raise UsageError("no prefix given")
    return out


def _key(net: IPNetwork) -> bytes:
    return net.prefixlen.to_bytes(4, "little") + net.network.packed


def _from_key(raw: bytes) -> IPNetwork:
    plen = int.from_bytes(raw[:4], "little")
    from netaddr import IPAddress

    addr = IPAddress(int.from_bytes(raw[4:], "big"), 4 if len(raw) == V4_KEY else 6)
    return IPNetwork(f"{addr}/{plen}")


def add_to_maps(fd4: int, fd6: int, nets: list[IPNetwork]) -> list[IPNetwork]:
    added: list[IPNetwork] = []
    try:
        for net in nets:
            fd = fd4 if net.version == 4 else fd6
            if bpfsys.map_lookup(fd, _key(net), 1) is None:
                bpfsys.map_update(fd, _key(net), b"\x01")
                added.append(net)
    except OSError:
        for net in added:  # roll back this request's entries
            bpfsys.map_delete(fd4 if net.version == 4 else fd6, _key(net))
        raise
    return added


class _Maps:
    def __init__(self, iface: str) -> None:
        slot = pins.Slot(netns.current_name(), iface)
        meta = slot.meta()
        if not meta or meta.get("program") != "filter" or not meta.get("library"):
            raise NotAttachedError(f"{iface}: no `filter` program of offload's is attached"
                                   + (f" (it carries {meta['program']})" if meta else ""),
                                   hint=f"offload attach {iface} filter --param prefixes=PREFIX,...")
        self.fd4, self.fd6 = slot.open_map("blocklist_v4"), slot.open_map("blocklist_v6")

    def close(self) -> None:
        os.close(self.fd4)
        os.close(self.fd6)

    def __enter__(self) -> "_Maps":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def add(iface: str, items: list[str]) -> dict:
    nets = parse_prefixes(items)
    with _Maps(iface) as m:
        added = add_to_maps(m.fd4, m.fd6, nets)
    return {"interface": iface, "added": [str(n) for n in added],
            "already_present": [str(n) for n in nets if n not in added]}


def delete(iface: str, items: list[str]) -> dict:
    nets = parse_prefixes(items)
    with _Maps(iface) as m:
        removed = [n for n in nets if bpfsys.map_delete(m.fd4 if n.version == 4 else m.fd6, _key(n))]
    return {"interface": iface, "removed": [str(n) for n in removed],
            "not_present": [str(n) for n in nets if n not in removed]}


def list_(iface: str) -> dict:
    with _Maps(iface) as m:
        nets = [_from_key(k) for k in bpfsys.map_keys(m.fd4, V4_KEY)] + \
               [_from_key(k) for k in bpfsys.map_keys(m.fd6, V6_KEY)]
    return {"interface": iface, "prefixes": [str(n) for n in sorted(nets)]}
