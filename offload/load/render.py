"""Human output of the load layer: attach and detach results, status, stats, filter edits and
the program library (the JSON is the contract, this is prose)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from offload.probe.render import Col, Notes, Trimmed, count, fit, rate, say, say_parts


def attach_result(res: dict, out: Console, err: Console) -> None:
    for w in res["warnings"]:
        say(err, f"[yellow]warning:[/] {escape(w)}")
    for f in res["fallbacks"]:   # a reason wraps under its own start, not under the mode
        say(out, f"[yellow]{f['mode']}:[/] {escape(f['reason'])}", indent=len(f["mode"]) + 2)
    verb = f"replaced prog {res['replaced']} with" if res["replaced"] else "attached"
    where = f" in libxdp's dispatcher (id {res['chain']['dispatcher_id']})" if res.get("chain") else ""
    say(out, f"{escape(res['interface'])}: {verb} {escape(res['program'])} in [bold]{res['mode']}[/] mode "
             f"(prog id {res['prog_id']}){where}")
    for m in (res.get("chain") or {}).get("members", []):   # the chain, in run order
        mark = " (offload's)" if m["prog_id"] == res["prog_id"] else ""
        say(out, f"  prio {m['priority']}: {escape(m['name'])} (prog id {m['prog_id']}){mark}, "
                 f"next on {','.join(m['chain_call_actions']) or 'nothing'}")


def attach_table(results: list[dict], out: Console) -> Notes:
    """Several attach results side by side: the modes passed over without trying (the probe rules
    them out) and those the kernel refused, each reason in a note."""
    notes = Notes()
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["interface"], Text("failed", style="red"), "-", "-", "-", "-", notes.ref(r["error"])])
            continue
        skipped = [f["mode"] for f in r["fallbacks"] if f["reason"].startswith("not tried")]
        refused = [f["mode"] for f in r["fallbacks"] if f["mode"] not in skipped]
        why = notes.ref(*(f"{r['interface']} {f['mode']} "
                          + (f["reason"] if f["mode"] in skipped else f"refused by the kernel: {f['reason']}")
                          for f in r["fallbacks"]))
        rows.append([r["interface"], r["program"], Text(r["mode"], style="bold"), str(r["prog_id"]),
                     ", ".join(skipped) or "-", Text(", ".join(refused) or "-", style="yellow" if refused else ""),
                     why or "-"])
    out.print(fit(out, [Col("interface"), Col("program"), Col("mode"), Col("prog id", "right"),
                        Col("not tried"), Col("refused"), Col("why")], rows))
    notes.print(out)
    return notes


def detach_result(res: dict, out: Console) -> None:
    iface = escape(res["interface"])
    if res["detached"]:
        say(out, f"{iface}: detached prog {res['detached']['prog_id']} ({res['detached']['mode']}); pins removed")
    else:
        say(out, f"{iface}: nothing attached; stale pins removed")


def status(res: dict, out: Console, err: Console) -> None:
    if not res["attachments"]:
        out.print(f"no XDP program attached (namespace {escape(res['netns'])})")
    else:
        out.print(f"XDP programs (namespace {escape(res['netns'])})")
        rows = []
        for r in res["attachments"]:
            disp = r.get("dispatcher")
            program = r["program"] or ("libxdp dispatcher" if disp else "-")
            mode = r["mode"] + (" (link)" if r.get("via") == "link" else "")   # held by a bpf_link
            rows.append([r["interface"], Text(mode, style="bold"), str(r["prog_id"]), r["name"] or "-",
                         {True: "yes", False: "no", None: "?"}[r["ours"]], program,
                         _since(r["attached_at"] or r.get("loaded_at")), *_prog_cells(r)])
            for c in (disp or {}).get("programs", []):   # libxdp's programs, in run order
                chain = ",".join(c["chain_call_actions"]) or "-"
                rows.append(["", Text(f" └ {c['slot']}", style="dim"), str(c["prog_id"] or "?"), c["name"] or "?",
                             {True: "yes", False: "no", None: "?"}[c.get("ours")],
                             f"{c.get('program') + ', ' if c.get('program') else ''}prio {c['priority']}, "
                             f"on {chain} next" + (f" (leftover: {c['leftover']})" if c.get("leftover") else ""),
                             _since(c["loaded_at"]), *_prog_cells(c)])
        out.print(fit(out, [Col("interface"), Col("mode"), Col("prog id", "right"), Col("name", drop=2),
                            Col("ours"), Col("program"), Col("since", drop=1), Col("tag", drop=3),
                            Col("jited", "right", drop=4), Col("maps", drop=5), Col("btf", "right", drop=6)], rows))
        for r in res["attachments"]:
            for w in (r.get("dispatcher") or {}).get("warnings", []):
                say(err, f"[yellow]warning:[/] {escape(r['interface'])}: libxdp dispatcher: {escape(w)}")
    for s in res["stale_pins"]:
        say(err, f"[yellow]warning:[/] pins for {escape(s)} but its program is not attached: "
                 f"offload detach {escape(s)}")
    for w in res["warnings"]:
        say(err, f"[yellow]warning:[/] {escape(w)}")


def _prog_cells(r: dict) -> list[str]:
    """tag, jited size (or `no`: interpreted), map ids, BTF id: what `bpftool prog show` says."""
    jited = {True: f"{r.get('jited_size')}B", False: "no", None: "-"}[r.get("jited")]
    return [r.get("tag") or "-", jited, ",".join(map(str, r.get("map_ids") or [])) or "-", str(r.get("btf_id") or "-")]


def _since(stamp: object) -> str:
    """2025-01-31T12:00:05.123456Z -> 2025-01-31 12:00 (UTC; the seconds only widen the column).
    It comes from a record, so it may be anything: shown literally (cells are Text, not markup)."""
    s = str(stamp) if stamp is not None else "-"
    return f"{s[:10]} {s[11:16]}" if len(s) >= 16 and s[10] == "T" else s


def stats(res: dict, out: Console) -> None:
    say(out, f"{escape(res['interface'])}: {escape(res['program'])} in [bold]{res['mode']}[/] mode "
             f"(prog id {res['prog_id']})")
    if res["counters"] == "prog_info":
        rate_s = f", {res['runs_per_s']:,.1f} runs/s" if "runs_per_s" in res else ""
        say(out, f"  runs {count(res['run_cnt'])}, {res['run_time_ns'] / 1e9:.3g} s in the program{rate_s} "
                 "(kernel's run counts)")
        if res.get("note"):
            say(out, f"  [dim]note: {escape(res['note'])}[/]")
        return
    rates = res.get("rates_pps")
    cols = [Col("action"), Col("packets", "right"), Col("bytes", "right")]
    rows = [[a, count(res["packets"][a]), count(res["bytes"][a]) + "B"] for a in res["packets"]]
    if rates:
        cols.append(Col(f"rate over {res['interval']:g} s", "right"))
        rows = [[*row, rate(rates[row[0]])] for row in rows]
    out.print(fit(out, cols, rows))


def filter_result(res: dict, out: Console) -> None:
    for k, v in res.items():
        if k != "interface":
            say_parts(out, f"{k}: ", v or ["-"], sep=", ")


def programs(doc: dict, out: Console) -> None:
    """Name, parameters, and what it does (prose: wrapped under its own column, never cut)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True, style="bold")
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row(Text("program", style="bold"), Text("params", style="bold"), Text("what", style="bold"))
    for r in doc["programs"]:
        grid.add_row(Text(r["name"]), Text(", ".join(r["params"]) or "-"), Text(r["summary"]))
    out.print(Trimmed(grid))


