"""Human output of plan and apply (the JSON is the contract, this is prose)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape


def plan(items: list[dict], out: Console) -> None:
    if not items:
        out.print("no interface matches the policy and nothing of it is attached")
    for i in items:
        out.print(f"[bold]{escape(i['interface'])}[/]: {i['action']} {escape(i['program'] or '')} "
                  f"(mode {i['mode'] or '-'}) - {escape(i['reason'])}")


def apply_result(res: dict, out: Console, err: Console) -> None:
    for st in res["steps"]:
        out.print(f"{escape(st['interface'])}: {st['action']} {escape(st['program'] or '')} -> "
                  f"{st.get('mode') or '-'} ({st['status']})")
    for st in res["failed"]:
        err.print(f"[red]{escape(st['interface'])}: {st['action']} failed:[/] {escape(st['error'])}")
    for w in res.get("warnings", []):
        err.print(f"[yellow]warning:[/] {escape(w)}")
    if res["rolled_back"]:
        err.print(f"rolled back: {escape(', '.join(res['rolled_back']))}")
