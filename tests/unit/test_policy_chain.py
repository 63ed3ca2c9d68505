"""Chain rules (`programs:`, several programs in libxdp's dispatcher): their validation, the
schema as any validator reads it, and the plan over recorded facts (ice-6.6: native supported).
Pure: no kernel."""

import json
from importlib import resources

import jsonschema
import pytest
import yaml
from lib.schemas import validate

from offload import jsondoc
from offload.load import programs
from offload.orchestrate.plan import Current, Running, make_plan
from offload.orchestrate.policy import PolicyError, parse
from test_policy import evaluated

CHAIN = """\
rules:
  - name: shared
    match: {interfaces: ["ens*"]}
    programs:
      - {program: count_pass, priority: 10}
      - {program: filter, priority: 20, chain: [pass]}
"""
DISPATCHER = 501   # the dispatcher's prog id in the fixtures below


def rule_text(extra: str = "", programs_: str = "[{program: count_pass, priority: 10}]") -> str:
    return f"rules:\n  - name: x\n    match: {{interfaces: [a]}}\n    programs: {programs_}\n{extra}"


@pytest.mark.parametrize("text, needle", [
    ("rules:\n  - name: x\n    match: {interfaces: [a]}\n",
     "p.yaml:2: rules[0]: a rule needs `program` (one program alone) or `programs`"),
    (rule_text("    program: count_pass\n"), "p.yaml:2: rules[0]: a rule needs `program`"),
    (rule_text(programs_="[{program: count_pass, priority: 1}, {program: count_pass, priority: 2}]"),
     ":4: rules[0] (x): programs[1] is count_pass again (as programs[0])"),
    (rule_text("    mode: {prefer: hw}\n"), "rules[0] (x): mode prefer hw: a chain is never offloaded"),
    (rule_text("    mode: {min: hw}\n"), "rules[0] (x): mode min hw: a chain is never offloaded"),
    (rule_text(programs_="[{program: filter, priority: 1, params: {prefixes: [10.0.0.0/8]}}]"),
     "rules[0] (x): programs[0]: filter: parameters that live in maps"),
    (rule_text(programs_="[{program: nosuch, priority: 1}]"), ":4: rules[0] (x): programs[0]: program not found"),
    (rule_text(programs_="[{program: count_pass, priority: 1, chain: [teleport]}]"),
     ":4: rules[0].programs[0].chain[0]: 'teleport' is not one of"),
    (rule_text(programs_="[{program: count_pass, priority: -1}]"), "rules[0].programs[0].priority"),
    (rule_text(programs_="[{program: count_pass}]"), "'priority' is a required property"),
    (rule_text("    allow_single: true\n", "[{program: count_pass, priority: 1}, {program: count_drop, priority: 2}]"),
     "rules[0] (x): allow_single with 2 programs"),
    ("rules:\n  - name: x\n    match: {interfaces: [a]}\n    program: count_pass\n    allow_single: true\n",
     "rules[0] (x): allow_single is for a chain rule"),
])
def test_bad_chain_rules_name_the_rule_and_what_to_do(text, needle):
    with pytest.raises(PolicyError) as e:
        parse(text, "p.yaml")
    assert needle in e.value.message, e.value.message


def test_chain_rule_parses_beside_single_rules():
    pol = parse(CHAIN + "  - name: alone\n    match: {kinds: [veth]}\n    program: count_drop\n")
    chain, alone = pol.rules
    assert [(m.key, m.priority, m.chain) for m in chain.members] == [("count_pass", 10, ("pass",)),
                                                                     ("filter", 20, ("pass",))]
    assert chain.program == "" and not chain.allow_single
    assert (alone.program, alone.members) == ("count_drop", ())


def test_any_json_schema_validator_reads_a_chain_policy():
    schema = json.loads(resources.files("offload").joinpath("schemas/policy.schema.json").read_text())
    jsonschema.validate(yaml.safe_load(CHAIN), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load(rule_text("    program: count_pass\n")), schema)


