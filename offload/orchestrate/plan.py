"""Desired against actual: what `apply` would do on each interface, and why. It takes the
probe's facts and verdicts, what is attached, and the program advisor's hw verdict (the program
read once per rule), and changes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from offload.load import advice, advisor, programs
from offload.load.attach import GAP, replace_way
from offload.load.chain import CHAIN_MODES, NEVER_HW
from offload.probe.profiles import Profile
from offload.orchestrate.policy import Member, Policy, Rule, matching_rules
from offload.probe import verdicts
from offload.probe.facts import DeviceFacts
from offload.probe.report import Assessed


@dataclass
class Running:
    """One program in the interface's libxdp dispatcher, as read: offload's (its record, whose
    `member` is the policy's key; None for `attach --priority`'s) or another tool's."""

    prog_id: int | None
    name: str | None
    priority: int
    chain_call_actions: list[str]
    ours: dict | None = None

    def to_dict(self, state: str) -> dict:
        return {"state": state, "member": (self.ours or {}).get("member"), "program": self.name if not self.ours
                else self.ours.get("program"), "prog_id": self.prog_id, "priority": self.priority,
                "chain_call_actions": self.chain_call_actions, "ours": self.ours is not None,
                **({"leftover": self.leftover} if self.leftover else {})}

    @property
    def leftover(self) -> str | None:
        """Why this program of offload's is no member (a killed run left it), or None."""
        return (self.ours or {}).get("leftover")

    def removal(self) -> dict:
        """How apply takes it out: by id; a leftover's slot keeps its pins (only its staging goes)."""
        return {"member": (self.ours or {}).get("member"), "prog_id": self.prog_id,
                **({"leftover": True, "stage_only": bool(self.ours.get("stage_only"))} if self.leftover else {})}


@dataclass
class Current:
    """What is on an interface now: offload's attachment (its metadata) and anything else."""

    ours: dict | None = None            # metadata of our attachment, if our pinned program is attached
    foreign: dict[str, int] = field(default_factory=dict)   # mode -> prog id of programs not ours
    dispatcher: str | None = None       # the mode of libxdp's dispatcher there (it is in `foreign` too)
    chain: list[Running] = field(default_factory=list)      # its programs, in run order


