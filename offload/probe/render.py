"""Human output: tables and detail views of probe reports (the JSON is the contract, this is prose).

Also the primitives every layer's render module builds on, so all tables read alike at 80
columns: short cells, numbers in k/M, reasons as numbered notes under the table, never in a cell."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

STATUS_STYLE = {"supported": "green", "blocked": "yellow", "unsupported": "red", "unknown": "magenta"}
STATUS_CELL = {"supported": "✓", "unsupported": "✗", "blocked": "blocked", "unknown": "?"}


# ---- primitives shared by every layer's render -------------------------------------------------

def count(n: float | None) -> str:
    """A count in about 3 significant digits: 950, 12.3k, 5.32M, 1.00M (for 999,999), 12.7G."""
    if n is None:
        return "-"
    for div, unit in ((1, ""), (1e3, "k"), (1e6, "M"), (1e9, "G")):
        v = n / div
        if abs(v) < 999.5 or unit == "G":
            return f"{v:.0f}{unit}" if div == 1 or abs(v) >= 99.95 else f"{v:.{1 if abs(v) >= 9.995 else 2}f}{unit}"
    raise AssertionError("unreachable")


def mpps(pps: float | None) -> str:
    """Packets per second in Mpps, 3 significant digits, trailing zeros kept so columns align:
    12.3, 5.30, 0.442 (0.00 below 5 kpps)."""
    if pps is None:
        return "-"
    m = pps / 1e6
    return f"{m:.0f}" if m >= 100 else f"{m:.1f}" if m >= 10 else f"{m:.2f}" if m >= 1 or m < 0.005 else f"{m:.3f}"


def rate(pps: float | None) -> str:
    """A packet rate with its unit: 6.35 Mpps, 532 kpps, 12 pps."""
    if pps is None:
        return "-"
    c = count(pps)
    return f"{c[:-1]} {c[-1]}pps" if c[-1] in "kMG" else f"{c} pps"


class Notes:
    """Reasons collected while a table is built, printed in full (wrapped, numbered) under it."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def ref(self, *texts: str) -> str:
        """The cell that points at these reasons: "[1]", "[2][3]" (an identical reason is one note)."""
        out = ""
        for t in texts:
            if t not in self.items:
                self.items.append(t)
            out += f"[{self.items.index(t) + 1}]"
        return out

    def print(self, console: Console) -> None:
        """Each note in full, wrapped to the console with a hanging indent (hyphenated names like
        lab-a1 never split; a word longer than a line is broken, never cut)."""
        for i, t in enumerate(self.items, 1):
            head = f"[{i}] ".rjust(len(f"[{len(self.items)}] "))
            console.print(Text(textwrap.fill(t, max(console.width, 20), initial_indent=head,
                                             subsequent_indent=" " * len(head), break_on_hyphens=False)),
                          soft_wrap=True)


@dataclass
class Col:
    header: str
    justify: str = "left"
    drop: int = 0          # > 0: left out when the table does not fit the console, highest first


Cell = str | Text


def fit(console: Console, cols: Sequence[Col], rows: Iterable[Sequence[Cell]]) -> Table:
    """A plain table (header underlined, columns aligned, nothing truncated) with the optional
    columns the console has room for."""
    rows = list(rows)
    keep = list(range(len(cols)))
    ranks = sorted({c.drop for c in cols if c.drop}, reverse=True)
    while True:
        t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
        for i in keep:
            t.add_column(cols[i].header, justify=cols[i].justify, no_wrap=True)  # type: ignore[arg-type]
        for r in rows:
            t.add_row(*(r[i] if isinstance(r[i], Text) else Text(r[i]) for i in keep))
        # measured unclamped: Measurement.get caps at the console's width
        if not ranks or Measurement.get(console, console.options.update_width(10_000), t).maximum <= console.width:
            return t
        drop = ranks.pop(0)
        keep = [i for i in keep if cols[i].drop != drop]


def warnings(items: Iterable[str], console: Console) -> None:
    for w in items:
        console.print(f"[yellow]warning:[/] {escape(w)}")


# ---- probe --------------------------------------------------------------------------------------

def _mode_cell(iface: dict, mode: str) -> Text:
    st = iface["modes"][mode]["status"]
    return Text(STATUS_CELL.get(st, st), style=STATUS_STYLE.get(st, ""))


def probe_table(report: dict, console: Console) -> None:
    console.print(f"XDP modes per interface (kernel {escape(report['host']['kernel'])})")
    notes = Notes()
    cols = [Col("interface"), Col("driver"), Col("mtu", "right"), Col("xdp-features", drop=2),
            Col("attached", drop=1), Col("hw"), Col("native"), Col("generic"), Col("use"), Col("why")]
    rows = []
    for i in report["interfaces"]:
        feats = i["xdp"]["features"]
        attached = ", ".join(f"{a['mode']}:{a['prog_id']}" + (f"({a['name']})" if a.get("name") else "")
                             for a in i["xdp"]["attached"]) or "-"
        rows.append([i["name"], i["driver"] or i["kind"], str(i["mtu"]),
                     ",".join(feats) if feats else ("-" if feats is not None else "n/a"), attached,
                     _mode_cell(i, "hw"), _mode_cell(i, "native"), _mode_cell(i, "generic"),
                     Text(i["recommended"]["mode"] or "none", style="bold"), notes.ref(top_reason(i))])
    console.print(fit(console, cols, rows))
    console.print("[dim]✓ supported  ✗ unsupported  blocked: a current setting prevents it[/]")
    notes.print(console)
    warnings(report["warnings"], console)


def top_reason(i: dict) -> str:
    """The reason that decided, subject first: why the best passed-over mode was not taken, else
    why this mode."""
    rec = i["recommended"]
    for p in rec["passed_over"]:
        if p["status"] in ("blocked", "unknown"):
            return f"{i['name']} {p['mode']} {p['status']}: {p['reason']}"
    if rec["mode"]:
        return f"{i['name']} {rec['mode']}: {i['modes'][rec['mode']]['reason']}"
    return f"{i['name']}: {rec['reason']}"


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


def profiles(doc: dict, out: Console, err: Console) -> None:
    rows = doc["profiles"]
    t = Table(title=f"driver profiles ({len(rows)} valid)")
    for c in PROFILE_COLUMNS:
        t.add_column(c)
    for r in rows:
        t.add_row(*(str(r[c]) if r[c] is not None else "-" for c in PROFILE_COLUMNS))
    out.print(t)
    for pr in doc["problems"]:
        problem = f"{pr['file']}: {pr['field']}: {pr['message']}"
        err.print(f"[yellow]warning:[/] {escape(problem)}")
