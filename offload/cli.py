"""The `offload` command line: one program, subcommands, --json on everything that reports."""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib
import inspect
import json
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import click

from offload import __version__
from offload.errors import Exit, OffloadError, UsageError
from offload.probe import mode as modes


class _Lazy:
    """A module imported on first use: `offload --version` and `--help` pay for none of them."""

    def __init__(self, name: str) -> None:
        self._name, self._mod = name, None

    def __getattr__(self, attr):
        if self._mod is None:
            self._mod = importlib.import_module(self._name)
        return getattr(self._mod, attr)


lab_mod = _Lazy("offload.lab")
netns = _Lazy("offload.kernel.netns")
signals = _Lazy("offload.kernel.signals")
LAB_MAX_PAIRS = 2000  # offload.lab.MAX_PAIRS, here so that `--help` imports no lab (tests/unit/test_start.py)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


class _LazyConsole:
    """rich is imported only when something is printed for a human (the --json path skips it)."""

    def __init__(self, stderr: bool) -> None:
        self._stderr, self._console = stderr, None

    def rich(self):
        """The rich Console itself (for a live display that needs one)."""
        self.__getattr__("print")
        return self._console

    @property
    def file(self):
        """The stream itself, for text that must go out verbatim (no rich needed for that)."""
        return sys.stderr if self._stderr else sys.stdout

    def __getattr__(self, name):
        if self._console is None:
            from rich.console import Console

            # A terminal's own width; piped output a fixed 100 columns (tables fit, notes wrap).
            # Messages on stderr to a file or pipe are never broken into lines (soft wrap): a path
            # or an error stays whole for whoever greps a log; at a terminal they wrap indented.
            tty = self.file.isatty()
            self._console = Console(stderr=self._stderr, highlight=False, soft_wrap=self._stderr and not tty,
                                    width=None if tty else PIPED_WIDTH)
        return getattr(self._console, name)


PIPED_WIDTH = 100
JSON_HELP = "Print the result as one JSON document (its schema: offload/schemas/)."
out = _LazyConsole(stderr=False)
err = _LazyConsole(stderr=True)


class Output(NamedTuple):   # not a dataclass: `--help` and `--version` import no dataclasses
    """What a command prints. `kind`: its --json document (offload.jsondoc: envelope and schema).
    `render`: "module:function" for a person, imported only when called (so --json and --help pay
    for no rich); it gets the result, stdout's console, stderr's too with `err`, and the view options
    the command passes. With `parts` it is given each part as the work goes (emit_part) instead."""
    kind: str
    render: str
    err: bool = False
    parts: bool = False

    def show(self, res: dict, **view) -> None:
        module, _, fn = self.render.partition(":")
        getattr(importlib.import_module(module), fn)(res, out, *((err,) if self.err else ()), **view)


# The command table: what each command returns (its document kind) and how a person sees it.
OUTPUTS: dict[str, Output] = {
    "probe": Output("probe", "offload.probe.render:probe_table"),
    "probe -v": Output("probe", "offload.probe.render:probe_detail"),
    "profiles": Output("profiles", "offload.probe.render:profiles", err=True),
    "attach": Output("attach", "offload.load.render:attach_result", err=True),
    "detach": Output("detach", "offload.load.render:detach_result"),
    "check": Output("check", "offload.load.render:check_result"),
    "status": Output("status", "offload.load.render:status", err=True),
    "status -A": Output("status", "offload.load.render:status_all", err=True),
    "gc": Output("gc", "offload.load.render:gc_result", err=True),
    "stats": Output("stats", "offload.load.render:stats"),
    "filter": Output("filter", "offload.load.render:filter_result"),
    "programs": Output("programs", "offload.load.render:programs"),
    "bench": Output("bench", "offload.bench.render:bench_result"),
    "bench prog": Output("bench-prog", "offload.bench.render:prog_cost"),
    "bench search": Output("bench-search", "offload.bench.render:search_result"),
    "bench compare": Output("bench-compare", "offload.bench.render:compare_result"),
    "plan": Output("plan", "offload.orchestrate.render:plan"),
    "apply": Output("apply", "offload.orchestrate.render:apply_result", err=True),
    "export nfd": Output("export-nfd", "offload.orchestrate.render:export_nfd"),
    "export prometheus": Output("export-prometheus", "offload.orchestrate.render:export_prometheus"),
    "export systemd": Output("export-systemd", "offload.orchestrate.render:export_systemd"),
    "lab up": Output("lab-up", "offload.render:lab_up"),
    "lab down": Output("lab-down", "offload.render:lab_removed", parts=True),
    "lab list": Output("lab-list", "offload.render:lab_list"),
    "demo": Output("demo", "offload.render:demo"),
}


