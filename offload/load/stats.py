"""`offload stats`: per-action packet counters of our program, read from its pinned map."""

from __future__ import annotations

import os
import struct
import time

from offload.errors import NotAttachedError
from offload.kernel import bpfsys, clock, netns
from offload.kernel.bpfnames import MAP_TYPES
from offload.kernel.names import ifindex_of
from offload.load import pins
from offload.load.programs import ACTIONS

_ENTRY = 16 * len(ACTIONS)   # struct offload_counters: packets and bytes per action, per CPU
_FAST_ENTRY = 8 + _ENTRY     # struct offload_fast_slot: the ifindex holding the slot (u32, pad), its counters
_PERCPU_HASH = MAP_TYPES.index("percpu_hash")
_PERCPU_ARRAY = MAP_TYPES.index("percpu_array")
FAST_MAP = "xdp_stats_fast"  # the library's fast-path slots beside xdp_stats (programs built before it lack it)
# The one action each library program's offloaded (hw) counter stands for.
HW_ACTION = {"count_drop": "drop", "count_pass": "pass", "reflect": "tx", "redirect": "redirect"}


def read(iface: str, member: str | None = None) -> dict:
    """{'mode', 'program', 'packets': {action: n}, 'bytes': {action: n}} right now, of offload's
    program on `iface`, or of the policy's chain member `member` there."""
    ifindex = ifindex_of(iface)  # a missing interface is bad input, before "nothing attached"
    slot = pins.Slot(netns.current_name(), iface, member)
    meta = slot.meta()
    if not meta:
        keys = [s.member for s in pins.interface_slots(slot.netns, iface) if s.member is not None]
        hint = (f"offload's programs on {iface} are a policy's chain members: offload stats {iface} --member "
                f"{keys[0]} (members: {', '.join(keys)})") if keys and member is None else "offload status"
        raise NotAttachedError(f"{slot.label}: no program of offload's is attached", hint=hint)
    packets = dict.fromkeys(ACTIONS, 0)
    nbytes = dict.fromkeys(ACTIONS, 0)
    per_cpu: list[int] | None = None   # frames the program saw on each CPU (the receive side's CPUs)
    if "xdp_stats" in meta["maps"]:
        fd, fast = slot.open_map("xdp_stats"), None
        try:
            fast = slot.open_map(FAST_MAP) if FAST_MAP in meta["maps"] else None
            packets, nbytes, per_cpu = counters(fd, ifindex, fast)
        finally:
            for f in (fd, fast):
                if f is not None:
                    os.close(f)
    elif "xdp_stats_hw" in meta["maps"]:
        fd = slot.open_map("xdp_stats_hw")
        try:
            action = HW_ACTION.get(meta["program"], "pass")
            packets[action] = struct.unpack("=Q", bpfsys.map_lookup(fd, struct.pack("=I", 0), 8))[0]
            nbytes[action] = struct.unpack("=Q", bpfsys.map_lookup(fd, struct.pack("=I", 1), 8))[0]
        finally:
            os.close(fd)
    else:
        return _run_counts(iface, meta)
    return {"interface": iface, "mode": meta["mode"], "program": meta["program"], "prog_id": meta["prog_id"],
            "counters": "offload", "time": clock.rfc3339(), "packets": packets, "bytes": nbytes,
            "per_cpu_packets": per_cpu}


