"""Desired against actual: what `apply` would do on each interface, and why. It takes the
probe's facts and verdicts, what is attached, and the program advisor's hw verdict (the program
read once per rule), and changes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field

from offload.load import advice, advisor, programs
from offload.probe.profiles import Profile
from offload.orchestrate.policy import Policy, Rule, matching_rules
from offload.probe import verdicts
from offload.probe.facts import DeviceFacts
from offload.probe.report import Assessed


@dataclass
class Current:
    """What is on an interface now: offload's attachment (its metadata) and anything else."""

    ours: dict | None = None            # metadata of our attachment, if our pinned program is attached
    foreign: dict[str, int] = field(default_factory=dict)   # mode -> prog id of programs not ours


@dataclass
class Item:
    interface: str
    action: str                 # attach | replace | detach | keep | conflict
    rule: str | None
    program: str | None
    mode: str | None            # the mode it would land in (per the probe), or is in (keep/detach)
    reason: str
    also_matched: list[str] = field(default_factory=list)
    prefer: str = "auto"
    min: str | None = None
    params: dict = field(default_factory=dict)
    resolved: programs.Program | None = None   # the program, resolved once for every interface
    device: Assessed | None = None             # the interface as probed for this plan
    fallback: str | None = None                # where attach would go if `mode` refused it
    not_tried: list[dict] = field(default_factory=list)   # modes passed over, with why (advisor included)

    def to_dict(self) -> dict:
        return {"interface": self.interface, "action": self.action, "rule": self.rule, "program": self.program,
                "mode": self.mode, "reason": self.reason, "also_matched": self.also_matched,
                "fallback": self.fallback, "not_tried": self.not_tried}


def capabilities(f: DeviceFacts, judged: dict[str, verdicts.ModeVerdict]) -> set[str]:
    caps = set(f.xdp_features or [])
    if f.xdp_features is None:  # no netdev family: what the profile and checks concluded
        if judged["hw"].status == verdicts.SUPPORTED:
            caps.add("hw-offload")
        if judged["native"].status == verdicts.SUPPORTED:
            caps.add("basic")
    return caps


@dataclass
class Expected:
    """Where an attach would land, by the probe and the program advisor: the mode and why, the
    next acceptable mode (the fallback if the kernel refuses the first), the modes passed over."""

    mode: str | None
    why: str
    fallback: str | None = None
    passed: list[dict] = field(default_factory=list)


def expected(rule: Rule, judged: dict[str, verdicts.ModeVerdict], hw: advice.Advice | None = None) -> Expected:
    order = [m for m in verdicts.fallback_order(rule.prefer, rule.min) if m.at_least(rule.min)]
    landing: list[str] = []
    passed = []
    for m in order:
        if m == verdicts.Mode.HW and advice.refused(hw):
            passed.append({"mode": str(m), "reason": f"the program would be refused: {hw.reason}"})
        elif judged[m].status == verdicts.SUPPORTED:
            landing.append(m)
        else:
            passed.append({"mode": str(m), "reason": judged[m].reason})
    if landing:
        first = landing[0]
        return Expected(str(first), judged[first].reason, str(landing[1]) if len(landing) > 1 else None,
                        [p for p in passed if verdicts.Mode(p["mode"]).rank > verdicts.Mode(first).rank])
    why = "; ".join(f"{p['mode']}: {p['reason']}" for p in passed) or "below the floor"
    return Expected(None, f"no acceptable mode is supported ({why})", None, passed)


def expected_mode(rule: Rule, judged: dict[str, verdicts.ModeVerdict]) -> tuple[str | None, str]:
    """The mode an attach would land in, by the probe, and why."""
    e = expected(rule, judged)
    return e.mode, e.why


def _acceptable(mode: str, rule: Rule) -> bool:
    if rule.prefer != verdicts.AUTO and mode != rule.prefer:
        return False
    return verdicts.Mode(mode).at_least(rule.min)


def plan_interface(pol: Policy, f: DeviceFacts, judged: dict[str, verdicts.ModeVerdict], cur: Current,
                   resolved: dict[str, programs.Program] | None = None, profile: Profile | None = None
                   ) -> Item | None:
    rules = matching_rules(pol, f, capabilities(f, judged))
    mine = cur.ours
    managed = mine is not None and mine.get("managed_by") is not None
    if not rules:
        if managed:
            return Item(f.name, "detach", mine["managed_by"], mine["program"], mine["mode"],
                        f"no rule matches {f.name} any more; rule {mine['managed_by']!r} attached it")
        return None
    rule, others = rules[0], [r.name for r in rules[1:]]
    resolved = {} if resolved is None else resolved
    if rule.name not in resolved:
        resolved[rule.name] = rule.resolve()
    prog = resolved[rule.name]
    hw = advisor.hw_refusal(prog, profile, judged) if rule.prefer in (verdicts.AUTO, "hw") else None
    exp = expected(rule, judged, hw)
    want_mode, why = exp.mode, exp.why
    base = dict(rule=rule.name, program=prog.name, also_matched=others, prefer=rule.prefer, min=rule.min,
                params=rule.params, resolved=prog, fallback=exp.fallback, not_tried=exp.passed)
    first = f"rule {rule.name!r} matches" + (f" (first match; also: {', '.join(others)})" if others else "")
    if cur.foreign and not mine:
        desc = ", ".join(f"{m} prog {i}" for m, i in cur.foreign.items())
        return Item(f.name, "conflict", mode=None, reason=f"{first}, but {f.name} carries XDP offload did not "
                    f"attach ({desc}): left alone", **base)
    if mine:
        same = (mine.get("sha256") == prog.sha256 and mine.get("params", {}) == prog.params
                and mine.get("managed_by") == rule.name)
        if same and _acceptable(mine["mode"], rule):
            return Item(f.name, "keep", mode=mine["mode"], reason=f"{first}; {prog.name} is attached in "
                        f"{mine['mode']} as wanted", **base)
        what = "program or parameters changed" if not same else f"mode {mine['mode']} is not acceptable"
        return Item(f.name, "replace", mode=want_mode, reason=f"{first}; {what}; expected mode: "
                    f"{want_mode or 'none'} ({why})", **base)
    return Item(f.name, "attach", mode=want_mode, reason=f"{first}; expected mode: {want_mode or 'none'} ({why})",
                **base)


def make_plan(pol: Policy, devices: list[Assessed], current: dict[str, Current]) -> list[Item]:
    items, resolved = [], {}
    for d in devices:
        item = plan_interface(pol, d.facts, d.verdicts, current.get(d.facts.name, Current()), resolved, d.profile)
        if item is not None:
            item.device = d
            items.append(item)
    return items
