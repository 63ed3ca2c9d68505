"""The `offload` command line: one program, subcommands, --json on everything that reports."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
import traceback
from pathlib import Path

import click

from . import __version__, lab as lab_mod, netns, profiles as profiles_mod
from .errors import Exit, OffloadError, UsageError


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


class _LazyConsole:
    """rich is imported only when something is printed for a human (the --json path skips it)."""

    def __init__(self, stderr: bool) -> None:
        self._stderr, self._console = stderr, None

    def __getattr__(self, name):
        if self._console is None:
            from rich.console import Console

            stream = sys.stderr if self._stderr else sys.stdout
            # Piped output keeps whole table rows (rich would otherwise wrap at 80 columns).
            self._console = Console(stderr=self._stderr, highlight=False,
                                    width=None if stream.isatty() else 220)
        return getattr(self._console, name)


out = _LazyConsole(stderr=False)
err = _LazyConsole(stderr=True)


def _emit_json(data) -> None:
    # Indented for a person at a terminal; compact (and faster) for pipes and programs.
    click.echo(json.dumps(data, indent=2 if sys.stdout.isatty() else None))


def handles_errors(fn):
    """Turn OffloadError (and permission errors from the kernel) into a message and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OffloadError as e:
            err.print(f"[red]offload: error:[/] {escape(e.message)}")
            if e.hint:
                err.print(f"  hint: {escape(e.hint)}")
            sys.exit(int(e.exit_code))
        except PermissionError as e:  # the kernel said EPERM where we did not check beforehand
            err.print(f"[red]offload: error:[/] the kernel refused: {e.strerror or e}; "
                      "this needs root (CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN)")
            sys.exit(int(Exit.PRIVILEGE))
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as e:  # a bug: say so plainly, keep the traceback behind a switch
            if os.environ.get("OFFLOAD_DEBUG"):
                traceback.print_exc()
            err.print(f"[red]offload: internal error:[/] {type(e).__name__}: {e} "
                      "(set OFFLOAD_DEBUG=1 for the traceback)")
            sys.exit(int(Exit.INTERNAL))

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="offload")
def main() -> None:
    """Put XDP programs on network interfaces in the best mode each supports."""


@main.command()
@click.argument("interfaces", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema_version 1).")
@click.option("-v", "--verbose", is_flag=True, help="Everything known about each interface.")
@click.option("--netns", "ns", metavar="NS", help="Probe inside network namespace NS (default: the current one).")
@click.option("--profiles", "profiles_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Driver profiles directory (default: drivers_profiles/, or $OFFLOAD_PROFILES).")
@click.option("--facts", is_flag=True,
              help="Print the raw facts the decisions use (JSON; the format of tests/fixtures).")
@handles_errors
def probe(interfaces, as_json, verbose, ns, profiles_dir, facts) -> None:
    """What XDP and offload each interface supports, and which mode offload would use."""
    from .probe import collect, facts_document, probe as run_probe

    if ns is not None:
        _require_root_for_netns()
    with netns.inside(ns):
        if facts:
            _emit_json(facts_document(*collect(list(interfaces) or None)))
            return
        report = run_probe(list(interfaces) or None, profiles_dir)
    if as_json:
        _emit_json(report)
        return
    from . import render

    (render.probe_detail if verbose else render.probe_table)(report, out)


def _require_root_for_netns() -> None:
    from .privileges import CAP_SYS_ADMIN, require

    require(CAP_SYS_ADMIN, action="entering another network namespace (--netns)")


