"""Human output: tables and detail views of probe reports (the JSON is the contract, this is prose)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

STATUS_STYLE = {"supported": "green", "blocked": "yellow", "unsupported": "red", "unknown": "magenta"}


def _mode_cell(iface: dict, mode: str) -> str:
    st = iface["modes"][mode]["status"]
    return f"[{STATUS_STYLE.get(st, '')}]{st}[/]"


def probe_table(report: dict, console: Console) -> None:
    t = Table(title=f"XDP capabilities (kernel {report['host']['kernel']})", show_lines=False)
    for col in ("interface", "driver", "mtu", "xdp-features", "attached", "hw", "native", "generic", "use"):
        t.add_column(col, no_wrap=True)
    t.add_column("why", overflow="fold", min_width=30)
    for i in report["interfaces"]:
        feats = i["xdp"]["features"]
        attached = ", ".join(f"{a['mode']}:{a['prog_id']}" + (f"({a['name']})" if a.get("name") else "")
                             for a in i["xdp"]["attached"]) or "-"
        rec = i["recommended"]
        mode = rec["mode"] or "none"
        top = _top_reason(i)
        t.add_row(i["name"], i["driver"] or i["kind"], str(i["mtu"]),
                  ",".join(feats) if feats else ("-" if feats is not None else "n/a"), attached,
                  _mode_cell(i, "hw"), _mode_cell(i, "native"), _mode_cell(i, "generic"), f"[bold]{mode}[/]", escape(top))
    console.print(t)
    for w in report["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(w)}")


def _top_reason(i: dict) -> str:
    """The reason that decided: why the best passed-over mode was not taken, else why this mode."""
    rec = i["recommended"]
    for p in rec["passed_over"]:
        if p["status"] in ("blocked", "unknown"):
            return f"{p['mode']}: {p['reason']}"
    if rec["mode"]:
        return i["modes"][rec["mode"]]["reason"]
    return rec["reason"]


def probe_detail(report: dict, console: Console) -> None:
    for i in report["interfaces"]:
        console.rule(f"[bold]{i['name']}[/] (ifindex {i['ifindex']}, {i['kind']})")
        ident = [f"driver {i['driver'] or '-'} {i['driver_version'] or ''}".rstrip(),
                 f"firmware {i['firmware_version'] or '-'}", f"bus {i['bus_info'] or '-'}",
                 f"profile {i['profile'] or 'none'}"]
        console.print("  " + " | ".join(ident))
        if i["pci"]:
            p = i["pci"]
            console.print(f"  pci {p['slot']} {p['vendor']}:{p['device']} subsystem "
                          f"{p['subsystem_vendor']}:{p['subsystem_device']}")
        if i["devlink"]:
            d = i["devlink"]
            console.print(f"  devlink {d['handle']} eswitch {d['eswitch_mode'] or '-'} versions {d['versions']}")
        st = i["state"]
        console.print(f"  state admin {'up' if st['admin_up'] else 'down'}, oper {st['oper_state']}; mtu {i['mtu']} "
                      f"(min {i['min_mtu']}, max {i['max_mtu']})"
                      + (f"; peer {i['peer']['name']} mtu {i['peer']['mtu']}" if i["peer"] else ""))
        ch = i["channels"]
        console.print(f"  queues rx {i['queues']['rx']} tx {i['queues']['tx']}"
                      + (f"; channels {_counts(ch)}" if ch else "")
                      + (f"; rings {_counts(i['rings'])}" if i["rings"] else ""))
        feats = ", ".join(f"{n} {'on' if v['active'] else 'off'}{' [fixed]' if v['fixed'] else ''}"
                          for n, v in i["features"].items())
        console.print(f"  features {escape(feats) or '-'}")
        x = i["xdp"]
        console.print(f"  xdp-features {', '.join(x['features']) if x['features'] else ('none' if x['features'] is not None else 'n/a (no netdev family)')}"
                      + (f"; zc max segs {x['zc_max_segs']}" if x["zc_max_segs"] else ""))
        for a in x["attached"]:
            console.print(f"  attached {a['mode']}: prog {a['prog_id']} {a.get('name') or ''}")
        for mode, v in i["modes"].items():
            console.print(f"  {mode:8} [{STATUS_STYLE.get(v['status'], '')}]{v['status']}[/]")
            for r in v["reasons"]:
                console.print(f"           - {escape(r)}")
            for n in v["notes"]:
                console.print(f"           [dim]note: {escape(n)}[/]")
        console.print(f"  [bold]recommended: {i['recommended']['mode']}[/] - {escape(i['recommended']['reason'])}")
    for w in report["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(w)}")


def _counts(d: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items() if v is not None)


PROFILE_COLUMNS = ("driver", "native", "zero_copy", "hw_offload", "multi_buffer", "native_mtu_max")


def profiles(rows: list[dict], problems: list, out: Console, err: Console) -> None:
    t = Table(title=f"driver profiles ({len(rows)} valid)")
    for c in PROFILE_COLUMNS:
        t.add_column(c)
    for r in rows:
        t.add_row(*(str(r[c]) if r[c] is not None else "-" for c in PROFILE_COLUMNS))
    out.print(t)
    for pr in problems:
        err.print(f"[yellow]warning:[/] {escape(str(pr))}")
