"""/metrics over a chain: each of offload's members in libxdp's dispatcher is exported with its
own counters under a `member` label (the status and stats reads replaced by plain data)."""

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from offload.orchestrate import metrics

PROG = {"tag": "0123456789abcdef", "name": None, "program": None, "ours": False, "member": None}
STATUS = {"attachments": [{
    **PROG, "interface": "ens2f0", "mode": "native", "prog_id": 501, "name": "xdp_dispatcher", "dispatcher": {
        "programs": [
            {**PROG, "prog_id": 61, "name": "count_pass", "program": "count_pass", "ours": True, "member": "count_pass"},
            {**PROG, "prog_id": 77, "name": "xdp_firewall"},
            {**PROG, "prog_id": 62, "name": "count_drop", "program": "count_drop", "ours": True, "member": "count_drop"},
            {**PROG, "prog_id": 63, "name": "count_drop", "ours": True, "member": "count_drop",
             "leftover": "a killed run's"}]}}]}
PACKETS = {"count_pass": 10, "count_drop": 7}


def read(iface: str, member: str | None = None) -> dict:
    assert (iface, member in PACKETS) == ("ens2f0", True)
    n = PACKETS[member]
    return {"counters": "offload", "program": member, "packets": {"pass": n, "drop": n + 1, "aborted": 0, "tx": 0,
                                                                  "redirect": 0},
            "bytes": {"pass": 64 * n, "drop": 0, "aborted": 0, "tx": 0, "redirect": 0}}


def samples(monkeypatch) -> list:
    monkeypatch.setattr(metrics.status_mod, "status", lambda: STATUS)
    monkeypatch.setattr(metrics.stats_mod, "read", read)
    monkeypatch.setattr(metrics.bpfsys, "stats_enabled", lambda: False)
    monkeypatch.setattr(metrics.netns, "current_name", lambda: "default")
    reg = CollectorRegistry()
    reg.register(metrics.OffloadCollector())
    return [s for f in text_string_to_metric_families(generate_latest(reg).decode()) for s in f.samples]


def test_each_chain_member_is_counted_under_its_key(monkeypatch):
    got = samples(monkeypatch)
    pkts = {(s.labels["member"], s.labels["action"]): s.value for s in got if s.name == "offload_xdp_packets_total"}
    assert pkts[("count_pass", "pass")] == 10 and pkts[("count_drop", "drop")] == 8
    assert {m for m, _ in pkts} == {"count_pass", "count_drop"}   # the foreign one and the leftover: no counters
    info = {(s.labels["prog_id"], s.labels["owner"], s.labels["member"]) for s in got
            if s.name == "offload_xdp_program_info"}
    assert info == {("501", "foreign", ""), ("61", "offload", "count_pass"), ("77", "foreign", ""),
                    ("62", "offload", "count_drop")}
    errors = [s.value for s in got if s.name == "offload_xdp_read_errors"]
    assert errors == [0]
