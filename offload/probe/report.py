"""`offload probe`: facts + profiles + decisions -> the documented report (schema_version 1)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from offload.kernel import netns
from offload.probe import facts as facts_mod
from offload.probe import profiles, verdicts
from offload.probe.facts import RELEVANT_FEATURES, DeviceFacts, HostFacts

SCHEMA_VERSION = 1


def interface_report(f: DeviceFacts, p: profiles.Profile | None, host: HostFacts) -> dict:
    judged = verdicts.evaluate(f, p, host)
    active, fixed = set(f.features_active), set(f.features_fixed)
    features = {
        name: {"active": name in active, "fixed": name in fixed}
        for name in RELEVANT_FEATURES if name in active or name in fixed
    }
    return {
        "name": f.name,
        "ifindex": f.ifindex,
        "kind": f.kind,
        "driver": f.driver,
        "driver_version": f.driver_version,
        "firmware_version": f.firmware_version,
        "bus_info": f.bus_info,
        "pci": f.pci,
        "devlink": f.devlink,
        "profile": p.driver if p else None,
        "state": {"admin_up": f.admin_up, "oper_state": f.oper_state},
        "mtu": f.mtu,
        "min_mtu": f.min_mtu,
        "max_mtu": f.max_mtu,
        "peer": f.peer,
        "queues": {"rx": f.num_rx_queues, "tx": f.num_tx_queues},
        "channels": f.channels,
        "rings": f.rings,
        "features": features,
        "xdp": {
            "features": f.xdp_features,
            "features_source": "netdev-netlink" if f.xdp_features is not None else "unavailable",
            "zc_max_segs": f.xdp_zc_max_segs,
            "attached": f.attached,
        },
        "modes": {m: judged[m].to_dict() for m in verdicts.MODES},
        "recommended": verdicts.recommend(judged),
    }


def report(host: HostFacts, devices: list[DeviceFacts], profs: dict[str, profiles.Profile],
           problems: list[profiles.ProfileProblem]) -> dict:
    warnings = [f"driver profile skipped: {p}" for p in problems]
    if not host.netdev_family:
        warnings.append(
            f"kernel {host.kernel} has no netdev generic-netlink family (Linux >= 6.3): XDP features come from "
            "the driver profiles only")
    return {
        "schema_version": SCHEMA_VERSION,
        "host": {"kernel": host.kernel, "netdev_family": host.netdev_family, "cpus": host.cpus},
        "interfaces": [interface_report(f, profs.get(f.driver or ""), host) for f in devices],
        "warnings": warnings,
    }


def collect(names: list[str] | None = None) -> tuple[HostFacts, list[DeviceFacts]]:
    """Facts of the current namespace's interfaces (all, or those named, in that order)."""
    host, devices = facts_mod.gather(names)
    if names:
        found = {d.name for d in devices}
        missing = [n for n in names if n not in found]
        if missing:
            raise netns.no_such_interface(*missing)
        order = {n: i for i, n in enumerate(names)}
        devices.sort(key=lambda d: order[d.name])
    return host, devices


@dataclass
class Assessed:
    """One interface as the decisions see it: its facts, its driver's profile, the verdicts."""

    facts: DeviceFacts
    profile: profiles.Profile | None
    verdicts: dict[str, verdicts.ModeVerdict]


def assess(names: list[str] | None = None, include_loopback: bool = True) -> tuple[HostFacts, list[Assessed]]:
    """Facts, profile and per-mode verdicts of the namespace's interfaces (all, or those named):
    what attach, bench, plan and the exports decide from."""
    host, devices = collect(names)
    if not include_loopback:
        devices = [d for d in devices if d.kind != "loopback"]
    profs, _ = profiles.load(drivers={d.driver for d in devices if d.driver})
    out = []
    for d in devices:
        p = profs.get(d.driver or "")
        out.append(Assessed(d, p, verdicts.evaluate(d, p, host)))
    return host, out


def facts_document(host: HostFacts, devices: list[DeviceFacts]) -> dict:
    """The raw facts, as recorded in test fixtures (tests/fixtures/*.json)."""
    return {"host": asdict(host), "devices": [d.to_dict() for d in devices]}


def probe(names: list[str] | None = None, profiles_dir: Path | None = None) -> dict:
    """Probe the current network namespace (all interfaces, or those named)."""
    host, devices = collect(names)
    # Only the profiles of drivers present: a malformed one is still reported (and every file is
    # checked by `offload profiles --check`), and a probe does not pay for 28 validations.
    profs, problems = profiles.load(profiles_dir, {d.driver for d in devices if d.driver})
    return report(host, devices, profs, problems)