@main.command()
@click.option("--check", is_flag=True, help="Validate every profile; exit 1 if any is malformed.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--profiles", "profiles_dir", type=click.Path(file_okay=False, path_type=Path))
@handles_errors
def profiles(check, as_json, profiles_dir) -> None:
    """List the driver profiles (and validate them with --check)."""
    profs, problems = profiles_mod.load(profiles_dir)
    rows = []
    for drv, p in sorted(profs.items()):
        x = p.data["xdp"]
        cell = lambda k: (x[k].get("since") if x[k].get("supported") else "-")  # noqa: E731
        rows.append({"driver": drv, "native": cell("native"), "zero_copy": cell("zero_copy"),
                     "hw_offload": cell("hw_offload"), "multi_buffer": cell("multi_buffer"),
                     "native_mtu_max": (p.limit("native_mtu_max") or {}).get("value"), "file": p.path})
    if as_json:
        _emit_json({"profiles": rows, "problems": [vars(pr) for pr in problems]})
    else:
        from rich.table import Table

        t = Table(title=f"driver profiles ({len(rows)} valid)")
        for c in ("driver", "native", "zero_copy", "hw_offload", "multi_buffer", "native_mtu_max"):
            t.add_column(c)
        for r in rows:
            t.add_row(*(str(r[c]) if r[c] is not None else "-" for c in
                        ("driver", "native", "zero_copy", "hw_offload", "multi_buffer", "native_mtu_max")))
        out.print(t)
        for pr in problems:
            err.print(f"[yellow]warning:[/] {pr}", markup=False)
    if check and problems:
        sys.exit(int(Exit.FAILED))


def in_netns(fn):
    """--netns NS: run the command inside network namespace NS (keeping this mount namespace, so
    the host's bpffs stays reachable, unlike `ip netns exec`)."""

    @click.option("--netns", "ns", metavar="NS", help="Run inside network namespace NS (default: the current one).")
    @functools.wraps(fn)
    def wrapper(*args, ns=None, **kwargs):
        if ns is not None:
            _require_root_for_netns()
        with netns.inside(ns):
            return fn(*args, **kwargs)

    return wrapper


MODE_CHOICE = click.Choice(["auto", "hw", "native", "generic"])
FLOOR_CHOICE = click.Choice(["hw", "native", "generic"])


@main.command()
@click.argument("iface")
@click.argument("program")
@click.option("--mode", default="auto", show_default=True, type=MODE_CHOICE,
              help="auto tries hw, native, generic in turn; a mode names the only one to try.")
@click.option("--min-mode", type=FLOOR_CHOICE, help="The lowest mode acceptable (the floor).")
@click.option("--param", "params", multiple=True, metavar="K=V", help="Program parameter (repeatable).")
@click.option("--force", is_flag=True, help="Replace a program offload did not attach; attach to a protected link.")
@click.option("--json", "as_json", is_flag=True)
@handles_errors
@in_netns
def attach(iface, program, mode, min_mode, params, force, as_json) -> None:
    """Attach PROGRAM (a name from bpf/ or a C file) to IFACE in the best mode it takes."""
    from . import attach as attach_mod
    from .programs import parse_params

    progress = (lambda msg: None) if as_json else (lambda msg: err.print(f"[dim]{escape(msg)}[/]"))
    res = attach_mod.attach(iface, program, mode, min_mode, parse_params(list(params)), force, progress)
    if as_json:
        _emit_json(res.to_dict())
        return
    for w in res.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}")
    for f in res.fallbacks:
        out.print(f"[yellow]{f['mode']}:[/] {escape(f['reason'])}")
    verb = f"replaced prog {res.replaced} with" if res.replaced else "attached"
    out.print(f"{iface}: {verb} {res.program} in [bold]{res.mode}[/] mode (prog id {res.prog_id})")


@main.command()
@click.argument("iface")
@click.option("--mode", type=FLOOR_CHOICE, help="Only if attached in this mode.")
@click.option("--json", "as_json", is_flag=True)
@handles_errors
@in_netns
def detach(iface, mode, as_json) -> None:
    """Remove offload's program from IFACE, and its pins."""
    from . import attach as attach_mod

    res = attach_mod.detach(iface, mode)
    if as_json:
        _emit_json(res)
    elif res["detached"]:
        out.print(f"{iface}: detached prog {res['detached']['prog_id']} ({res['detached']['mode']}); pins removed")
    else:
        out.print(f"{iface}: nothing attached; stale pins removed")