def status_all(res: dict, out: Console, err: Console) -> None:
    for ns in res["namespaces"]:
        if ns["attachments"] or ns["warnings"]:
            status(ns, out, err)
    if not any(ns["attachments"] for ns in res["namespaces"]):
        out.print("no XDP program attached in any namespace")
    gc_result({"dry_run": True, "freed": res["orphans"], "renamed": res["renamed"], "recovered": res["recovered"],
               "leftovers": res.get("leftovers", []), "warnings": []}, out, err,
              heading="orphans (offload gc frees them)")


def gc_result(res: dict, out: Console, err: Console, heading: str | None = None) -> None:
    verb = "would free" if res["dry_run"] else "freed"
    if heading and (res["freed"] or res["renamed"] or res["recovered"] or res.get("leftovers")):
        out.print(heading)
    for f in res["freed"]:
        where = f"{escape(f['netns'])}/{escape(f['interface'] or '*')}"
        say(out, f"{verb} {where}: {escape(f['reason'])}")
    for r in res["renamed"]:
        say(out, f"{'would follow' if res['dry_run'] else 'followed'} {escape(r['netns'])}/{escape(r['interface'])} "
                 f"-> {escape(r['now'])} (renamed)")
    for r in res["recovered"]:
        say(out, f"{'would recover' if res['dry_run'] else 'recovered'} {escape(r['netns'])}/{escape(r['interface'])}: "
                 f"{escape(r['reason'])}")
    for r in res.get("leftovers", []):
        member = f" (chain member {r['member']})" if r["member"] else ""
        say(out, f"{escape(r['netns'])}/{escape(r['interface'])}: offload's program {r['prog_id']}{escape(member)} "
                 f"is left in the dispatcher: {escape(r['reason'])}; the next apply, or offload detach "
                 f"{escape(r['interface'])}, takes it out")
    if not heading and not res["freed"] and not res["renamed"] and not res["recovered"] and not res.get("leftovers"):
        out.print("nothing to free")
    for w in res["warnings"]:
        say(err, f"[yellow]warning:[/] {escape(w)}")