@dataclass
class ChainPlan:
    """The chain a rule's `programs` build on one interface: every program in run order with its
    state (running, add, replace, remove: offload's; foreign: another tool's, left alone)."""

    mode: str | None                    # the dispatcher's mode (there already, or expected)
    modes: list[str]                    # the acceptable ones, best first (a new dispatcher's)
    members: list[dict]                 # run order
    add: list[tuple[Member, programs.Program]] = field(default_factory=list)
    remove: list[dict] = field(default_factory=list)   # offload's to take out: Running.removal()
    refused: str | None = None          # the kernel cannot run libxdp's dispatcher: why
    alone: bool = False                 # the chain gives way to the rule's one program alone
    atomic: bool = True                 # alone: in the dispatcher's place in one step (see gives_way_atomically)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "members": self.members, "refused": self.refused, "alone": self.alone,
                **({"atomic": self.atomic} if self.alone else {})}


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
    chain: ChainPlan | None = None             # a chain rule's dispatcher, when one is built
    via: str = "netlink"                       # how the rule attaches (a detach: how the record says it is held)

    def to_dict(self) -> dict:
        return {"interface": self.interface, "action": self.action, "rule": self.rule, "program": self.program,
                "mode": self.mode, "reason": self.reason, "also_matched": self.also_matched,
                "fallback": self.fallback, "not_tried": self.not_tried,
                "chain": self.chain.to_dict() if self.chain else None, "via": self.via}


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
                   resolved: dict | None = None, profile: Profile | None = None, refusal: str | None = None
                   ) -> Item | None:
    """What apply would do on `f`. `refusal`: why this kernel cannot run libxdp's dispatcher
    (None: it can), which decides a chain rule's fate."""
    rules = matching_rules(pol, f, capabilities(f, judged))
    mine = cur.ours
    managed = mine is not None and mine.get("managed_by") is not None
    if not rules:
        if managed:
            return Item(f.name, "detach", mine["managed_by"], mine["program"], mine["mode"],
                        f"no rule matches {f.name} any more; rule {mine['managed_by']!r} attached it",
                        via=mine.get("via", "netlink"))
        return _unchain(f.name, cur)
    rule, others = rules[0], [r.name for r in rules[1:]]
    resolved = {} if resolved is None else resolved
    first = f"rule {rule.name!r} matches" + (f" (first match; also: {', '.join(others)})" if others else "")
    alone = ""
    if rule.members:
        if refusal is None or not rule.allow_single:
            return plan_chain(rule, others, first, f, judged, cur, resolved, refusal)
        m = rule.members[0]   # a chain of one, alone where the kernel cannot run a dispatcher
        rule = replace(rule, program=m.program, params=m.params, prog=m.prog, section=m.section, members=())
        alone = f"; alone, not in a chain (allow_single): {refusal}"
    if rule.name not in resolved:
        resolved[rule.name] = rule.resolve()
    prog = resolved[rule.name]
    hw = advisor.hw_refusal(prog, profile, judged) if rule.prefer in (verdicts.AUTO, "hw") else None
    exp = expected(rule, judged, hw)
    want_mode, why = exp.mode, exp.why + alone
    base = dict(rule=rule.name, program=prog.name, also_matched=others, prefer=rule.prefer, min=rule.min,
                params=rule.params, resolved=prog, fallback=exp.fallback, not_tried=exp.passed, via=rule.via)
    giving = _gives_way(cur) if cur.foreign and not mine else None
    if giving is not None:   # a chain rule became `program:`: offload's chain makes way for it
        atomic = gives_way_atomically(f.name, rule.via, want_mode, cur.dispatcher)
        plan = ChainPlan(cur.dispatcher, [], [r.to_dict("remove") for r in giving],
                         remove=[r.removal() for r in giving], alone=True, atomic=atomic)
        keys = ", ".join(r.ours.get("member") or str(r.prog_id) for r in giving)
        gap = "" if atomic else (f"; not atomic: via link, the dispatcher comes off {want_mode} before the link is "
                                 "made (the kernel puts no bpf_link in a netlink program's place)")
        return Item(f.name, "replace", mode=want_mode, chain=plan, reason=f"{first}; {prog.name} alone takes the "
                    f"place of offload's chain (members {keys} leave once it runs){gap}; expected mode: "
                    f"{want_mode or 'none'} ({why})", **base)
    if cur.foreign and not mine:
        desc = ", ".join(f"{m} prog {i}" for m, i in cur.foreign.items())
        held = [r.ours.get("member") or r.ours.get("program") for r in cur.chain if r.ours]
        ours = (f"; offload's own chain members ({', '.join(held)}) are in libxdp's dispatcher there: `offload "
                f"detach {f.name}` takes them out, then this rule attaches its program alone") if held else ""
        return Item(f.name, "conflict", mode=None, reason=f"{first}, but {f.name} carries XDP offload did not "
                    f"attach ({desc}): left alone{ours}", **base)
    if mine:
        same = (mine.get("sha256") == prog.sha256 and mine.get("params", {}) == prog.params
                and mine.get("managed_by") == rule.name)
        held = mine.get("via", "netlink")   # the record's cache; the attach checks the kernel's link
        if same and _acceptable(mine["mode"], rule) and held == rule.via:
            return Item(f.name, "keep", mode=mine["mode"], reason=f"{first}; {prog.name} is attached in "
                        f"{mine['mode']} as wanted{alone}", **base)
        what = "program or parameters changed" if not same else f"mode {mine['mode']} is not acceptable" \
            if not _acceptable(mine["mode"], rule) else f"attached by {held}, the rule wants via {rule.via}"
        return Item(f.name, "replace", mode=want_mode, reason=f"{first}; {what}; expected mode: "
                    f"{want_mode or 'none'} ({why})", **base)
    return Item(f.name, "attach", mode=want_mode, reason=f"{first}; expected mode: {want_mode or 'none'} ({why})",
                **base)


