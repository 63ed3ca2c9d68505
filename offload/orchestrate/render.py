"""Human output of plan and apply (the JSON is the contract, this is prose): one row per interface,
each reason or error in full as a numbered note under the table; and the exports' one-line reports.

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
    rows = [[i["interface"], Text(i["action"], style=ACTION_STYLE.get(i["action"], "")), i["program"] or "-",
             i["mode"] or "-", i["rule"] or "-", notes.ref(f"{i['interface']} {i['action']}: {i['reason']}")]
            for i in items]
    out.print(fit(out, [Col("interface"), Col("action"), Col("program"), Col("mode"), Col("rule", drop=1),
                        Col("why")], rows))
    notes.print(out)


def apply_result(res: dict, out: Console, err: Console) -> None:
    from rich.markup import escape
    from rich.text import Text

    from offload.probe.render import Col, Notes, fit, say

    notes = Notes()
    rows = [[st["interface"], st["action"], st["program"] or "-", st.get("mode") or "-", st["status"], ""]
            for st in res["steps"]]
    rows += [[st["interface"], st["action"], st["program"] or "-", st.get("mode") or "-",
              Text("failed", style="red"), notes.ref(f"{st['interface']} {st['action']} failed: {st['error']}")]
             for st in res["failed"]]
    if rows:
        out.print(fit(out, [Col("interface"), Col("action"), Col("program"), Col("mode"), Col("status"),
                            Col("why")], rows))
    notes.print(err)   # the errors, in full (they went to stderr before the table existed too)
    for w in res.get("warnings", []):
        say(err, f"[yellow]warning:[/] {escape(w)}")
    if res["rolled_back"]:
        say(err, f"rolled back: {escape(', '.join(res['rolled_back']))}")


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