def record(key: str, prog: programs.Program, rule: str = "shared") -> dict:
    return {"member": key, "program": prog.name, "sha256": prog.sha256, "params": prog.params, "managed_by": rule,
            "mode": "native"}


def ours(key: str, prog_id: int, priority: int, actions=("pass",), rule: str = "shared") -> Running:
    return Running(prog_id, key, priority, list(actions), record(key, programs.resolve(key, {}), rule))


def on_dispatcher(*chain: Running, mode: str = "native") -> dict[str, Current]:
    return {"ens2f0": Current(foreign={mode: DISPATCHER}, dispatcher=mode, chain=list(chain))}


def plan_of(text: str = CHAIN, current: dict | None = None, refusal: str | None = None):
    (item,) = make_plan(parse(text), evaluated("ice-6.6"), current or {}, refusal)
    validate({"schema_version": 1, "policy": "p.yaml", "plan": [item.to_dict()]}, "plan")
    return item


def rows(item) -> list[tuple]:
    return [(r["state"], r["member"] or r["program"], r["priority"]) for r in item.chain.members]


def test_a_new_chain_runs_in_native_never_hw():
    item = plan_of()
    assert (item.action, item.mode, item.program, item.rule) == ("attach", "native", "count_pass,filter", "shared")
    assert rows(item) == [("add", "count_pass", 10), ("add", "filter", 20)]
    assert item.not_tried[0]["mode"] == "hw" and "a chain is never offloaded" in item.not_tried[0]["reason"]
    assert item.fallback == "generic" and item.chain.modes == ["native", "generic"]
    assert [m.key for m, _ in item.chain.add] == ["count_pass", "filter"]


def test_foreign_programs_are_shown_in_run_order_and_left_alone():
    theirs = Running(77, "xdp_firewall", 15, ["pass", "drop"])
    item = plan_of(current=on_dispatcher(theirs))
    assert item.action == "attach"
    assert rows(item) == [("add", "count_pass", 10), ("foreign", "xdp_firewall", 15), ("add", "filter", 20)]
    assert not item.chain.remove and not item.chain.members[1]["ours"]


def test_a_chain_as_wanted_is_kept():
    theirs = Running(77, "xdp_firewall", 15, ["pass"])
    item = plan_of(current=on_dispatcher(ours("count_pass", 61, 10), theirs, ours("filter", 62, 20)))
    assert item.action == "keep" and not item.chain.add and not item.chain.remove
    assert rows(item) == [("running", "count_pass", 10), ("foreign", "xdp_firewall", 15), ("running", "filter", 20)]


def test_changes_replace_only_offload_s_members():
    theirs = Running(77, "xdp_firewall", 15, ["pass"])
    moved = plan_of(current=on_dispatcher(ours("count_pass", 61, 5), theirs, ours("filter", 62, 20, ["drop"])))
    assert moved.action == "replace"
    assert rows(moved) == [("replace", "count_pass", 10), ("foreign", "xdp_firewall", 15), ("replace", "filter", 20)]
    # a program dropped from the rule leaves; the foreign one stays, as does a program kept
    fewer = CHAIN.replace("      - {program: filter, priority: 20, chain: [pass]}\n", "")
    item = plan_of(fewer, on_dispatcher(ours("count_pass", 61, 10), theirs, ours("filter", 62, 20)))
    assert item.action == "replace" and item.chain.remove == [{"member": "filter", "prog_id": 62}]
    assert rows(item) == [("running", "count_pass", 10), ("foreign", "xdp_firewall", 15), ("remove", "filter", 20)]
    # another rule's member, or one attached by hand (`attach --priority`), is offload's: replaced
    by_hand = Running(63, "count_pass", 10, ["pass"], {**record("count_pass", programs.resolve("count_pass", {})),
                                                       "member": None, "managed_by": None})
    item = plan_of(fewer, on_dispatcher(by_hand))
    assert item.chain.remove == [{"member": None, "prog_id": 63}] and [m.key for m, _ in item.chain.add] == ["count_pass"]