_VERDICT = {"would_load": ("would load", "green"), "refused": ("would be refused", "red"),
            "unknown": ("unknown", "yellow")}


def _program_line(p: dict, f: dict) -> str:
    if not f["read"]:
        return f"{p['name']}: not read ({f['unread']})"
    parts = [f"{f['insns']} instructions", f"{len(f['maps'])} maps",
             f"helpers: {', '.join(u['name'] for u in f['helpers']) or 'none'}"]
    for key, label in (("bpf_calls", "BPF-to-BPF calls"), ("kfuncs", "kfuncs"), ("tail_calls", "tail calls"),
                       ("global_data", "global data")):
        if f[key]:
            parts.append(f"{label}: {', '.join(u['name'] for u in f[key])}")
    if f["frags"]:
        parts.append("xdp.frags")
    parts.append("BTF line info" if f["line_info"] else "no BTF line info (places are section+instruction)")
    return f"{p['name']} ({p['entry']}, section {p['section']}): " + "; ".join(parts)


def check_result(res: dict, out: Console) -> None:
    """The program once, then per interface or driver: a row per mode, each reason in a note with
    its place and its fix."""
    out.print(escape(_program_line(res["program"], res["facts"])))
    notes, rows = Notes(), []
    for t in res["targets"]:
        who = t["interface"] or f"--driver {t['driver']}"
        for mode, a in t["modes"].items():
            word, style = _VERDICT[a["status"]]
            shown = [x for x in a["findings"] if x["effect"] != "note" or mode == "hw"]
            refs = notes.ref(*(f"{who} {mode}: {x['what']}" + (f" at {x['where']}" if x["where"] else "")
                               + f" ({x['effect']}{', ' + x['errno'] if x.get('errno') else ''}): {x['why']}. "
                               f"Fix: {x['fix']}. Source: {x['source']}" for x in shown))
            rows.append([who, mode, Text(word, style=style),
                         Text("yes", style="bold") if mode == t["predicted"] else "", refs or "-"])
    out.print(fit(out, [Col("target"), Col("mode"), Col("verdict"), Col("auto lands"), Col("why")], rows))
    notes.print(out)