@main.command()
@click.option("--json", "as_json", is_flag=True)
@handles_errors
@in_netns
def status(as_json) -> None:
    """Every XDP program on every interface of this namespace, ours or not."""
    from . import attach as attach_mod

    res = attach_mod.status()
    if as_json:
        _emit_json(res)
        return
    from rich.table import Table

    t = Table(title=f"XDP programs (namespace {res['netns']})")
    for c in ("interface", "mode", "prog id", "name", "ours", "program", "since"):
        t.add_column(c)
    for r in res["attachments"]:
        t.add_row(r["interface"], r["mode"], str(r["prog_id"]), r["name"] or "-",
                  {True: "yes", False: "no", None: "?"}[r["ours"]],
                  r["program"] or "-", r["attached_at"] or "-")
    out.print(t if res["attachments"] else "no XDP program attached")
    for s in res["stale_pins"]:
        err.print(f"[yellow]warning:[/] pins for {s} but its program is not attached: offload detach {s}")
    for w in res["warnings"]:
        err.print(f"[yellow]warning:[/] {escape(w)}")


@main.command()
@click.argument("iface")
@click.option("--interval", type=float, help="Sample twice, S seconds apart, and show rates.")
@click.option("--json", "as_json", is_flag=True)
@handles_errors
@in_netns
def stats(iface, interval, as_json) -> None:
    """Per-action packet counters (and rates) of offload's program on IFACE."""
    import time

    from . import stats as stats_mod

    if interval is not None and interval <= 0:
        raise UsageError("--interval must be positive")
    first = stats_mod.read(iface)
    res = dict(first)
    if interval:
        time.sleep(interval)
        res = stats_mod.read(iface)
        res["rates_pps"] = stats_mod.rates(first, res)
        res["interval"] = interval
    if as_json:
        _emit_json(res)
        return
    out.print(f"{iface}: {res['program']} in {res['mode']} mode (prog id {res['prog_id']})")
    for a in res["packets"]:
        rate = f"  {res['rates_pps'][a]:>14,.1f} pps" if interval else ""
        out.print(f"  {a:9} {res['packets'][a]:>14,} packets {res['bytes'][a]:>16,} bytes{rate}")


@main.group("filter")
def filter_() -> None:
    """Edit the blocklist of an attached `filter` program."""


def _filter_cmd(name: str, fn_name: str, help_: str, needs_prefixes: bool = True):
    @filter_.command(name, help=help_)
    @click.argument("iface")
    @click.argument("prefixes", nargs=-1, required=needs_prefixes)
    @click.option("--json", "as_json", is_flag=True)
    @handles_errors
    @in_netns
    def cmd(iface, prefixes, as_json) -> None:
        from . import filter as filter_mod

        res = getattr(filter_mod, fn_name)(iface, list(prefixes)) if needs_prefixes else filter_mod.list_(iface)
        if as_json:
            _emit_json(res)
        else:
            for k, v in res.items():
                if k != "interface":
                    out.print(f"{k}: {', '.join(v) if v else '-'}")
    return cmd


_filter_cmd("add", "add", "Block source PREFIXES on IFACE.")
_filter_cmd("del", "delete", "Unblock PREFIXES on IFACE.")
_filter_cmd("list", "list_", "Show the blocked prefixes on IFACE.", needs_prefixes=False)


@main.command("programs")
@click.option("--json", "as_json", is_flag=True)
@handles_errors
def programs_cmd(as_json) -> None:
    """The program library (bpf/) and the parameters each takes."""
    from . import programs as prog_mod

    rows = [{"name": n, "summary": prog_mod.summary(prog_mod.library_dir() / f"{n}.c"),
             "params": [p.name for p in prog_mod.LIBRARY_PARAMS.get(n, ())]} for n in prog_mod.library()]
    if as_json:
        _emit_json({"programs": rows})
        return
    for r in rows:
        params = f" (params: {', '.join(r['params'])})" if r["params"] else ""
        out.print(f"[bold]{r['name']}[/]{params}: {escape(r['summary'])}")


