"""A SIGKILL of a chain member's attach or replacement: which of the dispatcher's programs are
offload's leftovers (load.ownership.leftovers) and what the plan does with them. Pure: plain data."""

from offload.load.ownership import SlotView, leftovers
from offload.load.pins import Slot
from offload.orchestrate.plan import Running
from test_policy_chain import on_dispatcher, ours, plan_of, rows

K = Slot("default", "ens2f0", "count_pass")
THEIRS = {"prog_id": 77, "name": "xdp_firewall", "priority": 15, "chain_call_actions": ["pass"]}


def prog(prog_id: int, priority: int = 10, name: str = "count_pass") -> dict:
    return {"prog_id": prog_id, "name": name, "priority": priority, "chain_call_actions": ["pass"]}


def record(prog_id: int, **extra) -> dict:
    return {"prog_id": prog_id, "member": "count_pass", "chain": {"priority": 10, "chain_call_actions": ["pass"]},
            **extra}


def test_a_staged_member_never_committed_is_a_leftover_and_the_live_member_is_not():
    # killed after staging the replacement (61 -> 62), before the pins were committed
    views = [SlotView(K, 61, 62, record(61), record(62, replaces=61))]
    got = leftovers([prog(61), THEIRS, prog(62)], views)
    assert list(got) == [62] and got[62].slot == K and got[62].stage


def test_the_member_a_committed_one_replaces_is_a_leftover():
    # killed after the commit, before the replaced member left
    views = [SlotView(K, 62, None, record(62, replaces=61), None)]
    got = leftovers([prog(61), THEIRS, prog(62)], views)
    assert list(got) == [61] and not got[61].stage and "replaced by program 62" in got[61].why


def test_a_program_libxdp_added_before_its_pins_is_found_by_the_write_ahead():
    intent = record(0, replaces=61, pending={"before": [61, 77], "name": "count_pass"})
    views = [SlotView(K, 61, None, record(61), intent)]
    assert list(leftovers([prog(61), THEIRS, prog(62)], views)) == [62]
    # a foreign program that was there before, or looks otherwise, is never one
    assert leftovers([prog(61), THEIRS, prog(62, priority=11)], views) == {}
    assert leftovers([prog(61), THEIRS, prog(62, name="other")], views) == {}
    # two new alike: which is ours is unknown, so neither is touched
    assert leftovers([prog(61), THEIRS, prog(62), prog(63)], views) == {}
    # one loaded long after the write-ahead (a kill before libxdp added ours left it stale) is another's
    stamped = [SlotView(K, 61, None, record(61), {**intent, "attached_at": "2026-12-02T14:00:00.000000Z"})]
    soon, late = ({**prog(62), "loaded_at": f"2026-12-02T14:{m}:00.000000Z"} for m in ("00", "30"))
    assert list(leftovers([prog(61), THEIRS, soon], stamped)) == [62]
    assert leftovers([prog(61), THEIRS, late], stamped) == {}


def test_pinned_programs_and_foreign_ones_are_never_leftovers():
    views = [SlotView(K, 61, None, record(61, replaces=61), None)]
    assert leftovers([prog(61), THEIRS], views) == {}
    assert leftovers([THEIRS], []) == {}


def leftover(prog_id: int, stage: bool) -> Running:
    return Running(prog_id, "count_pass", 10, ["pass"], {"program": "count_pass", "sha256": None,
                                                         "member": "count_pass", "leftover": "a killed run's",
                                                         "stage_only": stage})


def test_the_plan_takes_a_leftover_out_by_id_and_keeps_the_live_member():
    theirs = Running(77, "xdp_firewall", 15, ["pass"])
    item = plan_of(current=on_dispatcher(ours("count_pass", 61, 10), theirs, leftover(62, True),
                                         ours("filter", 63, 20)))
    assert item.action == "replace" and not item.chain.add
    assert item.chain.remove == [{"member": "count_pass", "prog_id": 62, "leftover": True, "stage_only": True}]
    assert rows(item) == [("remove", "count_pass", 10), ("running", "count_pass", 10), ("foreign", "xdp_firewall", 15),
                          ("running", "filter", 20)]
    assert item.chain.members[0]["leftover"] == "a killed run's" and "leftover" not in item.chain.members[1]


def test_a_leftover_goes_when_no_rule_matches():
    from offload.orchestrate.plan import Current, _unchain

    item = _unchain("ens2f0", Current(foreign={"native": 501}, dispatcher="native",
                                      chain=[leftover(61, False), Running(77, "fw", 15, ["pass"])]))
    assert item.action == "detach" and item.chain.remove == [{"member": "count_pass", "prog_id": 61,
                                                              "leftover": True, "stage_only": False}]
    assert "a killed run left" in item.reason


# -- a rule changed from `programs:` to `program:`: offload's chain makes way for its one program -----
SINGLE = "rules:\n  - name: shared\n    match: {interfaces: [\"ens*\"]}\n    program: count_drop\n"


def test_a_chain_gives_way_to_the_rule_s_one_program_when_it_holds_only_offload_s():
    item = plan_of(SINGLE, on_dispatcher(ours("count_pass", 61, 10), ours("filter", 62, 20)))
    assert (item.action, item.program, item.mode, item.chain.alone) == ("replace", "count_drop", "native", True)
    assert item.chain.remove == [{"member": "count_pass", "prog_id": 61}, {"member": "filter", "prog_id": 62}]
    assert rows(item) == [("remove", "count_pass", 10), ("remove", "filter", 20)]
    assert "count_drop alone takes the place of offload's chain" in item.reason


def test_a_chain_with_another_tool_s_program_or_a_hand_attached_member_stays_a_conflict():
    theirs = Running(77, "xdp_firewall", 15, ["pass"])
    item = plan_of(SINGLE, on_dispatcher(ours("count_pass", 61, 10), theirs))
    assert item.action == "conflict" and item.chain is None and "offload detach" in item.reason
    by_hand = Running(63, "count_pass", 10, ["pass"], {"program": "count_pass", "member": None})
    assert plan_of(SINGLE, on_dispatcher(by_hand)).action == "conflict"
