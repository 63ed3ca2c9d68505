"""The probe's JSON document over every recorded fixture, against the document recorded before
the probe's per-interface work was cut (issue 24): a faster probe must say exactly the same.
Pure: no kernel needed. Re-record (only for an intended change of content) with
OFFLOAD_RECORD_GOLDEN=1."""

import hashlib
import json
import os

import pytest
from lib.helpers import FIXTURES

from offload import jsondoc
from offload.probe.facts import DeviceFacts, HostFacts
from offload.probe.report import report

GOLDEN = FIXTURES / "probe-reports"
FACTS = sorted(p.stem for p in FIXTURES.glob("*-*.json") if "devices" in json.loads(p.read_text()))


def document(name: str, profs) -> str:
    doc = json.loads((FIXTURES / f"{name}.json").read_text())
    devices = [DeviceFacts.from_dict(d) for d in doc["devices"]]
    profiles, problems = profs
    return json.dumps(jsondoc.document("probe", report(HostFacts(**doc["host"]), devices, profiles, problems)))


def test_every_facts_fixture_has_a_recorded_document():
    assert FACTS, "no facts fixtures found"
    assert sorted(p.stem for p in GOLDEN.glob("*-*.json")) == FACTS


@pytest.mark.parametrize("name", FACTS)
def test_probe_document_unchanged(name, shipped_profiles):
    got = document(name, shipped_profiles)
    path = GOLDEN / f"{name}.json"
    if os.environ.get("OFFLOAD_RECORD_GOLDEN"):
        path.write_text(json.dumps(json.loads(got), indent=1) + "\n")
        pytest.skip("recorded the golden document: run again without OFFLOAD_RECORD_GOLDEN to compare")
    # compared as the bytes `offload probe --json` prints: same keys, same order, same values
    assert got == json.dumps(json.loads(path.read_text()))


# Variants of every recorded device: what one interface shares with the next (driver, features,
# MTU, peer, programs, state) varies one piece at a time, so that work shared between interfaces
# (memoised decodes and verdicts) is seen to keep each interface's own answer.
VARIANTS = {
    "same": {},
    "mtu9000": {"mtu": 9000},
    "down": {"admin_up": False, "oper_state": "DOWN"},
    "nocarrier": {"oper_state": "DOWN"},
    "lro": {"features_active": ["large-receive-offload", "rx-gro-hw"], "features_fixed": ["rx-gro-hw"]},
    "generic-on": {"attached": [{"mode": "generic", "prog_id": 7, "name": "xdp_prog"}]},
    "native-on": {"attached": [{"mode": "native", "prog_id": 8, "name": None}]},
    "channels": {"channels": {"rx": 0, "tx": 0, "other": 1, "combined": 8, "rx_max": 0, "tx_max": 0,
                              "other_max": 1, "combined_max": 8}},
    "no-xdp-features": {"xdp_features": None},
    "peer9000": {"peer": {"ifindex": 99, "netnsid": None, "name": "far-peer", "mtu": 9000, "num_tx_queues": 4}},
}


def variant_documents() -> dict[str, tuple[HostFacts, list[DeviceFacts]]]:
    out = {}
    for name in FACTS:
        doc = json.loads((FIXTURES / f"{name}.json").read_text())
        devices = []
        for label, change in VARIANTS.items():
            for d in doc["devices"]:
                devices.append(DeviceFacts.from_dict({**d, **change, "name": f"{d['name']}-{label}"[:15]}))
        out[name] = (HostFacts(**doc["host"]), devices)
    return out


def test_variants_unchanged(shipped_profiles):
    """Each interface's part of the document, as a SHA-256 of its bytes, against the recording."""
    profiles, problems = shipped_profiles
    got = {}
    for name, (host, devices) in variant_documents().items():
        for i in report(host, devices, profiles, problems)["interfaces"]:
            got[f"{name}/{i['name']}"] = hashlib.sha256(json.dumps(i).encode()).hexdigest()
    path = GOLDEN / "variants.sha256.json"
    if os.environ.get("OFFLOAD_RECORD_GOLDEN"):
        path.write_text(json.dumps(got, indent=1) + "\n")
        pytest.skip("recorded the golden hashes: run again without OFFLOAD_RECORD_GOLDEN to compare")
    want = json.loads(path.read_text())
    assert list(got) == list(want)
    assert [k for k in got if got[k] != want[k]] == []
