"""Human output of the top-level commands (labs, the demo); each layer renders its own results."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text


class Elapsed:
    """The live status line of long work: the time since it began, then the current step. Rich
    renders it again at every refresh of the status, so the time ticks through a step that lasts
    minutes (a bench run) instead of standing at the moment the step began."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock, self.started, self.step = clock, clock(), "starting"

    def __rich__(self) -> Text:
        from rich.text import Text

        s = int(self.clock() - self.started)
        return Text(f"[{s // 60}:{s % 60:02d}] {self.step}")


def lab_up(made: dict, out: Console) -> None:
    from rich.text import Text

    from offload.probe.render import say, say_parts

    pairs = ", ".join(f"{p['a']}<->{p['b']}" for p in made["pairs"][:8])
    pairs += " ..." if len(made["pairs"]) > 8 else ""
    say(out, Text(f"lab {made['name']}: namespace {made['netns']}, {len(made['pairs'])} veth pair(s) at MTU "
                  f"{made['mtu']}: {pairs}"))
    say_parts(out, "", [f"probe it: offload probe --netns {made['netns']}",
                        f"remove it: offload lab down {made['name']}"], sep="    ", indent=0)


def lab_removed(row: dict, out: Console) -> None:
    """One lab of `lab down`, printed as it is done."""
    out.print(f"lab {row['name']}: {'removed' if row['removed'] else 'not present (nothing to do)'}")


def lab_list(doc: dict, out: Console) -> None:
    if not doc["labs"]:
        out.print("no labs")
    for x in doc["labs"]:
        out.print(f"{x['name']}: namespace {x['netns']}, {len(x['pairs'])} pair(s), MTU {x['mtu']}")


def demo(story: dict, out: Console, verbose: bool = False) -> None:
    """The demo as a story in three steps, each a table whose reasons are notes under it."""
    # the layers' renderers (rich.table with them) only here: a lab's lines need none of them
    from rich.markup import escape

    from offload.bench import render as bench_render
    from offload.load import render as load_render
    from offload.probe import render as probe_render
    from offload.probe.render import say

    lb, bench = story["lab"], story["bench"]
    mtu = {i["name"]: i["mtu"] for i in story["probe"]["interfaces"]}
    out.print(f"[bold]offload demo[/]: lab {escape(lb['name'])} in namespace {escape(lb['netns'])}")
    for p in lb["pairs"]:
        out.print(f"  {escape(p['a'])} <-> {escape(p['b'])}  MTU {mtu.get(p['a'], '?')}")
    out.print("\n[bold]1. probe[/]: which XDP mode each interface can take, and why")
    (probe_render.probe_detail if verbose else probe_render.probe_table)(story["probe"], out)
    program = next((r["program"] for r in story["attach"] if "program" in r), "count_drop")
    out.print(f"\n[bold]2. attach {escape(program)} --mode auto[/]: the best mode the kernel accepts")
    notes = load_render.attach_table(story["attach"], out)
    for r in story["attach"]:
        for f in r.get("fallbacks", []):
            if not f["reason"].startswith("not tried"):   # the kernel said no: the story's turning point
                ref = notes.ref(f"{r['interface']} {f['mode']} refused by the kernel: {f['reason']}")
                say(out, f"[yellow]fallback[/]: {escape(r['interface'])} {f['mode']} -> [bold]{r['mode']}[/], "
                         f"refused by the kernel {escape(ref)}")
    out.print("\n[bold]3. bench[/]: received packets per second, native against generic")
    bench_render.bench_result(bench, out)
    if story["plot"]:
        say(out, f"plot: {escape(story['plot'])}")
    elif story.get("plot_skipped"):
        say(out, f"no plot: {escape(story['plot_skipped'])}")
    out.print(f"\nlab {escape(lb['name'])} removed: no namespace, pins or records left "
              f"({story['elapsed_s']:.1f} s)")
