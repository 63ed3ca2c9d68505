"""attach --via link's pure parts: which modes a link is made in, the refusals of mixing a link
and netlink on one interface and how a program takes the place of the one there, the policy key,
the plan's keep/replace on it, a chain making way for a rule's one program through a link, and
`via` in every plan action (its JSON and its table)."""

import pytest
from test_policy import evaluated

from lib.schemas import validate

from offload.errors import RefusedError
from offload.load import attach, programs
from offload.orchestrate.plan import Current, gives_way_atomically, make_plan
from offload.orchestrate.policy import PolicyError, parse


def test_links_in_native_and_generic_hw_stays_netlink():
    assert [attach.via_for("link", m) for m in ("hw", "native", "generic")] == ["netlink", "link", "link"]
    assert {attach.via_for("netlink", m) for m in ("hw", "native", "generic")} == {"netlink"}


@pytest.mark.parametrize("via,held,needle", [("link", False, "attached by netlink"),
                                             ("netlink", True, "held by a bpf_link")])
def test_mixing_a_link_and_netlink_is_refused_with_the_way_out(via, held, needle):
    with pytest.raises(RefusedError) as e:
        attach.refuse_mixed("eth1", via, held)
    assert needle in e.value.message and "eth1" in e.value.message and "offload detach eth1" in e.value.hint


RULE = "rules:\n  - name: pods\n    match: {interfaces: ['ens*']}\n    program: count_drop\n"


def test_policy_via_key():
    assert parse(RULE + "    via: link\n").rules[0].via == "link"
    assert parse(RULE).rules[0].via == "netlink"
    with pytest.raises(PolicyError) as e:
        parse(RULE + "    via: tc\n", "p.yaml")
    assert "rules[0].via" in e.value.message


def test_chain_rule_via_link_is_refused_naming_the_rule():
    text = ("rules:\n  - name: chained\n    match: {interfaces: ['ens*']}\n    via: link\n"
            "    programs:\n      - {program: count_pass, priority: 10}\n")
    with pytest.raises(PolicyError) as e:
        parse(text, "p.yaml")
    assert "chained" in e.value.message and "libxdp" in e.value.message and "netlink" in e.value.message


def ens2f0() -> list:
    return [a for a in evaluated("ice-6.6") if a.facts.name == "ens2f0"]


def held(**extra) -> dict:
    """The record of rule pods' count_drop on ens2f0, in native."""
    prog = programs.resolve("count_drop")
    return {"program": "count_drop", "sha256": prog.sha256, "params": prog.params, "mode": "native",
            "managed_by": "pods", **extra}


def test_plan_keeps_only_what_is_held_the_way_the_rule_says():
    ev, same = ens2f0(), held()
    linked = parse(RULE + "    mode: {prefer: native}\n    via: link\n")
    (switch,) = make_plan(linked, ev, {"ens2f0": Current(ours=same)})
    assert switch.action == "replace" and switch.via == "link" and "attached by netlink" in switch.reason
    (keep,) = make_plan(linked, ev, {"ens2f0": Current(ours={**same, "via": "link"})})
    assert keep.action == "keep" and keep.via == "link"
    (back,) = make_plan(parse(RULE + "    mode: {prefer: native}\n"), ev,
                        {"ens2f0": Current(ours={**same, "via": "link"})})
    assert back.action == "replace" and back.via == "netlink"


# -- a rule that became `program:` via link, where offload's chain runs: the chain makes way --------
@pytest.mark.parametrize("via,mode,held,let_go,way", [
    ("link", "native", False, True, attach.GAP),       # the dispatcher (netlink) off first, then the link
    ("link", "generic", False, True, attach.GAP),
    ("link", "hw", False, True, attach.SWAP),          # hw stays netlink: in its place atomically
    ("netlink", "native", False, True, attach.SWAP),
    ("netlink", "native", False, False, attach.SWAP),
    ("link", "native", True, False, attach.UPDATE),    # offload's own link: updated atomically
    ("link", "native", True, True, attach.UPDATE)])
def test_how_a_program_takes_the_place_of_the_one_there(via, mode, held, let_go, way):
    assert attach.replace_way("eth1", via, mode, held, let_go) == way


def test_a_link_over_netlink_is_still_refused_unless_the_caller_lets_that_program_go():
    with pytest.raises(RefusedError) as e:
        attach.replace_way("eth1", "link", "native", False)
    assert "attached by netlink" in e.value.message


@pytest.mark.parametrize("via,mode,dispatcher,atomic", [
    ("link", "native", "native", False), ("link", "generic", "generic", False),
    ("link", "native", "generic", True),    # beside the dispatcher, which then leaves
    ("link", "hw", "native", True), ("netlink", "native", "native", True), ("link", None, "native", True)])
def test_whether_a_chain_gives_way_atomically(via, mode, dispatcher, atomic):
    assert gives_way_atomically("eth1", via, mode, dispatcher) is atomic


SINGLE = "rules:\n  - name: shared\n    match: {interfaces: [\"ens*\"]}\n    program: count_drop\n"


def test_the_plan_of_a_chain_making_way_through_a_link_says_it_is_not_atomic():
    from test_policy_chain import on_dispatcher, ours, plan_of

    chain = on_dispatcher(ours("count_pass", 61, 10), ours("filter", 62, 20))
    linked = plan_of(SINGLE + "    via: link\n", chain)
    doc = linked.to_dict()
    assert (doc["action"], doc["via"], doc["chain"]["alone"], doc["chain"]["atomic"]) == ("replace", "link", True,
                                                                                          False)
    assert "not atomic: via link, the dispatcher comes off native before the link is made" in linked.reason
    swapped = plan_of(SINGLE, chain).to_dict()
    assert (swapped["via"], swapped["chain"]["atomic"]) == ("netlink", True) and "not atomic" not in swapped["reason"]


def test_every_plan_action_carries_via():
    from test_policy_chain import CHAIN, plan_of

    ev = ens2f0()
    other = "rules:\n  - name: other\n    match: {interfaces: ['nothing*']}\n    program: count_drop\n"
    (detach,) = make_plan(parse(other), ev, {"ens2f0": Current(ours=held(via="link"))})
    assert (detach.action, detach.to_dict()["via"]) == ("detach", "link")   # how the record says it is held
    (attach_,) = make_plan(parse(RULE + "    via: link\n"), ev, {})
    assert (attach_.action, attach_.to_dict()["via"]) == ("attach", "link")
    assert plan_of(CHAIN).to_dict()["via"] == "netlink"   # a chain: libxdp's dispatcher, by netlink
    validate({"schema_version": 1, "policy": "p.yaml", "plan": [detach.to_dict(), attach_.to_dict()]}, "plan")


def test_the_plan_table_shows_via_only_where_a_rule_links():
    import io

    from rich.console import Console

    from offload.orchestrate import render

    ev = ens2f0()
    for text, shown in ((RULE + "    via: link\n", True), (RULE, False)):
        out = io.StringIO()
        render.plan({"plan": [i.to_dict() for i in make_plan(parse(text), ev, {})]}, Console(file=out, width=80))
        header, row = out.getvalue().splitlines()[:3:2]
        assert ("via" in header.split()) is shown and ("link" in row.split()) is shown
