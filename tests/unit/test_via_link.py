"""attach --via link's pure parts: which modes a link is made in, the refusals of mixing a link
and netlink on one interface, the policy key, and the plan's keep/replace on it."""

import pytest
from test_policy import evaluated

from offload.errors import RefusedError
from offload.load import attach, programs
from offload.orchestrate.plan import Current, make_plan
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


def test_plan_keeps_only_what_is_held_the_way_the_rule_says():
    ev = [a for a in evaluated("ice-6.6") if a.facts.name == "ens2f0"]
    prog = programs.resolve("count_drop")
    same = {"program": "count_drop", "sha256": prog.sha256, "params": prog.params, "mode": "native",
            "managed_by": "pods"}
    linked = parse(RULE + "    mode: {prefer: native}\n    via: link\n")
    (switch,) = make_plan(linked, ev, {"ens2f0": Current(ours=same)})
    assert switch.action == "replace" and switch.via == "link" and "attached by netlink" in switch.reason
    (keep,) = make_plan(linked, ev, {"ens2f0": Current(ours={**same, "via": "link"})})
    assert keep.action == "keep" and keep.via == "link"
    (back,) = make_plan(parse(RULE + "    mode: {prefer: native}\n"), ev,
                        {"ens2f0": Current(ours={**same, "via": "link"})})
    assert back.action == "replace" and back.via == "netlink"