@main.group(invoke_without_command=True)
@click.option("--lab", "use_lab", is_flag=True, help="Build a veth lab for the run and always remove it.")
@click.option("--tx", help="Device the generator sends from.")
@click.option("--rx", help="Device the program under test runs on (the tx device's link partner).")
@click.option("--modes", "modes_", default="auto", show_default=True,
              help="Comma-separated hw,native,generic, or auto (every mode the rx device may take).")
@click.option("--program", default="count_drop", show_default=True)
@click.option("--generator", default="auto", show_default=True, type=click.Choice(["auto", "pktgen", "live-frames"]))
@click.option("--duration", default=5.0, show_default=True, type=float, help="Measured window per run, seconds.")
@click.option("--warmup", default=1.0, show_default=True, type=float, help="Seconds before the window.")
@click.option("--pkt-size", default=60, show_default=True, type=int, help="Frame size without FCS.")
@click.option("--threads", default=1, show_default=True, type=int, help="Generator threads (one per CPU).")
@click.option("--repeat", default=3, show_default=True, type=int, help="Runs per mode (median reported).")
@click.option("--count", type=int, help="Exact mode: send COUNT frames per run and count them all.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write one row per run.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write a PNG bar chart.")
@click.pass_context
@handles_errors
@in_netns
def bench(ctx, use_lab, tx, rx, modes_, program, generator, duration, warmup, pkt_size, threads, repeat, count,
          as_json, csv_path, plot_path) -> None:
    """Packets per second through each XDP mode, side by side (the kernel generates and counts)."""
    if ctx.invoked_subcommand is not None:
        return
    from . import bench as bench_mod, report_files

    if use_lab == bool(tx or rx):
        raise UsageError("give either --lab, or --tx DEV and --rx DEV")
    if not use_lab and not (tx and rx):
        raise UsageError("--tx and --rx go together")
    spec = bench_mod.Spec(tx or "", rx or "", [m.strip() for m in modes_.split(",") if m.strip()], program,
                          generator, duration, warmup, pkt_size, threads, repeat, count)
    term = bench_mod._TermAsInterrupt()  # SIGTERM while the lab is built or torn down cleans up too
    try:
        with _progress(quiet=as_json) as progress:
            doc = _bench_run(bench_mod, spec, use_lab, pkt_size, progress)
    finally:
        term.restore()
    if csv_path:
        report_files.write_csv(doc, csv_path)
    if plot_path:
        report_files.write_plot(doc, plot_path)
    if as_json:
        _emit_json(doc)
    else:
        report_files.print_table(doc, out)
        for s in doc["skipped"]:
            out.print(f"[yellow]skipped {s['mode']}:[/] {escape(s['reason'])}")
        for n in doc["notes"]:
            out.print(f"[dim]note: {escape(n)}[/]")
    if doc["partial"]:
        err.print(f"[yellow]partial results:[/] {escape(doc['partial'])}")
        sys.exit(int(Exit.FAILED))


@contextlib.contextmanager
def _progress(quiet: bool):
    """Progress for long work: a live status line at a terminal, one line per step otherwise."""
    if quiet:
        yield lambda msg: None
        return
    if not sys.stderr.isatty():
        yield lambda msg: err.print(f"[dim]{escape(msg)}[/]")
        return
    started = time.monotonic()
    with err.status("starting") as status:
        def update(msg: str) -> None:
            status.update(f"[{time.monotonic() - started:5.0f}s] {escape(msg)}")
            err.print(f"[dim]{escape(msg)}[/]")
        yield update


def _bench_run(bench_mod, spec, use_lab: bool, pkt_size: int, progress) -> dict:
    if not use_lab:
        return bench_mod.run(spec, progress)
    name = f"bench{os.getpid() % 1000}"
    made = lab_mod.up(name, pairs=1, mtu=max(1500, pkt_size - 14))
    try:
        spec.tx, spec.rx = made.pairs[0].a, made.pairs[0].b
        progress(f"lab {name}: {spec.tx} -> {spec.rx} in namespace {made.netns}")
        with netns.inside(made.netns):
            return bench_mod.run(spec, progress)
    finally:
        lab_mod.down(name)
        progress(f"lab {name} removed")