def gives_way_atomically(iface: str, via: str, mode: str | None, dispatcher: str | None) -> bool:
    """Whether a lone program attached `via` in `mode` takes the place of libxdp's dispatcher
    (netlink-held, in `dispatcher`) in one step: netlink swaps it atomically and hw goes in beside
    it; a link cannot (load.attach.replace_way's GAP: the dispatcher off first)."""
    return mode is None or mode != dispatcher or replace_way(iface, via, mode, False, let_go=True) != GAP


def _gives_way(cur: Current) -> list[Running] | None:
    """offload's chain members, when the dispatcher holds nothing else and nothing sits beside it:
    they can make way for one program alone (None: another tool's program, or `attach
    --priority`'s member in the interface's own slot, is there)."""
    lone = {m for m in cur.foreign if m != cur.dispatcher}
    if cur.dispatcher is None or lone or not cur.chain:
        return None
    if any(r.ours is None or not (r.ours.get("member") or r.leftover) for r in cur.chain):
        return None
    return cur.chain


def chain_expected(rule: Rule, judged: dict[str, verdicts.ModeVerdict], now: str | None) -> Expected:
    """Where a chain would run: native or generic (never hw), the mode of the dispatcher there if
    there is one (the others' programs run in it)."""
    passed = [{"mode": "hw", "reason": NEVER_HW}] if rule.prefer == verdicts.AUTO else []
    landing = []
    for m in CHAIN_MODES:
        if rule.prefer not in (verdicts.AUTO, m) or not verdicts.Mode(m).at_least(rule.min):
            continue
        if now is not None and m != now:
            passed.append({"mode": m, "reason": f"libxdp's dispatcher there runs in {now}"})
        elif judged[m].status == verdicts.SUPPORTED or now is not None:
            landing.append(m)
        else:
            passed.append({"mode": m, "reason": judged[m].reason})
    if landing:
        return Expected(landing[0], "libxdp's dispatcher there" if now else judged[landing[0]].reason,
                        landing[1] if len(landing) > 1 else None, passed)
    why = "; ".join(f"{p['mode']}: {p['reason']}" for p in passed) or "below the floor"
    return Expected(None, f"no acceptable mode for a chain ({why})", None, passed)


def _same(r: Running, m: Member, prog: programs.Program, rule: str) -> bool:
    o = r.ours or {}
    return (o.get("sha256") == prog.sha256 and o.get("params", {}) == prog.params and r.priority == m.priority
            and set(r.chain_call_actions) == set(m.chain) and o.get("managed_by") == rule)