def counters(fd: int, ifindex: int, fast_fd: int | None = None) -> tuple[dict[str, int], dict[str, int], list[int]]:
    """The counters of interface `ifindex` in an `xdp_stats` map (plus, given its fd, the
    program's `xdp_stats_fast` map): packets and bytes per action, and the packets each CPU
    counted (all zero before the interface's first frame). The library (bpf/offload_stats.h)
    counts an interface per CPU in its fast slot when it holds it there, else in its hash entry
    (keyed by ifindex, so one program may serve many): the sum of both. Programs built before the
    fast slots have only the hash; a user's program may keep the older layout, a per-CPU array
    indexed by action."""
    ncpu = bpfsys.possible_cpus()
    packets, nbytes, per_cpu = dict.fromkeys(ACTIONS, 0), dict.fromkeys(ACTIONS, 0), [0] * ncpu
    info = bpfsys.map_info_fd(fd)
    if info is not None and info.type == _PERCPU_HASH and info.value_size == _ENTRY:
        raw = bpfsys.map_lookup(fd, struct.pack("=I", ifindex), _ENTRY * ncpu)
        slots = [(c, i, _ENTRY * c + 16 * i) for c in range(ncpu if raw else 0) for i in range(len(ACTIONS))]
        rows = [(raw, slots), *_fast_rows(fast_fd, ifindex, ncpu)]
    else:
        rows = []
        for i in range(len(ACTIONS)):
            raw = bpfsys.map_lookup(fd, struct.pack("=I", i), 16 * ncpu)
            rows.append((raw, [(c, i, 16 * c) for c in range(ncpu if raw else 0)]))
    for raw, slots in rows:
        for c, i, off in slots:
            p, b = struct.unpack_from("=QQ", raw, off)
            packets[ACTIONS[i]] += p
            nbytes[ACTIONS[i]] += b
            per_cpu[c] += p
    return packets, nbytes, per_cpu


def _fast_rows(fd: int | None, ifindex: int, ncpu: int) -> list[tuple[bytes, list[tuple[int, int, int]]]]:
    """(value, [(cpu, action, offset)]) of `ifindex`'s fast slot on the CPUs where it holds it
    (the slot's tag is its ifindex); none without the map or with one of another layout."""
    info = bpfsys.map_info_fd(fd) if fd is not None else None
    if info is None or info.type != _PERCPU_ARRAY or info.value_size != _FAST_ENTRY or info.max_entries < 1:
        return []
    raw = bpfsys.map_lookup(fd, struct.pack("=I", ifindex % info.max_entries), _FAST_ENTRY * ncpu)
    mine = [c for c in range(ncpu if raw else 0) if struct.unpack_from("=I", raw, _FAST_ENTRY * c)[0] == ifindex]
    return [(raw, [(c, i, _FAST_ENTRY * c + 8 + 16 * i) for c in mine for i in range(len(ACTIONS))])]


def _run_counts(iface: str, meta: dict) -> dict:
    """A program without offload's counters (a user's object): what the kernel counts for every
    program, runs and time in it, while kernel.bpf_stats_enabled is on."""
    info = bpfsys.prog_info(meta["prog_id"])
    if info is None:
        raise NotAttachedError(f"{iface}: program {meta['prog_id']} is gone", hint="offload status")
    enabled = bpfsys.stats_enabled()
    out = {"interface": iface, "mode": meta["mode"], "program": meta["program"], "prog_id": meta["prog_id"],
           "counters": "prog_info", "time": clock.rfc3339(), "bpf_stats_enabled": enabled,
           "run_cnt": info.run_cnt, "run_time_ns": info.run_time_ns}
    if not enabled:
        out["note"] = (f"{meta['program']} keeps no offload counters (no xdp_stats map) and kernel.bpf_stats_enabled "
                       "is 0, so the kernel does not count its runs: sysctl -w kernel.bpf_stats_enabled=1")
    return out


def rates(before: dict, after: dict, dt: float) -> dict:
    dt = max(dt, 1e-9)
    return {a: round((after["packets"][a] - before["packets"][a]) / dt, 1) for a in ACTIONS}


def sample(iface: str, interval: float | None = None, member: str | None = None) -> dict:
    """Counters now; with `interval`, counters after that many seconds plus the rates between."""
    t0 = time.monotonic()   # rates over the monotonic clock; `time` (RFC 3339) is for people and logs
    first = read(iface, member)
    if not interval:
        return first
    time.sleep(interval)
    t1 = time.monotonic()
    res = read(iface, member)
    if res["counters"] == "prog_info":
        dt = max(t1 - t0, 1e-9)
        return {**res, "runs_per_s": round((res["run_cnt"] - first["run_cnt"]) / dt, 1), "interval": interval}
    return {**res, "rates_pps": rates(first, res, t1 - t0), "interval": interval}