def test_conflicts_a_lone_foreign_program_and_a_dispatcher_in_another_mode():
    lone = plan_of(current={"ens2f0": Current(foreign={"native": 77})})
    assert lone.action == "conflict" and "outside libxdp's dispatcher" in lone.reason and "77" in lone.reason
    native_only = CHAIN + "    mode: {prefer: native}\n"
    other = plan_of(native_only, on_dispatcher(Running(77, "fw", 15, ["pass"]), mode="generic"))
    assert other.action == "conflict" and other.mode is None and "runs in generic" in other.reason


def test_offload_s_lone_program_makes_way_for_the_chain():
    prog = programs.resolve("count_pass", {})
    item = plan_of(current={"ens2f0": Current(ours={**record("count_pass", prog), "member": None})})
    assert item.action == "replace" and "makes way for the chain" in item.reason
    assert rows(item) == [("add", "count_pass", 10), ("add", "filter", 20)]


REFUSED = "the kernel refuses to load BPF_PROG_TYPE_EXT (freplace) programs: Operation not permitted"


def test_where_the_kernel_refuses_freplace_nothing_is_attached_unless_allow_single():
    item = plan_of(refusal=REFUSED)
    assert item.mode is None and item.chain.refused == REFUSED and "nothing will be attached" in item.reason
    one = CHAIN.replace("      - {program: filter, priority: 20, chain: [pass]}\n", "")
    assert plan_of(one, refusal=REFUSED).chain.refused == REFUSED      # one program: still never silently alone
    alone = plan_of(one + "    allow_single: true\n", refusal=REFUSED)
    assert (alone.action, alone.chain, alone.program, alone.mode) == ("attach", None, "count_pass", "native")
    assert "alone, not in a chain (allow_single)" in alone.reason and REFUSED in alone.reason
    prog = programs.resolve("count_pass", {})
    kept = plan_of(one + "    allow_single: true\n", {"ens2f0": Current(ours={**record("count_pass", prog),
                                                                                 "member": None})}, REFUSED)
    assert kept.action == "keep"                                       # a second apply changes nothing


def test_no_rule_matches_any_more_only_offload_s_members_leave():
    other = "rules:\n  - name: y\n    match: {interfaces: [nothing*]}\n    program: count_drop\n"
    theirs = Running(77, "xdp_firewall", 15, ["pass"])
    item = plan_of(other, on_dispatcher(ours("count_pass", 61, 10), theirs))
    assert (item.action, item.rule) == ("detach", "shared")
    assert item.chain.remove == [{"member": "count_pass", "prog_id": 61}]
    assert rows(item) == [("remove", "count_pass", 10), ("foreign", "xdp_firewall", 15)]
    # a single-program rule does not take over a dispatcher where another tool's program runs too
    single = "rules:\n  - name: y\n    match: {interfaces: [ens*]}\n    program: count_drop\n"
    conf = plan_of(single, on_dispatcher(ours("count_pass", 61, 10), theirs))
    assert conf.action == "conflict" and "offload detach ens2f0" in conf.reason


def test_the_plan_document_carries_the_chain():
    doc = plan_of(current=on_dispatcher(Running(77, "fw", 15, ["pass"]))).to_dict()
    assert doc["chain"]["mode"] == "native" and doc["chain"]["refused"] is None
    assert [m["state"] for m in doc["chain"]["members"]] == ["add", "foreign", "add"]
    assert jsondoc.schema("plan")["properties"]["plan"]["items"]["properties"]["chain"]


def test_plan_for_a_person_lists_the_chain_under_its_interface_in_run_order():
    import io

    from rich.console import Console

    from offload.orchestrate import render

    item = plan_of(current=on_dispatcher(ours("count_pass", 61, 5), Running(77, "xdp_firewall", 15, ["pass", "drop"])))
    out = io.StringIO()
    render.plan({"plan": [item.to_dict()]}, Console(file=out, width=140))
    lines = [ln for ln in out.getvalue().splitlines() if "└" in ln]
    assert [ln.split()[1:3] for ln in lines] == [["replace", "count_pass"], ["foreign", "xdp_firewall"],
                                                 ["add", "filter"]]
    assert "prio 15, on pass,drop next (prog 77, another tool's)" in lines[1]