def plan_chain(rule: Rule, others: list[str], first: str, f: DeviceFacts, judged: dict[str, verdicts.ModeVerdict],
               cur: Current, resolved: dict, refusal: str | None) -> Item:
    """A rule's `programs` as one chain in libxdp's dispatcher on `f`: which run already, which
    are added or replaced, which of offload's leave, and the other tools' programs, left alone."""
    progs = []
    for m in rule.members:
        if (rule.name, m.key) not in resolved:
            resolved[(rule.name, m.key)] = m.resolve()
        progs.append(resolved[(rule.name, m.key)])
    exp = chain_expected(rule, judged, cur.dispatcher)
    base = dict(rule=rule.name, program=",".join(m.key for m in rule.members), also_matched=others,
                prefer=rule.prefer, min=rule.min, fallback=exp.fallback, not_tried=exp.passed)
    ours = {r.ours.get("member"): r for r in cur.chain if r.ours is not None and r.ours.get("member")
            and not r.leftover}
    keys = {m.key for m in rule.members}
    strays = [r for r in cur.chain if r.ours is not None and (r.leftover or r.ours.get("member") not in keys)]
    rows, plan = [], ChainPlan(exp.mode, [m for m in CHAIN_MODES if m == exp.mode or m == exp.fallback], [])
    for order, (m, prog) in enumerate(zip(rule.members, progs)):
        r = ours.get(m.key)
        state = "running" if r and _same(r, m, prog, rule.name) else "replace" if r else "add"
        if state != "running":
            plan.add.append((m, prog))
        rows.append(((m.priority, 1, order), {"state": state, "member": m.key, "program": prog.name,
                                              "prog_id": r.prog_id if r else None, "priority": m.priority,
                                              "chain_call_actions": list(m.chain), "ours": True}))
    for order, r in enumerate(cur.chain):
        if r.ours is None or r in strays:
            rows.append(((r.priority, 0, order), r.to_dict("foreign" if r.ours is None else "remove")))
    plan.remove = [r.removal() for r in strays]
    plan.members = [row for _, row in sorted(rows, key=lambda kv: kv[0])]
    lone = {m: i for m, i in cur.foreign.items() if m != cur.dispatcher}
    if lone and not cur.ours:
        desc = ", ".join(f"{m} prog {i}" for m, i in lone.items())
        return Item(f.name, "conflict", mode=None, chain=plan, reason=f"{first}, but {f.name} carries a program "
                    f"outside libxdp's dispatcher ({desc}): a chain cannot be built beside it; left alone", **base)
    if refusal is not None:
        plan.refused = refusal
        return Item(f.name, "attach", mode=None, chain=plan, reason=f"{first}; a chain cannot be built here: "
                    f"{refusal}; nothing will be attached (allow_single: true attaches a one-program rule alone)",
                    **base)
    if exp.mode is None:
        action = "conflict" if cur.dispatcher else "attach"
        return Item(f.name, action, mode=None, chain=plan, reason=f"{first}; {exp.why}", **base)
    if cur.ours is not None:
        return Item(f.name, "replace", mode=exp.mode, chain=plan, reason=f"{first}; offload's program alone "
                    f"({cur.ours.get('program')}) makes way for the chain ({exp.why})", **base)
    if not plan.add and not plan.remove:
        return Item(f.name, "keep", mode=exp.mode, chain=plan, reason=f"{first}; the chain runs in {exp.mode} as "
                    "wanted", **base)
    held = any(r.ours is not None for r in cur.chain)
    what = ", ".join(f"{row['state']} {row['member']}" for row in plan.members if row["state"] in ("add", "replace",
                                                                                                    "remove"))
    return Item(f.name, "replace" if held else "attach", mode=exp.mode, chain=plan,
                reason=f"{first}; {what}; expected mode: {exp.mode} ({exp.why})", **base)


def _unchain(iface: str, cur: Current) -> Item | None:
    """No rule matches: the chain members a policy put there leave; other tools' stay."""
    gone = [r for r in cur.chain if r.ours is not None and (r.ours.get("managed_by") or r.leftover)]
    if not gone:
        return None
    rule = next((r.ours["managed_by"] for r in gone if r.ours.get("managed_by")), None)
    plan = ChainPlan(cur.dispatcher, [], [r.to_dict("remove" if r in gone else "foreign" if r.ours is None
                                                    else "running") for r in cur.chain],
                     remove=[r.removal() for r in gone])
    who = f"rule {rule!r} put offload's members in its chain" if rule else "a killed run left offload's programs"
    return Item(iface, "detach", rule, ",".join(r.ours.get("member") or r.ours.get("program", "?") for r in gone),
                cur.dispatcher, f"no rule matches {iface} any more; {who}: they leave, other tools' programs stay",
                chain=plan)


def make_plan(pol: Policy, devices: list[Assessed], current: dict[str, Current], refusal: str | None = None
              ) -> list[Item]:
    """The plan of every device; `refusal`: why this kernel cannot run libxdp's dispatcher."""
    items: list[Item] = []
    resolved: dict = {}
    for d in devices:
        item = plan_interface(pol, d.facts, d.verdicts, current.get(d.facts.name, Current()), resolved, d.profile,
                              refusal)
        if item is not None:
            item.device = d
            items.append(item)
    return items
