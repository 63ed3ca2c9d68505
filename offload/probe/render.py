"""Human output: tables and detail views of probe reports (the JSON is the contract, this is prose).

Also the primitives every layer's render module builds on, so all tables read alike at 80
columns: short cells, numbers in k/M, reasons as numbered notes under the table, never in a cell."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.segment import Segment
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


def fit(console: Console, cols: Sequence[Col], rows: Iterable[Sequence[Cell]]) -> Trimmed:
    """A plain table (header underlined, columns aligned, nothing truncated) with the optional
    columns the console has room for. Should it still not fit (a cell wider than the terminal),
    rich wraps cells (a word longer than its column folds), never cuts them."""
    rows = list(rows)
    keep = list(range(len(cols)))
    ranks = sorted({c.drop for c in cols if c.drop}, reverse=True)
    while True:
        t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
        for i in keep:
            t.add_column(cols[i].header, justify=cols[i].justify, overflow="fold")  # type: ignore[arg-type]
        for r in rows:
            t.add_row(*(r[i] if isinstance(r[i], Text) else Text(r[i]) for i in keep))
        # measured unclamped: Measurement.get caps at the console's width
        if not ranks or Measurement.get(console, console.options.update_width(10_000), t).maximum <= console.width:
            return Trimmed(t)
        drop = ranks.pop(0)
        keep = [i for i in keep if cols[i].drop != drop]


class Trimmed:
    """A table or grid without the spaces rich pads every line with up to the table's width
    (trailing blanks a copy, a diff or a `grep ' $'` trips over)."""

    def __init__(self, inner: RenderableType) -> None:
        self.inner = inner

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in console.render_lines(self.inner, options, pad=False):
            yield from _rstrip(line)
            yield Segment.line()

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.inner)


def _rstrip(line: list[Segment]) -> list[Segment]:
    segs = list(line)
    while segs and not segs[-1].control and not segs[-1].text.rstrip():
        segs.pop()
    if segs and not segs[-1].control:
        last = segs[-1]
        segs[-1] = Segment(last.text.rstrip(), last.style)
    return segs


def say(console: Console, text: str | Text, indent: int | None = None, glue: Sequence[tuple[int, int]] = ()) -> None:
    """A line of prose (markup, or a Text) wrapped to the console, each continuation line indented
    under its start (by `indent`; by default 2 more than the line's own indent): never cut, no
    trailing spaces. `glue`: spans of the plain text kept on one line when they fit one."""
    body = Text.from_markup(text) if isinstance(text, str) else text
    if console.soft_wrap:   # a console that never breaks lines (stderr to a log): the line whole
        console.print(body, soft_wrap=True)
        return
    if indent is None:
        indent = len(body.plain) - len(body.plain.lstrip(" ")) + 2
    console.print(hang(body, max(console.width, 20), indent, glue), soft_wrap=True)


def say_parts(console: Console, head: str, parts: Sequence[str], sep: str = "; ", indent: int | None = None) -> None:
    """`head` then `parts` joined by `sep` (plain text, not markup), wrapped between parts where it
    can be; continuation lines start under the first part (or `indent`)."""
    glue, pos = [], len(head)
    for i, p in enumerate(parts):
        glue.append((pos, pos + len(p)))
        pos += len(p) + (len(sep) if i < len(parts) - 1 else 0)
    width = max(console.width, 20)
    if indent is None:
        indent = len(head) if len(head) <= width // 3 else 2
    say(console, Text(head + sep.join(parts)), indent, glue)


def hang(text: Text, width: int, indent: int, glue: Sequence[tuple[int, int]] = ()) -> Text:
    """`text` broken at spaces into lines of at most `width` cells, continuation lines indented
    (a word longer than a line is broken, never cut; styles are kept)."""
    indent = min(indent, width // 2)
    probe = list(text.plain)
    # a short parenthesis stays on one line: "(tx-rx" at a line's end, "8.99M)" under it reads badly
    parens = [m.span() for m in re.finditer(r"\([^()\n]{0,30}\)", text.plain)]
    for a, b in [*glue, *parens]:
        if b - a <= width - indent:   # a span longer than a line may break anywhere
            probe[a:b] = [("\xa0" if ch == " " else ch) for ch in probe[a:b]]   # textwrap breaks at ASCII blanks only
    probe_s = "".join(probe)
    out, pos, first = Text(), 0, True
    for raw in probe_s.split("\n"):
        lines = textwrap.wrap(raw, width, subsequent_indent=" " * indent, break_on_hyphens=False,
                              expand_tabs=False, replace_whitespace=False) or [""]
        for k, ln in enumerate(lines):
            body = ln[indent:] if k else ln
            start = probe_s.find(body, pos) if body else pos
            if not first:
                out.append("\n" + (" " * indent if k else ""))
            out.append_text(text[start:start + len(body)])
            pos, first = start + len(body), False
        pos = probe_s.find("\n", pos) + 1 if "\n" in probe_s[pos:] else pos
    return out


def warnings(items: Iterable[str], console: Console) -> None:
    for w in items:
        say(console, f"[yellow]warning:[/] {escape(w)}")


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
        say_parts(console, "  ", ident, sep=" | ", indent=4)
        if i["pci"]:
            p = i["pci"]
            say(console, f"  pci {p['slot']} {p['vendor']}:{p['device']} subsystem "
                          f"{p['subsystem_vendor']}:{p['subsystem_device']}")
        if i["devlink"]:
            d = i["devlink"]
            say(console, f"  devlink {d['handle']} eswitch {d['eswitch_mode'] or '-'} versions {d['versions']}")
        st = i["state"]
        say_parts(console, "  state ", [f"admin {'up' if st['admin_up'] else 'down'}, oper {st['oper_state']}",
                                        f"mtu {i['mtu']} (min {i['min_mtu']}, max {i['max_mtu']})"]
                  + ([f"peer {i['peer']['name']} mtu {i['peer']['mtu']}"] if i["peer"] else []), indent=4)
        ch = i["channels"]
        queues = [f"rx {i['queues']['rx']} tx {i['queues']['tx']}"] + ([f"channels {_counts(ch)}"] if ch else [])
        say_parts(console, "  queues ", queues + ([f"rings {_counts(i['rings'])}"] if i["rings"] else []), indent=4)
        feats = [f"{n} {'on' if v['active'] else 'off'}{' [fixed]' if v['fixed'] else ''}"
                 for n, v in i["features"].items()]
        say_parts(console, "  features ", feats or ["-"], sep=", ", indent=4)
        x = i["xdp"]
        known = ", ".join(x["features"]) if x["features"] else ("none" if x["features"] is not None
                                                                else "n/a (no netdev family)")
        zc = [f"zc max segs {x['zc_max_segs']}"] if x["zc_max_segs"] else []
        say_parts(console, "  xdp-features ", [known, *zc], indent=4)
        for a in x["attached"]:
            say(console, f"  attached {a['mode']}: prog {a['prog_id']} {a.get('name') or ''}")
        for mode, v in i["modes"].items():
            console.print(f"  {mode:8} [{STATUS_STYLE.get(v['status'], '')}]{v['status']}[/]")
            for r in v["reasons"]:
                say(console, f"           - {escape(r)}")
            for n in v["notes"]:
                say(console, f"           [dim]note: {escape(n)}[/]")
        say(console, f"  [bold]recommended: {i['recommended']['mode']}[/] - {escape(i['recommended']['reason'])}")
    for w in report["warnings"]:
        say(console, f"[yellow]warning:[/] {escape(w)}")


def _counts(d: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items() if v is not None)


PROFILE_COLUMNS = (("driver", "driver"), ("native", "native"), ("zero_copy", "zero-copy"),
                   ("hw_offload", "hw-offload"), ("multi_buffer", "multi-buffer"), ("native_mtu_max", "native MTU"))


def profiles(doc: dict, out: Console, err: Console) -> None:
    rows = doc["profiles"]
    say(out, f"driver profiles ({len(rows)} valid): the kernel release each feature arrived in (- never); "
             "native MTU: the largest MTU native XDP takes")
    cols = [Col(head, "right" if key == "native_mtu_max" else "left") for key, head in PROFILE_COLUMNS]
    out.print(fit(out, cols, [[str(r[key]) if r[key] is not None else "-" for key, _ in PROFILE_COLUMNS]
                              for r in rows]))
    for pr in doc["problems"]:
        problem = f"{pr['file']}: {pr['field']}: {pr['message']}"
        say(err, f"[yellow]warning:[/] {escape(problem)}")
