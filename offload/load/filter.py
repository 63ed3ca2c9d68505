"""`offload filter`: edit the blocklist of an attached `filter` program in place.

All prefixes are parsed first (netaddr); a bad one rejects the whole request. Entries added by a
request that then fails are taken out again, so the maps are never left half-updated.
"""

from __future__ import annotations

import errno
import os

from netaddr import AddrFormatError, IPAddress, IPNetwork

from offload.errors import NotAttachedError, UsageError, excerpt
from offload.kernel import bpfsys, netns
from offload.kernel.names import ifindex_of
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
            raise UsageError(f"bad prefix {excerpt(item)}: use e.g. 192.0.2.0/24 or 2001:db8::/32") from None
        if str(net.ip) != str(net.network):
            raise UsageError(f"bad prefix {excerpt(item)}: host bits are set; did you mean {net.cidr}?")
        out.append(net.cidr)
    if not out:
        raise UsageError("no prefix given")
    return out


def _key(net: IPNetwork) -> bytes:
    return net.prefixlen.to_bytes(4, "little") + net.network.packed


def _from_key(raw: bytes) -> IPNetwork:
    plen = int.from_bytes(raw[:4], "little")
    addr = IPAddress(int.from_bytes(raw[4:], "big"), 4 if len(raw) == V4_KEY else 6)
    return IPNetwork(f"{addr}/{plen}")


def add_to_maps(fd4: int, fd6: int, nets: list[IPNetwork]) -> list[IPNetwork]:
    """Add each prefix that has no entry of its own yet; the ones added, in order.

    Membership is exact (prefix length and network), read from the trie's keys once per request:
    bpf_map_lookup_elem on an LPM trie is a longest-prefix match, so it would call a /24 present
    under a blocked /16 and leave it unblocked once the /16 is deleted. (Not BPF_NOEXIST: LPM tries
    of older kernels ignore it and overwrite, and the rollback would then delete an old entry.)"""
    present = {4: set(bpfsys.map_keys(fd4, V4_KEY)), 6: set(bpfsys.map_keys(fd6, V6_KEY))}
    _check_room(present, nets)
    added: list[IPNetwork] = []
    try:
        for net in nets:
            key = _key(net)
            if key not in present[net.version]:
                bpfsys.map_update(fd4 if net.version == 4 else fd6, key, b"\x01")
                present[net.version].add(key)
                added.append(net)
    except OSError as e:
        for done in added:  # roll back this request's entries; trie deletes are exact
            bpfsys.map_delete(fd4 if done.version == 4 else fd6, _key(done))
        if e.errno in (errno.ENOSPC, errno.E2BIG):   # full after all (another writer): nothing was changed
            raise UsageError(f"filter: the blocklist is full ({e.strerror}) at prefix {net}: nothing was changed",
                             hint="offload filter del IFACE PREFIX... to make room") from None
        raise
    return added


def _check_room(present: dict[int, set[bytes]], nets: list[IPNetwork]) -> None:
    """Refuse, before the first write, a request the blocklists cannot hold: the kernel would say
    ENOSPC (E2BIG on older kernels) only part-way through it."""
    for version in (4, 6):
        after = len(present[version] | {_key(n) for n in nets if n.version == version})
        if after > MAX_ENTRIES:
            raise UsageError(f"filter: {after - len(present[version])} new IPv{version} prefixes on top of "
                             f"the {len(present[version])} blocked would make {after}; the blocklist holds at "
                             f"most {MAX_ENTRIES}: nothing was changed",
                             hint="offload filter del IFACE PREFIX... to make room, or block wider prefixes")


def delete_from_maps(fd4: int, fd6: int, nets: list[IPNetwork]) -> list[IPNetwork]:
    """Delete each prefix's own entry (a trie delete is exact: a covering prefix stays); the ones
    that had one, in order."""
    return [n for n in nets if bpfsys.map_delete(fd4 if n.version == 4 else fd6, _key(n))]


def keys_in_maps(fd4: int, fd6: int) -> list[IPNetwork]:
    """Every prefix in the blocklists, sorted."""
    return sorted([_from_key(k) for k in bpfsys.map_keys(fd4, V4_KEY)]
                  + [_from_key(k) for k in bpfsys.map_keys(fd6, V6_KEY)])


class _Maps:
    def __init__(self, iface: str) -> None:
        ifindex_of(iface)  # a missing interface is bad input, before "nothing attached"
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


def _edit_lock():
    # Two edits at once would each read the trie, both call a prefix "added", and one's rollback
    # could then delete the other's entry; an attach could replace the program under an edit.
    return pins.state_lock()


def add(iface: str, items: list[str]) -> dict:
    nets = parse_prefixes(items)
    with _edit_lock(), _Maps(iface) as m:
        added = add_to_maps(m.fd4, m.fd6, nets)
    return {"interface": iface, "added": [str(n) for n in added],
            "already_present": [str(n) for n in nets if n not in added]}


def delete(iface: str, items: list[str]) -> dict:
    nets = parse_prefixes(items)
    with _edit_lock(), _Maps(iface) as m:
        removed = delete_from_maps(m.fd4, m.fd6, nets)
    return {"interface": iface, "removed": [str(n) for n in removed],
            "not_present": [str(n) for n in nets if n not in removed]}


def list_(iface: str) -> dict:
    with _Maps(iface) as m:
        nets = keys_in_maps(m.fd4, m.fd6)
    return {"interface": iface, "prefixes": [str(n) for n in nets]}
