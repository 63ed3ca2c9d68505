"""Which XDP modes an interface can take, and which one to use: pure functions over plain facts.

Reasons are drawn in a fixed order: the kernel's xdp-features (netdev family), then the driver
profile, then precondition checks on the current settings. Every reason says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from offload.kernel.version import parse_version
from offload.probe.facts import DeviceFacts, HostFacts
from offload.probe.mode import AUTO, CHOICES, MODES, Mode, better, fallback_order  # noqa: F401 (the vocabulary)
from offload.probe.profiles import Profile

SUPPORTED, UNSUPPORTED, BLOCKED, UNKNOWN = "supported", "unsupported", "blocked", "unknown"
_PROFILE_KEY = {"hw": "hw_offload", "native": "native"}
_KERNEL_FLAG = {"hw": "hw-offload", "native": "basic"}
_WORDS = {"hw": "hardware offload", "native": "native (driver) XDP"}
GENERIC_SINCE = (4, 12)


@dataclass
class ModeVerdict:
    status: str
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # true and worth knowing, but not blocking
    blockers: list[str] = field(default_factory=list)  # the reasons (also in `reasons`) that block

    def block(self, reason: str) -> None:
        self.status = BLOCKED
        self.reasons.append(reason)
        self.blockers.append(reason)

    @property
    def reason(self) -> str:
        """The one reason that decides the status."""
        return self.blockers[0] if self.blockers else (self.reasons[0] if self.reasons else self.status)

    def to_dict(self) -> dict:
        return {"status": self.status, "reason": self.reason, "reasons": self.reasons, "notes": self.notes}


def _ver(v: tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


def _from_kernel(mode: str, f: DeviceFacts) -> ModeVerdict | None:
    if f.xdp_features is None:
        return None
    flag = _KERNEL_FLAG[mode]
    if flag in f.xdp_features:
        return ModeVerdict(SUPPORTED, [f"the kernel reports '{flag}' in {f.name}'s xdp-features"])
    drv = f.driver or "unknown driver"
    if mode == "hw":
        why = (f"the kernel reports no 'hw-offload' in {f.name}'s xdp-features ({drv}); "
               "only offload-capable NICs (nfp, netdevsim) take hw mode: use native or generic")
    else:
        why = (f"the kernel reports no native XDP ('basic' missing from xdp-features) for {f.name} ({drv}); "
               "use generic mode, or a NIC/driver with XDP support")
    return ModeVerdict(UNSUPPORTED, [why])


def _from_profile(mode: str, f: DeviceFacts, p: Profile | None, host: HostFacts,
                  kernel: ModeVerdict | None) -> ModeVerdict:
    words, drv = _WORDS[mode], f.driver or "unknown"
    if p is None:
        if kernel is not None:
            return kernel
        return ModeVerdict(UNKNOWN, [
            f"no driver profile for '{drv}' and this kernel ({host.kernel}) has no netdev xdp-features "
            f"(Linux >= 6.3): {words} cannot be told beforehand; try it explicitly with --mode {mode}"])
    cap = p.capability(_PROFILE_KEY[mode])
    since = parse_version(cap["since"]) if cap.get("supported") else None
    src = cap.get("source") or cap.get("note") or p.path
    if kernel is not None:
        if kernel.status == UNSUPPORTED and since and host.kernel_version >= since:
            if cap.get("advertised", True) is False:
                return ModeVerdict(SUPPORTED, [
                    f"driver profile: '{drv}' has {words} since Linux {_ver(since)} but does not advertise it in "
                    f"xdp-features ({src})"])
            # Drivers clear their xdp-features while a conflicting setting is on (mlx5 with LRO):
            # name that setting rather than "unsupported".
            probe = ModeVerdict(SUPPORTED)
            for req in p.requirements:
                if mode in req["modes"] and req["severity"] == "block":
                    _requirement(req, mode, f, host, probe)
            if probe.status == BLOCKED:
                return ModeVerdict(BLOCKED, kernel.reasons + probe.reasons, blockers=probe.blockers)
            kernel.notes.append(
                f"the '{drv}' profile says {words} exists since Linux {_ver(since)} ({src}); the kernel does not "
                "report it for this device: check firmware and device configuration")
        return kernel
    if since is None:
        return ModeVerdict(UNSUPPORTED, [f"driver profile: '{drv}' has no {words} ({src})"])
    if host.kernel_version < since:
        return ModeVerdict(UNSUPPORTED, [
            f"driver profile: '{drv}' gained {words} in Linux {_ver(since)}, this kernel is {host.kernel}: "
            "upgrade the kernel or use a lower mode"])
    return ModeVerdict(SUPPORTED, [f"driver profile: '{drv}' has {words} since Linux {_ver(since)} ({src}); "
                                   "this kernel has no netdev xdp-features to confirm it"])


def _frags_capable(f: DeviceFacts, p: Profile | None, host: HostFacts) -> bool:
    if f.xdp_features is not None:
        return "rx-sg" in f.xdp_features
    cap = p.capability("multi_buffer") if p else {}
    return bool(cap.get("supported")) and host.kernel_version >= parse_version(cap["since"])


def _mtu_check(f: DeviceFacts, p: Profile | None, host: HostFacts, v: ModeVerdict) -> None:
    limit = p.limit("native_mtu_max") if p else None
    if not limit:
        return
    on_peer = bool(p.limit("native_mtu_checks_peer")) and f.peer is not None and f.peer.get("mtu") is not None
    mtu = f.peer["mtu"] if on_peer else f.mtu
    whose = f"the peer {f.peer['name']}'s MTU" if on_peer else "MTU"
    if mtu <= limit["value"]:
        return
    frags = ("or load a frags-aware program (the driver supports multi-buffer XDP)"
             if _frags_capable(f, p, host) else "the driver has no multi-buffer XDP here")
    v.block(
        f"{whose} {mtu} exceeds {f.driver}'s native XDP limit of {limit['value']} bytes for programs without "
        f"frags support: lower the MTU to {limit['value']} (ip link set dev "
        f"{f.peer['name'] if on_peer else f.name} mtu {limit['value']}) {frags}")


def _requirement(req: dict, mode: str, f: DeviceFacts, host: HostFacts, v: ModeVerdict) -> None:
    fix = req["fix"].replace("{dev}", f.name)
    check, failed, what = req["check"], False, ""
    ch = f.channels or {}
    count = ch.get("combined") or ch.get("rx") or 0
    cmax = ch.get("combined_max") or ch.get("rx_max") or 0
    if check == "feature_off":
        failed = req["feature"] in f.features_active
        fixed = " (the driver does not let it change)" if req["feature"] in f.features_fixed else ""
        what = f"{req['feature']} is on{fixed}"
    elif check == "feature_fixed_on":
        failed = req["feature"] in f.features_active and req["feature"] in f.features_fixed
        what = f"{req['feature']} is on and fixed"
    elif check == "channels_at_most_half_max" and f.channels:
        failed = cmax > 0 and count > cmax // 2
        what = f"{count} channels in use of {cmax}"
    elif check == "channels_at_least_cpus" and f.channels:
        failed = 0 < count < host.cpus
        what = f"{count} channels for {host.cpus} CPUs"
    elif check == "channels_combined" and f.channels:
        failed = bool(ch.get("rx") or ch.get("tx")) and not ch.get("combined")
        what = f"separate rx/tx channels (rx {ch.get('rx')}, tx {ch.get('tx')})"
    elif check == "rx_queues_at_least_peer_tx" and f.peer and f.peer.get("num_tx_queues"):
        failed = (f.num_rx_queues or 0) < f.peer["num_tx_queues"]
        what = f"{f.num_rx_queues} rx queues against {f.peer['num_tx_queues']} tx queues on the peer"
    elif check == "note":
        prefix = "if this applies, the kernel refuses the attach: " if req["severity"] == "block" else ""
        v.notes.append(f"{prefix}{req['why']} Fix: {fix}")
        return
    if not failed:
        return
    text = f"{what} on {f.name}: {req['why']} Fix: {fix}"
    if req["severity"] == "block":
        v.block(text)
    else:
        v.notes.append(text)


def offload_map_limit(p: Profile | None) -> str | None:
    """What the device takes as offloaded maps, in words, from the driver profile."""
    lim = p.limit("hw_offload_maps") if p else None
    if not lim:
        return None
    most = f" of at most {lim['max_entries']} entries" if lim.get("max_entries") else ""
    return (f"{p.driver} offloads only {' and '.join(t.upper() for t in lim['types'])} maps{most} "
            f"(per-CPU, LPM trie and other maps stay on the host: such programs fall back) ({lim['source']})")


def _preconditions(mode: str, f: DeviceFacts, p: Profile | None, host: HostFacts, v: ModeVerdict) -> None:
    if mode == "native":
        _mtu_check(f, p, host, v)
    if mode == "hw" and (limit := offload_map_limit(p)):
        v.notes.append(limit)
    for req in p.requirements if p else []:
        if mode in req["modes"]:
            _requirement(req, mode, f, host, v)
    # The kernel keeps native and generic exclusive on one device (dev_xdp_attach()).
    other = {"native": "generic", "generic": "native"}.get(mode)
    for a in f.attached:
        if a["mode"] == other:
            v.block(
                f"a {other} XDP program (id {a['prog_id']}, {a.get('name') or 'unnamed'}) is attached to {f.name} "
                f"and the kernel allows only one of native and generic at a time: detach it first")
    if mode != "generic" and (not f.admin_up or f.oper_state == "DOWN"):
        v.notes.append(f"{f.name} is {'administratively down' if not f.admin_up else 'down (no carrier)'}: "
                       f"a program attaches but sees no traffic until the link is up (ip link set dev {f.name} up)")


def evaluate(f: DeviceFacts, p: Profile | None, host: HostFacts) -> dict[str, ModeVerdict]:
    """Status and reasons for hw, native and generic on one interface."""
    out: dict[str, ModeVerdict] = {}
    for mode in ("hw", "native"):
        out[mode] = _from_profile(mode, f, p, host, _from_kernel(mode, f))
    if host.kernel_version >= GENERIC_SINCE:
        out["generic"] = ModeVerdict(SUPPORTED, ["generic (skb) XDP works on every device; it is the slowest mode"])
    else:
        out["generic"] = ModeVerdict(UNSUPPORTED, [f"generic XDP needs Linux 4.12; this kernel is {host.kernel}"])
    for mode, v in out.items():
        if v.status == SUPPORTED:
            _preconditions(mode, f, p, host, v)
    return out


def recommend(verdicts: dict[str, ModeVerdict]) -> dict:
    """The best mode that is supported, with its reason and why each better mode was passed over."""
    passed = []
    for mode in MODES:
        v = verdicts[mode]
        if v.status == SUPPORTED:
            reason = f"{mode}: {v.reason}"
            if passed:
                reason += " (passed over: " + ", ".join(f"{m} {s}" for m, s, _ in passed) + ")"
            return {"mode": mode, "reason": reason,
                    "passed_over": [{"mode": m, "status": s, "reason": r} for m, s, r in passed]}
        passed.append((mode, v.status, v.reason))
    return {"mode": None, "reason": "no XDP mode is available: " + "; ".join(f"{m}: {r}" for m, _, r in passed),
            "passed_over": [{"mode": m, "status": s, "reason": r} for m, s, r in passed]}