@bench.command("prog")
@click.argument("program")
@click.option("--repeat", default=5, show_default=True, type=int)
@click.option("--pkt-size", default=64, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True)
@handles_errors
def bench_prog(program, repeat, pkt_size, as_json) -> None:
    """Per-packet cost of PROGRAM through BPF_PROG_RUN (ns/packet; no traffic, no device)."""
    from . import bench as bench_mod

    res = bench_mod.prog_cost(program, repeat, pkt_size)
    if as_json:
        _emit_json(res)
    else:
        out.print(f"{program}: {res['ns_per_packet']} ns/packet (median of {repeat} x {res['iterations']:,} runs, "
                  f"{res['pkt_size']}-byte frame)")


def _policy(path: str):
    from .policy import load

    return load(path)


@main.command("plan")
@click.option("-f", "--file", "policy_file", required=True, type=click.Path(dir_okay=False), help="Policy YAML.")
@click.option("--json", "as_json", is_flag=True)
@handles_errors
@in_netns
def plan_cmd(policy_file, as_json) -> None:
    """Desired against actual, per interface: what apply would do and why. Changes nothing."""
    from . import orchestrate

    items = [i.to_dict() for i in orchestrate.compute_plan(_policy(policy_file))]
    if as_json:
        _emit_json({"policy": policy_file, "plan": items})
        return
    if not items:
        out.print("no interface matches the policy and nothing of it is attached")
    for i in items:
        out.print(f"[bold]{i['interface']}[/]: {i['action']} {i['program'] or ''} "
                  f"(mode {i['mode'] or '-'}) - {escape(i['reason'])}")


@main.command("apply")
@click.option("-f", "--file", "policy_file", required=True, type=click.Path(dir_okay=False), help="Policy YAML.")
@click.option("--best-effort", is_flag=True, help="Keep what succeeded when a step fails (default: roll back).")
@click.option("--journal", type=click.Path(dir_okay=False), help="JSON-lines journal (default /var/lib/offload/journal.jsonl).")
@click.option("--lock-timeout", default=30.0, show_default=True, type=float, help="Seconds to wait for another apply.")
@click.option("--json", "as_json", is_flag=True)
@handles_errors
@in_netns
def apply_cmd(policy_file, best_effort, journal, lock_timeout, as_json) -> None:
    """Make the interfaces match the policy: transactional, idempotent, journaled."""
    from pathlib import Path as _P

    from . import orchestrate

    pol = _policy(policy_file)
    with _progress(quiet=as_json) as progress:
        res = orchestrate.apply(pol, best_effort, _P(journal) if journal else None, lock_timeout, progress)
    if as_json:
        _emit_json(res)
    else:
        for st in res["steps"]:
            out.print(f"{st['interface']}: {st['action']} {st['program'] or ''} -> {st.get('mode') or '-'} ({st['status']})")
        for st in res["failed"]:
            err.print(f"[red]{st['interface']}: {st['action']} failed:[/] {escape(st['error'])}")
        if res["rolled_back"]:
            err.print(f"rolled back: {', '.join(res['rolled_back'])}")
    if res["outcome"] != "ok":
        sys.exit(int(Exit.FAILED))


@main.command("watch")
@click.option("-f", "--file", "policy_file", required=True, type=click.Path(dir_okay=False), help="Policy YAML.")
@click.option("--interval", default=30.0, show_default=True, type=float, help="Seconds between drift checks.")
@click.option("--detach-on-exit", is_flag=True, help="Remove the policy's programs when stopped.")
@click.option("--journal", type=click.Path(dir_okay=False))
@handles_errors
@in_netns
def watch_cmd(policy_file, interval, detach_on_exit, journal) -> None:
    """Apply, then keep applying as interfaces come and go (and on drift), until SIGTERM."""
    from pathlib import Path as _P

    from . import orchestrate

    orchestrate.watch(_policy(policy_file), interval, detach_on_exit, _P(journal) if journal else None,
                      log=lambda line: click.echo(line, err=False))


@main.group("export")
def export_() -> None:
    """Fleet exports: Node Feature Discovery labels, Prometheus textfile metrics."""