def json_wanted() -> bool:
    """Whether the running command was given --json (every command names that option `as_json`)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.params.get("as_json"))


def emit(res: dict, command: str, compact: bool = False, **view) -> None:
    """The one way a result leaves a command: with --json as its document, else rendered for a
    person (a command shown in parts prints only the document here). Documents are indented at a
    terminal; compact (and faster) for pipes and programs, and always with `compact`."""
    output = OUTPUTS[command]
    if json_wanted():
        from offload import jsondoc

        _print_json(jsondoc.document(output.kind, res), compact)
    elif not output.parts:
        output.show(res, **view)


def emit_part(part: dict, command: str) -> None:
    """A part of the result, shown to a person as soon as it is known (with --json, the whole
    document follows from emit)."""
    if not json_wanted():
        OUTPUTS[command].show(part)


def _print_json(doc: dict, compact: bool = False) -> None:
    click.echo(json.dumps(doc, indent=None if compact or not sys.stdout.isatty() else 2))


def _fail(message: str, hint: str | None, code: int, document: bool, label: str = "error") -> None:
    """Exit with `code` after saying why: on stderr for a person, and with `document` (--json) also
    as a document on stdout, which is what a program reads."""
    if document:
        from offload import jsondoc

        _print_json(jsondoc.error(message, hint, code), compact=True)
    from offload.probe.render import say

    say(err, f"[red]offload: {label}:[/] {escape(message)}")
    if hint:
        say(err, f"  hint: {escape(hint)}")
    sys.exit(int(code))


def handles_errors(fn):
    """Turn OffloadError (and permission errors from the kernel) into a message and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        document = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except OffloadError as e:
            _fail(e.message, e.hint, e.exit_code, document)
        except OSError as e:  # a refusal where we did not check beforehand: named, with what is lacking
            if not isinstance(e, PermissionError) and e.errno not in (errno.EPERM, errno.EACCES, errno.EROFS):
                _internal(e, document)
            from offload.kernel import privileges

            denied = privileges.explain_denied(e)
            _fail(denied.message, denied.hint, denied.exit_code, document)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as e:  # a bug: say so plainly, keep the traceback behind a switch
            _internal(e, document)

    return wrapper


def _internal(e: Exception, document: bool) -> None:
    if os.environ.get("OFFLOAD_DEBUG"):
        import traceback  # only here: ~10 ms of every start otherwise

        traceback.print_exc()
    _fail(f"{type(e).__name__}: {e}", "set OFFLOAD_DEBUG=1 for the traceback", Exit.INTERNAL, document,
          label="internal error")


class Bounded(click.ParamType):
    """A finite int or float in [lo, hi] (lo excluded with lo_open). Every numeric option takes one,
    so nan, inf, 0 and absurd values stop at the parser (exit 2), before any sleep, loop or lab."""

    def __init__(self, kind: type[int] | type[float], lo: float, hi: float, lo_open: bool = False) -> None:
        self.kind, self.lo, self.hi, self.lo_open = kind, lo, hi, lo_open
        self.name = "integer" if kind is int else "float"

    def convert(self, value, param, ctx):
        v = (click.INT if self.kind is int else click.FLOAT).convert(value, param, ctx)
        if not math.isfinite(v):  # float("nan") and float("inf") parse; nan passes every comparison
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if v < self.lo or (self.lo_open and v == self.lo) or v > self.hi:
            self.fail(f"{_num(v)} is out of range: it must be {'>' if self.lo_open else '>='} {_num(self.lo)} "
                      f"and <= {_num(self.hi)}", param, ctx)
        return v


class Written(click.ParamType):
    """A path offload writes (a file; with `directory`, the directory a file is written in): every
    such option takes one, so fs.output_path's rule holds for each, checked as the line is parsed
    (exit 2, before any work). The value stays as given; the writer opens it safely."""

    name = "path"

    def __init__(self, directory: bool = False) -> None:
        self.directory = directory

    def convert(self, value, param, ctx):
        from offload.kernel import fs

        try:
            fs.output_path(value, directory=self.directory)   # click's message names the option
        except UsageError as e:
            self.fail(f"{e.message}: {e.hint}" if e.hint else e.message, param, ctx)
        return value


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)   # an int as is (:g would turn it into a float)


HOUR = 3600.0


class _WholeShortHelp:
    """A group's `--help` lists each command with the first sentence of its help in full (click's
    own cuts it at 45 characters, "..."); click wraps it under its column."""

    help: str | None
    short_help: str | None

    def get_short_help_str(self, limit: int = 45) -> str:
        if self.short_help:
            return self.short_help
        text = " ".join(inspect.cleandoc(self.help or "").split("\n\n")[0].split())
        end = re.search(r"\.(\s|$)", text)
        return text[:end.start() + 1] if end else text


class _Command(_WholeShortHelp, click.Command):
    pass


class _SubGroup(_WholeShortHelp, click.Group):
    command_class = _Command
    group_class = type   # its groups are of its kind


class _Group(_WholeShortHelp, click.Group):
    """With --json anywhere on the line, click's own usage errors (unknown option, bad value) are
    JSON documents on stdout too, with click's exit code (2)."""

    command_class = _Command
    group_class = _SubGroup

    def main(self, args=None, *a, **kw):
        argv = list(sys.argv[1:] if args is None else args)
        if "--json" not in (argv[: argv.index("--")] if "--" in argv else argv):
            return super().main(argv, *a, **kw)
        kw.pop("standalone_mode", None)
        try:
            rv = super().main(argv, *a, standalone_mode=False, **kw)
        except click.ClickException as e:
            e.show()
            from offload import jsondoc

            ctx = getattr(e, "ctx", None)   # usage errors know their command: `offload attach --help`
            hint = f"{ctx.command_path if ctx else 'offload'} --help"
            _print_json(jsondoc.error(e.format_message(), hint, e.exit_code), compact=True)
            sys.exit(e.exit_code)
        except click.Abort:
            _fail("interrupted", None, Exit.FAILED, document=True)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="offload")
def main() -> None:
    """Put XDP programs on network interfaces in the best mode each supports."""


@main.command()
@click.argument("interfaces", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema_version 1).")
@click.option("-v", "--verbose", is_flag=True, help="Everything known about each interface.")
@click.option("--netns", "ns", metavar="NS", help="Probe inside network namespace NS (default: the current one).")
@click.option("--profiles", "profiles_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Driver profiles directory (default: $OFFLOAD_PROFILES, else offload's own; missing: exit 2).")
@click.option("--facts", is_flag=True,
              help="Print the raw facts the decisions use (JSON; the format of tests/fixtures).")
