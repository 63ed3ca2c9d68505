"""Human output of plan and apply (the JSON is the contract, this is prose): plan, one row per
interface; apply, a summary of what changed and failed (a row per interface with -v); each reason
or error in full as a numbered note under the table; and the exports' one-line reports.

rich and the table primitives are imported inside the table renderers: an export says its line
(printed as it is, no markup) and `export systemd` prints its unit without them."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

ACTION_STYLE = {"attach": "green", "replace": "yellow", "detach": "yellow", "keep": "", "conflict": "red"}


def plan(doc: dict, out: Console) -> None:
    from rich.text import Text

    from offload.probe.render import Col, Notes, fit

    items = doc["plan"]
    if not items:
        out.print("no interface matches the policy and nothing of it is attached")
        return
    notes = Notes()
    rows = []
    links = any(i.get("via") == "link" for i in items)   # all netlink: the column would say nothing
    for i in items:
        rows.append([i["interface"], Text(i["action"], style=ACTION_STYLE.get(i["action"], "")), i["program"] or "-",
                     i["mode"] or "-", *([i.get("via") or "-"] if links else []), i.get("fallback") or "-",
                     i["rule"] or "-",
                     notes.ref(f"{i['interface']} {i['action']}: {i['reason']}",
                               *(f"{i['interface']} {n['mode']} not tried: {n['reason']}"
                                 for n in i.get("not_tried", [])))])
        rows += _chain_rows(i.get("chain"), links)
    out.print(fit(out, [Col("interface"), Col("action"), Col("program"), Col("mode"),
                        *([Col("via", drop=1)] if links else []), Col("fallback", drop=3), Col("rule", drop=2),
                        Col("why")], rows))
    notes.print(out)


CHAIN_STYLE = {"add": "green", "replace": "yellow", "remove": "yellow", "running": "", "foreign": "dim"}


def _chain_rows(chain: dict | None, via: bool = False) -> list[list]:
    """A chain rule's dispatcher under its interface's row, in run order: what each program is
    (offload's, or another tool's: left alone), its priority and the verdicts that run the next."""
    from rich.text import Text

    out = []
    for m in (chain or {}).get("members", []):
        name = m["member"] or m["program"] or "?"
        who = f"prog {m['prog_id']}" if m["prog_id"] else "new"
        if not m["ours"]:
            who += ", another tool's"
        out.append(["", Text(f" └ {m['state']}", style=CHAIN_STYLE.get(m["state"], "")), name, "",
                    *([""] if via else []), "", "",
                    f"prio {m['priority']}, on {','.join(m['chain_call_actions']) or '-'} next ({who})"])
    return out


SHOW_CHANGES = 20   # changes listed one per row without -v; more are counted by kind


def apply_result(res: dict, out: Console, err: Console, verbose: bool = False) -> None:
    """A summary of what changed and what failed; a row per change when there are few, a count
    per kind of change otherwise, and every failure with its error in full. `verbose`: a row
    for every interface, kept ones too."""
    from rich.markup import escape
    from rich.text import Text

    from offload.probe.render import Col, Notes, fit, say

    changed = [st for st in res["steps"] if st["status"] != "kept"]
    listed = res["steps"] if verbose else changed if len(changed) <= SHOW_CHANGES else []
    notes = Notes()
    rows = [[st["interface"], st["action"], st["program"] or "-", st.get("mode") or "-", st["status"], ""]
            for st in listed]
    rows += [[st["interface"], st["action"], st["program"] or "-", st.get("mode") or "-",
              Text("failed", style="red"), notes.ref(f"{st['interface']} {st['action']} failed: {st['error']}")]
             for st in res["failed"]]
    if rows:
        out.print(fit(out, [Col("interface"), Col("action"), Col("program"), Col("mode"), Col("status"),
                            Col("why")], rows))
    if len(changed) > len(listed):
        out.print(fit(out, [Col("interfaces", "right"), Col("action"), Col("program"), Col("mode"), Col("status")],
                      [[str(n), *kind] for kind, n in _kinds(changed)]))
    out.print(_summary(res, changed, verbose), markup=False)
    notes.print(err)   # the errors, in full (they went to stderr before the table existed too)
    for w in res.get("warnings", []):
        say(err, f"[yellow]warning:[/] {escape(w)}")
    if res["rolled_back"]:
        say(err, f"rolled back: {escape(_names(res['rolled_back'], verbose))}")


def _kinds(steps: list[dict]) -> list[tuple[tuple[str, str, str, str], int]]:
    """Changes counted by (action, program, mode, status), the most frequent first."""
    from collections import Counter

    kinds = Counter((st["action"], st["program"] or "-", st.get("mode") or "-", st["status"]) for st in steps)
    return sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))


def _summary(res: dict, changed: list[dict], verbose: bool) -> str:
    """One line: how many interfaces changed (by action), were kept, failed, were rolled back."""
    from collections import Counter

    by_action = Counter(st["action"] for st in changed if st["status"] == "done")
    done = ", ".join(f"{n} {a}{'ed' if a.endswith('ch') else 'd'}" for a, n in sorted(by_action.items()))
    kept = sum(1 for st in res["steps"] if st["status"] == "kept")
    parts = [f"{res['outcome']}: {sum(by_action.values())} changed" + (f" ({done})" if done else ""),
             f"{kept} kept", f"{len(res['failed'])} failed"]
    if res["rolled_back"]:
        parts.append(f"{len(res['rolled_back'])} rolled back")
    unlisted = kept or len(changed) > SHOW_CHANGES   # rows the default view leaves out
    return "; ".join(parts) + ("" if verbose or not unlisted else " (-v lists every interface)")


def _names(names: list[str], verbose: bool) -> str:
    if verbose or len(names) <= SHOW_CHANGES:
        return ", ".join(names)
    return f"{', '.join(names[:SHOW_CHANGES])} and {len(names) - SHOW_CHANGES} more (-v lists them all)"


def export_nfd(res: dict, out: Console) -> None:
    from rich.text import Text

    from offload.probe.render import say

    until = f"; valid until {res['expires']}" if res.get("expires") else ""
    say(out, Text(f"wrote {len(res['labels'])} labels to {res['path']} ({len(res['counted'])} interfaces counted, "
                  f"{len(res['ignored'])} virtual ignored{until})"))
    for w in res["warnings"]:
        say(out, Text(f"  warning: {w}"))


def export_prometheus(res: dict, out: Console) -> None:
    from rich.text import Text

    from offload.probe.render import say

    say(out, Text(f"wrote {res['samples']} samples to {res['path']}"))


def export_systemd(res: dict, out: Console) -> None:
    if res["path"] is None:
        out.file.write(res["unit"])   # the unit as it is: no wrapping either
    else:
        from rich.text import Text

        from offload.probe.render import say

        say(out, Text(f"wrote {res['path']}: systemctl daemon-reload && systemctl enable --now "
                      f"{os.path.basename(res['path'])}"))
