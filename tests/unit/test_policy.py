"""Policy parsing (errors name line and field), matching, and the plan: pure, on fixtures."""

import pytest
from lib.helpers import load_fixture

from offload.orchestrate.plan import Current, make_plan
from offload.orchestrate.policy import PolicyError, parse
from offload.probe import verdicts
from offload.probe.report import Assessed

GOOD = """\
rules:
  - name: edge-filter
    match: {drivers: [mlx5_core, ice], interfaces: ["ens*"]}
    program: filter
    params: {prefixes: [192.0.2.0/24]}
    mode: {prefer: auto, min: native}
  - name: offload-anything
    match: {capabilities: [hw-offload]}
    program: count_drop
  - name: catch-all
    match: {kinds: [physical]}
    exclude: {drivers: [virtio_net]}
    program: count_pass
"""


@pytest.mark.parametrize("text,needle", [
    ("rules: [\n  {name: x, match: {interfaces: [a*]}, program: count_drop\n", "line 3"),    # YAML error
    ("rules:\n  - name: x\n    match: {interfaces: [a]}\n    program: count_drop\n    colour: red\n",
     ":2: rules[0]: Additional properties are not allowed ('colour'"),
    ("rules:\n  - name: x\n    match: {interfaces: [a]}\n    program: filter\n    params: {prefixes: [10.0.0.0/33]}\n",
     ":5: rules[0] (x): bad prefix '10.0.0.0/33'"),
    ("rules:\n  - name: x\n    match: {interfaces: [a]}\n    program: nosuch\n", ":4: rules[0] (x): program not found"),
    ("rules:\n  - name: x\n    match: {}\n    program: count_drop\n", ":3: rules[0].match"),
    ("rules:\n  - name: x\n    match: {pci: [8086-159b]}\n    program: count_drop\n", ":3: rules[0].match.pci[0]"),
    ("rules:\n  - name: x\n    match: {kinds: [veth]}\n    program: count_drop\n    mode: {prefer: generic, min: native}\n",
     "below mode.min"),
])
def test_bad_policies_name_line_and_field(text, needle):
    with pytest.raises(PolicyError) as e:
        parse(text, "p.yaml")
    assert needle in e.value.message


def evaluated(fixture):
    host, devs = load_fixture(fixture)
    from offload.probe.profiles import load
    profs, _ = load()
    return [Assessed(d, profs.get(d.driver or ""), verdicts.evaluate(d, profs.get(d.driver or ""), host))
            for d in devs.values()]


def test_first_match_wins_and_plan_says_so():
    pol = parse(GOOD)
    items = {i.interface: i for i in make_plan(pol, evaluated("mlx5_core-6.8") + evaluated("nfp-6.6"), {})}
    a = items["ens1f0np0"]
    assert (a.action, a.rule, a.program, a.mode) == ("attach", "edge-filter", "filter", "native")
    assert a.also_matched == ["catch-all"] and "also: catch-all" in a.reason
    # LRO on: native is blocked, the floor is native: the plan says it cannot be met
    b = items["ens1f1np1"]
    assert b.rule == "edge-filter" and b.mode is None and "no acceptable mode" in b.reason
    nfp = items["enp4s0np0"]
    assert (nfp.rule, nfp.mode) == ("offload-anything", "hw")
    assert items["enp5s0np0"].rule == "catch-all"           # no hw-offload without the BPF firmware


def test_exclusion_and_no_match():
    items = make_plan(parse(GOOD), evaluated("virtio_net-6.18"), {})
    assert items == []                                       # eth0 excluded by driver, lo never matched


def test_keep_replace_detach_conflict():
    from offload.load import programs
    pol = parse(GOOD)
    ev = evaluated("ice-6.6")
    prog = programs.resolve("filter", {"prefixes": "192.0.2.0/24"})
    same = {"program": "filter", "sha256": prog.sha256, "params": prog.params, "mode": "native",
            "managed_by": "edge-filter"}
    (keep,) = make_plan(pol, ev, {"ens2f0": Current(ours=same)})
    assert keep.action == "keep"
    (rep,) = make_plan(pol, ev, {"ens2f0": Current(ours={**same, "params": {"prefixes": "198.51.100.0/24"}})})
    assert rep.action == "replace" and "parameters changed" in rep.reason
    (low,) = make_plan(pol, ev, {"ens2f0": Current(ours={**same, "mode": "generic"})})
    assert low.action == "replace" and "not acceptable" in low.reason
    (conf,) = make_plan(pol, ev, {"ens2f0": Current(foreign={"native": 77})})
    assert conf.action == "conflict" and "77" in conf.reason
    other = parse("rules:\n  - name: y\n    match: {interfaces: [nothing*]}\n    program: count_drop\n")
    (gone,) = make_plan(other, ev, {"ens2f0": Current(ours=same)})
    assert gone.action == "detach" and "edge-filter" in gone.reason