@handles_errors
def probe(interfaces, as_json, verbose, ns, profiles_dir, facts) -> None:
    """What XDP and offload each interface supports, and which mode offload would use."""
    from offload.probe.profiles import chosen_dir
    from offload.probe.report import collect, facts_document
    from offload.probe.report import probe as run_probe

    profiles_dir = chosen_dir(profiles_dir)   # a path of this namespace's file system: before entering NS
    if ns is not None:
        _require_root_for_netns()
    with netns.inside(ns):
        if facts:   # the fixture format (tests/fixtures), not a --json document: no envelope
            _print_json(facts_document(*collect(list(interfaces) or None)))
            return
        report = run_probe(list(interfaces) or None, profiles_dir)
    emit(report, "probe -v" if verbose else "probe")


def _require_root_for_netns() -> None:
    from offload.kernel.privileges import CAP_SYS_ADMIN, require

    require(CAP_SYS_ADMIN, action="entering another network namespace (--netns)")


@main.command()
@click.option("--check", is_flag=True, help="Validate every profile; exit 1 if any is malformed.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.option("--profiles", "profiles_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Driver profiles directory (default: $OFFLOAD_PROFILES, else offload's own; missing: exit 2).")
@handles_errors
def profiles(check, as_json, profiles_dir) -> None:
    """List the driver profiles (and validate them with --check)."""
    from offload.probe import profiles as profiles_mod

    doc = profiles_mod.listing(profiles_mod.chosen_dir(profiles_dir), recheck=check)
    emit(doc, "profiles")
    if check and doc["problems"]:
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


MODE_CHOICE = click.Choice([str(m) for m in modes.CHOICES])   # plain strings: click shows Enum names
FLOOR_CHOICE = click.Choice([str(m) for m in modes.MODES])


@main.command("attach")
@click.argument("iface")
@click.argument("program")
@click.option("--mode", default="auto", show_default=True, type=MODE_CHOICE,
              help="auto tries hw, native, generic in turn; a mode names the only one to try.")
@click.option("--min-mode", type=FLOOR_CHOICE, help="The lowest mode acceptable (the floor).")
@click.option("--param", "params", multiple=True, metavar="K=V", help="Program parameter (repeatable).")
@click.option("--prog", "prog_name", metavar="NAME", help="The program to attach, in an object holding several.")
@click.option("--section", metavar="SEC", help="The XDP program of this ELF section (e.g. xdp, xdp/filter).")
@click.option("--dialect", default="auto", show_default=True, type=click.Choice(["auto", "libbpf", "bcc"]),
              help="How to compile a C file: libbpf style (SEC(\"xdp\")) or bcc's; auto tells by what it uses.")
@click.option("--force", is_flag=True, help="Replace a program offload did not attach; attach to a protected link.")
@click.option("--try-hw", is_flag=True,
              help="With --mode auto, try hw even when `offload check` says the program would be refused there.")
@click.option("--priority", type=Bounded(int, 0, 2**31 - 1), metavar="N",
              help="Join libxdp's multi-program dispatcher at run priority N (lower runs first), beside "
                   "other tools' programs, instead of taking the interface alone.")
@click.option("--chain", "chain_actions", metavar="ACTIONS",
              help="With --priority: the actions on which the next program runs (default: pass), "
                   "e.g. pass,drop; from aborted, drop, pass, tx, redirect.")
@click.option("--via", default="netlink", show_default=True, type=click.Choice(["netlink", "link"]),
              help="How to attach: RTM_SETLINK, or a bpf_link pinned in offload's state (native and generic; "
                   "flat cost at thousands of interfaces, but only offload or unpinning takes it off).")
@click.option("--allow-single", is_flag=True,
              help="With --priority: where the kernel cannot run the dispatcher, attach the program alone "
                   "(never done silently).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@handles_errors
@in_netns
def attach_cmd(iface, program, mode, min_mode, params, prog_name, section, dialect, force, try_hw, priority,
               chain_actions, via, allow_single, as_json) -> None:
    """Attach PROGRAM to IFACE in the best mode it takes. PROGRAM is a library name (offload
    programs), a compiled BPF object (.o), or a C file (libbpf style or bcc's dialect). With
    --priority it joins libxdp's dispatcher (xdp-loader's too) in native or generic mode."""
    from offload.load import attach as attach_mod
    from offload.load import programs

    if priority is None and (chain_actions is not None or allow_single):
        raise UsageError("--chain and --allow-single go with --priority (a program in libxdp's dispatcher)")
    if priority is not None and via == "link":
        raise UsageError("--via link and --priority do not go together: libxdp attaches its dispatcher by netlink")
    if priority is not None and try_hw:
        raise UsageError("--try-hw and --priority do not go together: a dispatcher's chain is never offloaded")
    prog = programs.resolve_for(iface, program, programs.parse_params(list(params)), prog_name, section, dialect)
    if priority is None:
        res = attach_mod.attach(iface, prog, mode, min_mode, force=force, progress=_steps(quiet=as_json),
                                try_hw=try_hw, via=via)
    else:
        from offload.load import chain

        res = chain.attach(iface, prog, priority, chain.parse_chain(chain_actions), mode, min_mode=min_mode,
                           allow_single=allow_single, force=force, progress=_steps(quiet=as_json))
    emit(res.to_dict(), "attach")


@main.command("check")
@click.argument("program")
@click.argument("interfaces", nargs=-1)
@click.option("--driver", "drivers", multiple=True, metavar="DRIVER",
              help="Judge against this driver's profile, with no such device here (repeatable).")
@click.option("--param", "params", multiple=True, metavar="K=V", help="Program parameter (repeatable).")
@click.option("--prog", "prog_name", metavar="NAME", help="The program to judge, in an object holding several.")
@click.option("--section", metavar="SEC", help="The XDP program of this ELF section (e.g. xdp, xdp/filter).")
@click.option("--dialect", default="auto", show_default=True, type=click.Choice(["auto", "libbpf", "bcc"]),
              help="How to compile a C file: libbpf style (SEC(\"xdp\")) or bcc's; auto tells by what it uses.")
@click.option("--in-chain", is_flag=True,
              help="Judge it as a member of libxdp's dispatcher (attach --priority): never in hw.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@handles_errors
@in_netns
def check_cmd(program, interfaces, drivers, params, prog_name, section, dialect, in_chain, as_json) -> None:
    """Will PROGRAM load on each IFACE (every interface when none is named), or on a DRIVER's
    device, in hw, native and generic mode? Reads the program once and loads nothing; every
    reason names the program's own line and a fix."""
    from offload.load import advisor, programs

    prog = programs.resolve(program, programs.parse_params(list(params)), prog_name, section, dialect)
    emit(advisor.check(prog, list(interfaces), list(drivers), chain=in_chain), "check")


@main.command("detach")
@click.argument("iface")
@click.option("--mode", type=FLOOR_CHOICE, help="Only if attached in this mode.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@handles_errors
@in_netns
def detach_cmd(iface, mode, as_json) -> None:
    """Remove offload's program from IFACE, and its pins."""
    from offload.load import attach as attach_mod

    emit(attach_mod.detach(iface, mode), "detach")


@main.command("status")
@click.option("--all-namespaces", "-A", "all_ns", is_flag=True,
              help="Every network namespace, and the orphans `offload gc` would free.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@handles_errors
@in_netns
def status_cmd(all_ns, as_json) -> None:
    """Every XDP program on every interface of this namespace, ours or not."""
    from offload.load import status as status_mod

    if all_ns:
        _require_root_for_netns()
        emit(status_mod.status_all(), "status -A")
    else:
        emit(status_mod.status(), "status")


@main.command("gc")
@click.option("--dry-run", is_flag=True, help="Say what would be freed; change nothing.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@handles_errors
def gc_cmd(dry_run, as_json) -> None:
    """Free what offload keeps that nothing uses: pins and records of namespaces or interfaces
    that are gone, of programs no longer attached (every namespace)."""
    from offload.load import gc
    from offload.load.attach import require_privileges

    require_privileges("collecting offload's orphaned pins")
    _require_root_for_netns()
    emit(gc.collect(dry_run=dry_run), "gc")


@main.command("stats")
@click.argument("iface")
@click.option("--interval", type=Bounded(float, 0, HOUR, lo_open=True),
              help="Sample twice, S seconds apart, and show rates.")
@click.option("--member", metavar="KEY", help="A policy's chain member on IFACE (its program's name in the "
              "rule's `programs`).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@handles_errors
@in_netns
def stats_cmd(iface, interval, member, as_json) -> None:
    """Per-action packet counters (and rates) of offload's program on IFACE."""
    from offload.load import stats as stats_mod

    emit(stats_mod.sample(iface, interval, member), "stats")


@main.group("filter")
def filter_() -> None:
    """Edit the blocklist of an attached `filter` program."""


def _filter_cmd(name: str, fn_name: str, help_: str, needs_prefixes: bool = True):
    @filter_.command(name, help=help_)
    @click.argument("iface")
    @click.argument("prefixes", nargs=-1, required=needs_prefixes)
    @click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
    @handles_errors
    @in_netns
    def cmd(iface, prefixes, as_json) -> None:
        from offload.load import filter as filter_mod

        res = getattr(filter_mod, fn_name)(iface, list(prefixes)) if needs_prefixes else filter_mod.list_(iface)
        emit(res, "filter")
    return cmd


_filter_cmd("add", "add", "Block source PREFIXES on IFACE.")
_filter_cmd("del", "delete", "Unblock PREFIXES on IFACE.")
_filter_cmd("list", "list_", "Show the blocked prefixes on IFACE.", needs_prefixes=False)


@main.command("programs")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@handles_errors
def programs_cmd(as_json) -> None:
    """The program library (bpf/) and the parameters each takes."""
    from offload.load import programs as prog_mod

    emit(prog_mod.listing(), "programs")


PKT_SIZE = Bounded(int, 60, 65535)   # Ethernet's minimum frame; the IPv4 total length field's maximum
REPEAT = Bounded(int, 1, 1000)


class SizeList(click.ParamType):
    """Comma-separated frame sizes, each a PKT_SIZE (a list is for --search)."""

    name = "sizes"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        parts = [p.strip() for p in str(value).split(",")]
        if not all(parts):
            self.fail(f"{value!r}: give sizes separated by commas, e.g. 64,128,1518", param, ctx)
        sizes = [PKT_SIZE.convert(p, param, ctx) for p in parts]
        if len(set(sizes)) != len(sizes):
            self.fail(f"{value!r} names a size twice", param, ctx)
        return sizes


@main.group(invoke_without_command=True)
@click.option("--lab", "use_lab", is_flag=True, help="Build a veth lab for the run and always remove it.")
@click.option("--tx", help="Device the generator sends from.")
@click.option("--rx", help="Device the program under test runs on (the tx device's link partner).")
@click.option("--modes", "modes_", default="auto", show_default=True,
              help="Comma-separated hw,native,generic, or auto (every mode the rx device may take).")
@click.option("--program", default="count_drop", show_default=True,
              help="The program under test, as attach takes it (a library name, a .o, a C file).")
@click.option("--generator", default="auto", show_default=True, type=click.Choice(["auto", "pktgen", "live-frames"]),
              help="What sends the frames: pktgen, or BPF_PROG_RUN live frames (Linux >= 5.18); auto: pktgen "
                   "where the kernel has it.")
@click.option("--duration", default=5.0, show_default=True, type=Bounded(float, 0, HOUR, lo_open=True),
              help="Measured window per run, seconds.")
@click.option("--warmup", default=1.0, show_default=True, type=Bounded(float, 0, HOUR),
              help="Seconds before the window.")
@click.option("--pkt-size", default="60", show_default=True, type=SizeList(),
              help="Frame size without FCS; with --search a comma-separated list, e.g. 64,128,256,512,1024,1280,1518.")
@click.option("--imix", is_flag=True, help="With --search: CSIT's IMIX_v4_1 (28x64, 16x570, 4x1518 B on the wire).")
@click.option("--search", "search_goals", metavar="GOALS",
              help="Search each mode's zero-loss rate (ndr) and partial-drop rate (pdr, loss <= 0.005, or "
                   "pdr=RATIO) with MLRsearch; --duration is the final trial's length.")
@click.option("--exceed-ratio", type=Bounded(float, 0, 0.99), metavar="R",
              help="With --search: the share of a load's trial time that may lose more than the goal allows "
                   "(MLRsearch's exceed ratio; default 0.5, CSIT's; 0: every trial must pass).")
@click.option("--duration-sum", type=Bounded(float, 0, HOUR, lo_open=True), metavar="S",
              help="With --search: seconds of final trials a load is judged over (default 3 x --duration).")
@click.option("--threads", default=1, show_default=True, type=Bounded(int, 1, 1024),
              help="Generator threads, each pinned to a CPU of its own (--lab: as many veth queues).")
@click.option("--repeat", default=3, show_default=True, type=REPEAT, help="Runs per mode (median reported).")
@click.option("--count", type=Bounded(int, 1, 10**9), help="Exact mode: send COUNT frames per run and count them all.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.option("--csv", "csv_path", type=Written(), help="Write one row per run.")
@click.option("--plot", "plot_path", type=Written(), help="Write a PNG bar chart.")
@click.option("--force", is_flag=True, help="Bench on an rx device that carries XDP: set it aside, put it back after.")
@click.pass_context
@handles_errors
@in_netns
def bench(ctx, use_lab, tx, rx, modes_, program, generator, duration, warmup, pkt_size, imix, search_goals,
          exceed_ratio, duration_sum, threads, repeat, count, as_json, csv_path, plot_path, force) -> None:
    """Packets per second through each XDP mode, side by side (the kernel generates and counts);
    with --search, each mode's NDR and PDR per frame size."""
    if ctx.invoked_subcommand is not None:
        return
    from offload.bench import files, harness

    _bench_devices(use_lab, tx, rx)
    if not search_goals and (len(pkt_size) > 1 or imix):
        raise UsageError("a list of --pkt-size and --imix go with --search (a plain bench measures one size)")
    if not search_goals and (exceed_ratio is not None or duration_sum is not None):
        raise UsageError("--exceed-ratio and --duration-sum go with --search (they judge a searched load)")
    if csv_path:                             # before the run, not after minutes of it
        files.check_output(csv_path, "--csv")
    if plot_path:
        files.check_plot(plot_path)
    spec = harness.Spec(tx or "", rx or "", [m.strip() for m in modes_.split(",") if m.strip()], program,
                        generator, duration, warmup, pkt_size[0], threads, repeat, count, force)
    if search_goals:
        knobs = {"duration_sum": duration_sum, **({"exceed_ratio": exceed_ratio} if exceed_ratio is not None else {})}
        _bench_search(harness, spec, search_goals, pkt_size, imix, knobs, use_lab, as_json, csv_path, plot_path)
        return
    # SIGTERM while the lab is built or torn down cleans up too.
    with signals.sigterm_as_interrupt(), _progress(quiet=as_json) as progress:
        doc = _bench_in_lab(harness, spec, spec.pkt_size, progress) if use_lab else harness.run(spec, progress)
    if csv_path:
        files.write_csv(doc, csv_path)
    if plot_path:
        files.write_plot(doc, plot_path)
    emit(doc, "bench")
    if problem := harness.failure(doc):   # cut short, or every mode skipped
        _say_err(f"[yellow]{escape(problem)}[/]")
        sys.exit(int(Exit.FAILED))


def _bench_devices(use_lab: bool, tx: str | None, rx: str | None) -> None:
    if use_lab == bool(tx or rx):
        raise UsageError("give either --lab, or --tx DEV and --rx DEV")
    if not use_lab and not (tx and rx):
        raise UsageError("--tx and --rx go together")


def _bench_search(harness, spec, goals: str, sizes: list[int], imix: bool, knobs: dict, use_lab: bool, as_json: bool,
                  csv_path: str | None, plot_path: str | None) -> None:
    from offload.bench import files, search, trial

    if spec.count is not None:
        raise UsageError("--count and --search do not go together: the search chooses each trial's count")
    frames = [trial.single(n) for n in sizes] + ([trial.imix()] if imix else [])
    sspec = search.SearchSpec(search.parse_goals(goals), frames, **knobs)
    spec.pkt_size = max(size for f in frames for size, _ in f.sizes)   # the MTU check takes the largest
    with signals.sigterm_as_interrupt(), _progress(quiet=as_json) as progress:
        run = functools.partial(search.run, spec=sspec)
        doc = _bench_in_lab(harness, spec, spec.pkt_size, progress, run) if use_lab else run(spec, progress=progress)
    if csv_path:
        files.write_search_csv(doc, csv_path)
    if plot_path:
        files.write_search_plot(doc, plot_path)
    emit(doc, "bench search")
    if problem := search.failure(doc):
        _say_err(f"[yellow]{escape(problem)}[/]")
        sys.exit(int(Exit.FAILED))


def _steps(quiet: bool) -> Callable[[str], None]:
    """Each step of long work as a dim line on stderr; nothing when quiet (--json says only its document)."""
    return (lambda msg: None) if quiet else (lambda msg: _say_err(f"[dim]{escape(msg)}[/]"))


def _say_err(markup: str) -> None:
    """A line on stderr: whole to a pipe or a log, wrapped indented at a terminal."""
    from offload.probe.render import say

    say(err, markup)


@contextlib.contextmanager
def _progress(quiet: bool, echo: bool = True):
    """Progress for long work: a live status line at a terminal (each step also printed, with
    `echo`), one line per step otherwise."""
    if quiet or not sys.stderr.isatty():
        yield _steps(quiet)
        return
    from offload.render import Elapsed

    line, say = Elapsed(), _steps(quiet=not echo)
    with err.status(line):   # rendered at every refresh: the time ticks within a step
        def update(msg: str) -> None:
            line.step = msg
            say(msg)
        yield update


@contextlib.contextmanager
def _counted(what: str, quiet: bool, verbose: bool):
    """Progress of work over many items: (step, count) callbacks. At a terminal a bar with the
    count done of the total; each step as a line of its own only with `verbose` (a line per
    interface is what made a thousand of them slow to watch go by)."""
    say = _steps(quiet=quiet or not verbose)
    if quiet or not sys.stderr.isatty():
        yield say, lambda done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err.rich(), transient=True) as bar:
        task = bar.add_task(what, total=None)
        yield say, lambda done, total: bar.update(task, completed=done, total=total)


def _bench_in_lab(harness, spec, pkt_size: int, progress, run=None) -> dict:
    harness.check_threads(spec.threads)   # before a lab with that many queues is built
    # one rx/tx queue per generator thread, as a multi-queue NIC would spread them
    with lab_mod.temporary("bench", pairs=1, mtu=max(1500, pkt_size - 14), queues=spec.threads) as made:
        spec.tx, spec.rx = made.pairs[0].a, made.pairs[0].b
        progress(f"lab {made.name}: {spec.tx} -> {spec.rx} in namespace {made.netns}")
        with netns.inside(made.netns):
            doc = (run or harness.run)(spec, progress=progress)
    progress(f"lab {made.name} removed")
    return doc


@bench.command("compare")
@click.argument("program_a", metavar="A")
@click.argument("program_b", metavar="B")
@click.option("--lab", "use_lab", is_flag=True, help="Build a veth lab for the run and always remove it.")
@click.option("--tx", help="Device the generator sends from.")
@click.option("--rx", help="Device the programs run on, one at a time.")
@click.option("--mode", "mode_a", default="native", show_default=True, type=FLOOR_CHOICE,
              help="A's mode (and B's, without --mode-b).")
@click.option("--mode-b", type=FLOOR_CHOICE, help="B's mode, to compare two modes.")
@click.option("--param-a", multiple=True, metavar="K=V", help="A's program parameter (repeatable).")
@click.option("--param-b", multiple=True, metavar="K=V", help="B's program parameter (repeatable).")
@click.option("--trials", default=10, show_default=True, type=Bounded(int, 2, 1000),
              help="Trials per side, interleaved A B B A ...")
@click.option("--level", default=0.95, show_default=True, type=Bounded(float, 0.5, 0.999),
              help="Confidence level of the interval.")
@click.option("--fail-if-slower", type=Bounded(float, 0, 100), metavar="PCT",
              help="Exit 1 when B is significantly slower than A by more than PCT percent.")
@click.option("--generator", default="auto", show_default=True, type=click.Choice(["auto", "pktgen", "live-frames"]),
              help="What sends the frames (as for bench).")
@click.option("--duration", default=1.0, show_default=True, type=Bounded(float, 0, HOUR, lo_open=True),
              help="Measured window per trial, seconds.")
@click.option("--warmup", default=0.5, show_default=True, type=Bounded(float, 0, HOUR), help="Seconds before each window.")
@click.option("--pkt-size", default=60, show_default=True, type=PKT_SIZE, help="Frame size without FCS.")
@click.option("--threads", default=1, show_default=True, type=Bounded(int, 1, 1024), help="Generator threads.")
@click.option("--force", is_flag=True, help="Compare on an rx device that carries XDP: set it aside, put it back after.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@handles_errors
@in_netns
def bench_compare(program_a, program_b, use_lab, tx, rx, mode_a, mode_b, param_a, param_b, trials, level,
                  fail_if_slower, generator, duration, warmup, pkt_size, threads, force, as_json) -> None:
    """Is B faster than A? Interleaved trials of each on the same devices: the ratio of medians
    (B/A) with its bootstrap confidence interval, and the verdict."""
    from offload.bench import compare, harness
    from offload.load import programs

    _bench_devices(use_lab, tx, rx)
    arms = [compare.Arm(p, m, programs.parse_params(list(kv)))
            for p, m, kv in ((program_a, mode_a, param_a), (program_b, mode_b or mode_a, param_b))]
    cspec = compare.CompareSpec(arms[0], arms[1], trials, level, fail_if_slower)
    compare.check(cspec)
    for arm in arms:   # bad programs and parameters before any lab or traffic
        programs.resolve(arm.program, arm.params)
    spec = harness.Spec(tx or "", rx or "", [mode_a], program_a, generator, duration, warmup, pkt_size, threads,
                        1, None, force)
    with signals.sigterm_as_interrupt(), _progress(quiet=as_json) as progress:
        run = functools.partial(compare.run, spec=cspec)
        doc = _bench_in_lab(harness, spec, pkt_size, progress, run) if use_lab else run(spec, progress=progress)
    emit(doc, "bench compare")
    if problem := compare.failure(doc):
        _say_err(f"[yellow]{escape(problem)}[/]")
        sys.exit(int(Exit.FAILED))


@bench.command("prog")
@click.argument("program")
@click.option("--repeat", default=5, show_default=True, type=REPEAT, help="Runs (median reported).")
@click.option("--pkt-size", default=64, show_default=True, type=PKT_SIZE, help="Frame size without FCS.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@handles_errors
def bench_prog(program, repeat, pkt_size, as_json) -> None:
    """Per-packet cost of PROGRAM through BPF_PROG_RUN (ns/packet; no traffic, no device)."""
    from offload.bench import harness

    emit(harness.prog_cost(program, repeat, pkt_size), "bench prog")


def _policy(path: str):
    from offload.orchestrate.policy import load

    return load(path)


@main.command("plan")
@click.option("-f", "--file", "policy_file", required=True, type=click.Path(dir_okay=False), help="Policy YAML.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@handles_errors
@in_netns
def plan_cmd(policy_file, as_json) -> None:
    """Desired against actual, per interface: what apply would do and why. Changes nothing."""
    from offload.orchestrate import apply as apply_mod

    emit(apply_mod.plan_document(policy_file), "plan")


@main.command("apply")
@click.option("-f", "--file", "policy_file", required=True, type=click.Path(dir_okay=False), help="Policy YAML.")
@click.option("--best-effort", is_flag=True, help="Keep what succeeded when a step fails (default: roll back).")
@click.option("--journal", type=Written(), help="JSON-lines journal (default /var/lib/offload/journal.jsonl).")
@click.option("--lock-timeout", default=30.0, show_default=True, type=Bounded(float, 0, HOUR),
              help="Seconds to wait for another apply.")
@click.option("-v", "--verbose", is_flag=True, help="Every step as it goes, and a row for every interface.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@handles_errors
@in_netns
def apply_cmd(policy_file, best_effort, journal, lock_timeout, verbose, as_json) -> None:
    """Make the interfaces match the policy: transactional, idempotent, journaled."""
    from offload.orchestrate import apply as apply_mod

    pol = _policy(policy_file)
    with _counted("applying", quiet=as_json, verbose=verbose) as (progress, count):
        res = apply_mod.apply(pol, best_effort, Path(journal) if journal else None, lock_timeout, progress, count)
    emit(res, "apply", verbose=verbose)
    if res["outcome"] != "ok":
        sys.exit(int(Exit.FAILED))


@main.command("watch")
@click.option("-f", "--file", "policy_file", required=True, type=click.Path(dir_okay=False), help="Policy YAML.")
@click.option("--interval", default=30.0, show_default=True, type=Bounded(float, 0.1, 24 * HOUR),
              help="Seconds between drift checks.")
@click.option("--detach-on-exit", is_flag=True, help="Remove the policy's programs when stopped.")
@click.option("--journal", type=Written(),
              help="JSON-lines journal of every reconcile (default /var/lib/offload/journal.jsonl).")
@click.option("--metrics-address", metavar="ADDR:PORT",
              help="Serve Prometheus metrics at http://ADDR:PORT/metrics (the address is taken in the "
                   "namespace offload starts in, even with --netns).")
@click.option("--textfile-dir", "--textfile", "textfile_dir", metavar="DIR", type=Written(directory=True),
              help="Rewrite DIR/offload.prom (node-exporter's textfile collector) after every reconcile.")
@click.option("--netns", "ns", metavar="NS", help="Run inside network namespace NS (default: the current one).")
@handles_errors
def watch_cmd(policy_file, interval, detach_on_exit, journal, metrics_address, textfile_dir, ns) -> None:
    """Apply, then keep applying as interfaces come and go (and on drift), until SIGTERM."""
    from offload.orchestrate import watch

    if ns is not None:
        _require_root_for_netns()
    pol = _policy(policy_file)
    textfile = _textfile(None, textfile_dir) if textfile_dir else None
    server = None
    if metrics_address:
        from offload.orchestrate import metrics

        server = metrics.MetricsServer(metrics_address)   # bound here: before entering --netns
    try:
        with netns.inside(ns):
            watch.watch(pol, interval, detach_on_exit, Path(journal) if journal else None,
                        log=lambda line: click.echo(line, err=False), metrics_server=server, textfile=textfile)
    finally:
        if server is not None:
            server.close()


def _textfile(path: str | None, directory: str | None) -> str:
    """The textfile's path, its directory made (and checked) now: a bad one fails before any work."""
    from offload.kernel import fs
    from offload.orchestrate import exports

    target = exports.prometheus_path(path, directory)
    try:
        os.close(fs.open_dir(os.path.dirname(os.path.abspath(target)), create=True))
    except OffloadError as e:
        raise e.within(f"textfile {target}") from None
    return os.path.abspath(target)


def _every(interval: float | None, fn: Callable[[], dict], command: str) -> None:
    """Once, or every `interval` seconds until SIGTERM (one line or compact JSON document per
    round; a round that failed is one error line on stderr, and the next round tries again)."""
    from offload.orchestrate import exports

    def round_done(res: dict) -> None:
        if "error" in res:
            _say_err(f"[red]offload: error:[/] {escape(res['error'])}")
        else:
            emit(res, command, compact=True)
        sys.stdout.flush()

    if interval is None:
        emit(fn(), command)
        return
    exports.every(interval, fn, round_done)


@main.group("export")
def export_() -> None:
    """Fleet exports: Node Feature Discovery labels, Prometheus textfile metrics, a systemd unit."""


@export_.command("nfd")
@click.option("--path", default=None, type=Written(), help="Feature file (default: NFD's features.d/offload).")
@click.option("--include-virtual", is_flag=True,
              help="Count virtual interfaces (veth, bridge, tun, ...) too; by default only bus-backed ones.")
@click.option("--interval", type=Bounded(float, 1, 24 * HOUR), metavar="SECONDS",
              help="Rewrite the file every SECONDS until SIGTERM (a labeller).")
@click.option("--expires-after", type=Bounded(float, 1, 365 * 24 * HOUR), metavar="SECONDS",
              help="NFD drops the labels SECONDS after each write unless rewritten (# +expiry-time; "
                   "default: 3 x --interval, none without it).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@handles_errors
@in_netns
def export_nfd(path, include_virtual, interval, expires_after, as_json) -> None:
    """Write NFD labels: best XDP mode, hw-offload, native, drivers (of bus-backed interfaces)."""
    from offload.orchestrate import exports

    target = path or exports.NFD_DEFAULT
    expiry = exports.nfd_expiry(interval, expires_after)
    _every(interval, lambda: exports.export_nfd(target, include_virtual, expiry), "export nfd")


@export_.command("prometheus")
@click.option("--path", default=None, type=Written(), help="The textfile (a *.prom file).")
@click.option("--textfile-dir", metavar="DIR", type=Written(directory=True),
              help="Write DIR/offload.prom (default: /var/lib/prometheus/node-exporter, Debian's).")
@click.option("--bench-json", type=click.Path(dir_okay=False, exists=True), help="Include a bench result.")
@click.option("--interval", type=Bounded(float, 1, 24 * HOUR), metavar="SECONDS",
              help="Rewrite the file every SECONDS until SIGTERM.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@handles_errors
@in_netns
def export_prometheus(path, textfile_dir, bench_json, interval, as_json) -> None:
    """Write node-exporter textfile metrics: XDP programs, per-action counters, bench results."""
    from offload.orchestrate import exports

    target = _textfile(path, textfile_dir)
    _every(interval, lambda: exports.export_prometheus(target, bench_json), "export prometheus")


@export_.command("systemd")
@click.option("--path", default=None, type=Written(),
              help="Write the unit here (a *.service file); default: print it.")
@click.option("--policy", default="/etc/offload/policy.yaml", show_default=True, help="The policy watch applies.")
@click.option("--interval", default=30.0, show_default=True, type=Bounded(float, 0.1, 24 * HOUR),
              help="Seconds between watch's drift checks.")
@click.option("--journal", default="/var/lib/offload/journal.jsonl", show_default=True, type=Written(),
              help="The journal watch writes.")
@click.option("--metrics-address", metavar="ADDR:PORT", help="Have watch serve /metrics there.")
@click.option("--textfile-dir", metavar="DIR", type=Written(directory=True),
              help="Have watch refresh DIR/offload.prom.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@handles_errors
def export_systemd(path, policy, interval, journal, metrics_address, textfile_dir, as_json) -> None:
    """A systemd unit running `offload watch` with this offload (its absolute path)."""
    from offload.orchestrate import exports

    emit(exports.export_systemd(path, policy=policy, interval=interval, journal=journal,
                                metrics_address=metrics_address, textfile_dir=textfile_dir), "export systemd")


@main.group()
def lab() -> None:
    """Veth labs to try offload without hardware (each in its own network namespace)."""


@lab.command("up")
@click.option("--name", default="demo", show_default=True, help="Lab name: 1-8 lowercase letters/digits.")
@click.option("--pairs", default=1, show_default=True, type=Bounded(int, 1, LAB_MAX_PAIRS),
              help="Number of veth pairs.")
@click.option("--mtu", default=1500, show_default=True, type=Bounded(int, 68, 65535), help="MTU of every veth.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@handles_errors
def lab_up(name, pairs, mtu, as_json) -> None:
    """Create a lab: namespace offload-lab-NAME with veth pairs NAME-aI <-> NAME-bI."""
    emit(lab_mod.up(name, pairs, mtu).to_dict(), "lab up")


@lab.command("down")
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Remove every lab.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@handles_errors
def lab_down(names, all_, as_json) -> None:
    """Remove labs and everything in them (idempotent)."""
    emit(lab_mod.remove(names, all_, each=lambda row: emit_part(row, "lab down")), "lab down")


@lab.command("list")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@handles_errors
def lab_list(as_json) -> None:
    """Show the labs that exist."""
    emit(lab_mod.listing(), "lab list")


@main.command()
@click.option("--plot", "plot_path", type=Written(),
              help="Where to write the native-vs-generic bar chart (PNG; default offload-demo.png where "
                   "matplotlib is installed: offload[plot]).")
@click.option("--json", "as_json", is_flag=True, help="The whole story as one document.")
@click.option("-v", "--verbose", is_flag=True, help="The probe's detail view instead of its table.")
@handles_errors
def demo(plot_path, as_json, verbose) -> None:
    """The whole story in seconds on a veth lab (pairs at MTU 1500 and 9000): probe, attach with
    fallback, native vs generic measured and plotted; then everything is removed."""
    from offload import demo as demo_mod

    with _progress(quiet=as_json, echo=False) as progress:
        story = demo_mod.run(plot_path, progress)
    emit(story, "demo", verbose=verbose)


if __name__ == "__main__":
    main()