@export_.command("nfd")
@click.option("--path", default=None, help="Feature file (default: NFD's features.d/offload).")
@click.option("--json", "as_json", is_flag=True)
@handles_errors
@in_netns
def export_nfd(path, as_json) -> None:
    """Write NFD labels: best XDP mode, hw-offload, native, drivers."""
    from . import exports

    res = exports.export_nfd(path or exports.NFD_DEFAULT)
    _emit_json(res) if as_json else out.print(f"wrote {len(res['labels'])} labels to {res['path']}")


@export_.command("prometheus")
@click.option("--path", default=None, help="Textfile (default: node-exporter's textfile_collector/offload.prom).")
@click.option("--bench-json", type=click.Path(dir_okay=False, exists=True), help="Include a bench result.")
@click.option("--json", "as_json", is_flag=True)
@handles_errors
@in_netns
def export_prometheus(path, bench_json, as_json) -> None:
    """Write node-exporter textfile metrics: attached programs, per-action counters, bench results."""
    from . import exports

    res = exports.export_prometheus(path or exports.PROM_DEFAULT, bench_json)
    _emit_json(res) if as_json else out.print(f"wrote {res['lines']} lines to {res['path']}")


@main.group()
def lab() -> None:
    """Veth labs to try offload without hardware (each in its own network namespace)."""


@lab.command("up")
@click.option("--name", default="demo", show_default=True, help="Lab name: 1-8 lowercase letters/digits.")
@click.option("--pairs", default=1, show_default=True, type=int, help="Number of veth pairs.")
@click.option("--mtu", default=1500, show_default=True, type=int, help="MTU of every veth.")
@click.option("--json", "as_json", is_flag=True)
@handles_errors
def lab_up(name, pairs, mtu, as_json) -> None:
    """Create a lab: namespace offload-lab-NAME with veth pairs NAME-aI <-> NAME-bI."""
    made = lab_mod.up(name, pairs, mtu)
    if as_json:
        _emit_json(made.to_dict())
    else:
        out.print(f"lab {made.name}: namespace {made.netns}, {len(made.pairs)} veth pair(s) at MTU {mtu}: "
                  + ", ".join(f"{p.a}<->{p.b}" for p in made.pairs[:8]) + (" ..." if len(made.pairs) > 8 else ""))
        out.print(f"probe it: offload probe --netns {made.netns}    remove it: offload lab down {made.name}")


@lab.command("down")
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Remove every lab.")
@handles_errors
def lab_down(names, all_) -> None:
    """Remove labs and everything in them (idempotent)."""
    if all_:
        names = tuple(lab.name for lab in lab_mod.list_labs())
    elif not names:
        raise UsageError("name the lab(s) to remove, or --all")
    for n in names:
        removed = lab_mod.down(n)
        out.print(f"lab {n}: {'removed' if removed else 'not present (nothing to do)'}")


@lab.command("list")
@click.option("--json", "as_json", is_flag=True)
@handles_errors
def lab_list(as_json) -> None:
    """Show the labs that exist."""
    labs = lab_mod.list_labs()
    if as_json:
        _emit_json({"labs": [x.to_dict() for x in labs]})
        return
    if not labs:
        out.print("no labs")
    for x in labs:
        out.print(f"{x.name}: namespace {x.netns}, {len(x.pairs)} pair(s), MTU {x.mtu}")


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("-v", "--verbose", is_flag=True)
@handles_errors
def demo(as_json, verbose) -> None:
    """Build a lab (a pair at MTU 1500, a pair at 9000), probe it, show the result, remove the lab."""
    from .probe import probe as run_probe

    name = f"demo{os.getpid() % 10000}"
    made = lab_mod.up(name, pairs=2, mtus=[1500, 9000])
    try:
        with netns.inside(made.netns):
            report = run_probe()
    finally:
        lab_mod.down(name)
    if as_json:
        _emit_json(report)
        return
    out.print(f"[dim]lab {name} (namespace {made.netns}) built, probed and removed[/]")
    from . import render

    (render.probe_detail if verbose else render.probe_table)(report, out)


if __name__ == "__main__":
    main()
