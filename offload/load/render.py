"""Human output of the load layer: attach and detach results, status, stats, filter edits and
the program library (the JSON is the contract, this is prose)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def attach_result(res: dict, out: Console, err: Console) -> None:
    for w in res["warnings"]:
        err.print(f"[yellow]warning:[/] {escape(w)}")
    for f in res["fallbacks"]:
        out.print(f"[yellow]{f['mode']}:[/] {escape(f['reason'])}")
    verb = f"replaced prog {res['replaced']} with" if res["replaced"] else "attached"
    out.print(f"{escape(res['interface'])}: {verb} {escape(res['program'])} in [bold]{res['mode']}[/] mode "
              f"(prog id {res['prog_id']})")


def detach_result(res: dict, out: Console) -> None:
    iface = escape(res["interface"])
    if res["detached"]:
        out.print(f"{iface}: detached prog {res['detached']['prog_id']} ({res['detached']['mode']}); pins removed")
    else:
        out.print(f"{iface}: nothing attached; stale pins removed")


def status(res: dict, out: Console, err: Console) -> None:
    t = Table(title=f"XDP programs (namespace {escape(res['netns'])})")
    for c in ("interface", "mode", "prog id", "name", "ours", "program", "since"):
        t.add_column(c)
    for r in res["attachments"]:
        t.add_row(escape(r["interface"]), r["mode"], str(r["prog_id"]), escape(r["name"] or "-"),
                  {True: "yes", False: "no", None: "?"}[r["ours"]],
                  escape(r["program"] or "-"), escape(str(r["attached_at"] or "-")))   # from a record: any text
    out.print(t if res["attachments"] else "no XDP program attached")
    for s in res["stale_pins"]:
        err.print(f"[yellow]warning:[/] pins for {escape(s)} but its program is not attached: "
                  f"offload detach {escape(s)}")
    for w in res["warnings"]:
        err.print(f"[yellow]warning:[/] {escape(w)}")


def stats(res: dict, out: Console) -> None:
    out.print(f"{escape(res['interface'])}: {escape(res['program'])} in {res['mode']} mode (prog id {res['prog_id']})")
    if res["counters"] == "prog_info":
        rate = f", {res['runs_per_s']:,.1f} runs/s" if "runs_per_s" in res else ""
        out.print(f"  runs {res['run_cnt']:,}, {res['run_time_ns']:,} ns in the program{rate} (kernel's run counts)")
        if res.get("note"):
            out.print(f"  [dim]note: {escape(res['note'])}[/]")
        return
    rates = res.get("rates_pps")
    for a in res["packets"]:
        rate = f"  {rates[a]:>14,.1f} pps" if rates else ""
        out.print(f"  {a:9} {res['packets'][a]:>14,} packets {res['bytes'][a]:>16,} bytes{rate}")


def filter_result(res: dict, out: Console) -> None:
    for k, v in res.items():
        if k != "interface":
            out.print(f"{k}: {escape(', '.join(v)) if v else '-'}")


def programs(rows: list[dict], out: Console) -> None:
    for r in rows:
        params = f" (params: {', '.join(r['params'])})" if r["params"] else ""
        out.print(f"[bold]{escape(r['name'])}[/]{params}: {escape(r['summary'])}")


def status_all(res: dict, out: Console, err: Console) -> None:
    for ns in res["namespaces"]:
        if ns["attachments"] or ns["warnings"]:
            status(ns, out, err)
    if not any(ns["attachments"] for ns in res["namespaces"]):
        out.print("no XDP program attached in any namespace")
    gc_result({"dry_run": True, "freed": res["orphans"], "renamed": res["renamed"], "recovered": res["recovered"],
               "warnings": []}, out, err, heading="orphans (offload gc frees them)")


def gc_result(res: dict, out: Console, err: Console, heading: str | None = None) -> None:
    verb = "would free" if res["dry_run"] else "freed"
    if heading and (res["freed"] or res["renamed"] or res["recovered"]):
        out.print(heading)
    for f in res["freed"]:
        where = f"{escape(f['netns'])}/{escape(f['interface'] or '*')}"
        out.print(f"{verb} {where}: {escape(f['reason'])}")
    for r in res["renamed"]:
        out.print(f"{'would follow' if res['dry_run'] else 'followed'} {escape(r['netns'])}/{escape(r['interface'])} "
                  f"-> {escape(r['now'])} (renamed)")
    for r in res["recovered"]:
        out.print(f"{'would recover' if res['dry_run'] else 'recovered'} {escape(r['netns'])}/{escape(r['interface'])}: "
                  f"{escape(r['reason'])}")
    if not heading and not res["freed"] and not res["renamed"] and not res["recovered"]:
        out.print("nothing to free")
    for w in res["warnings"]:
        err.print(f"[yellow]warning:[/] {escape(w)}")
