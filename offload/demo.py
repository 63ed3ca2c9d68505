"""`offload demo`: the whole story on a veth lab in one go, in a few seconds. Build the lab (a pair
at MTU 1500, one at 9000), probe it, attach count_drop with --mode auto to each pair's a-side (the
MTU-9000 pair falls back to generic with the kernel's reason), measure native against generic on
the 1500 pair, draw the plot, remove everything. Interrupted (Ctrl-C, SIGTERM), it leaves nothing
behind: the lab's namespace, and with it every pin and record under it, goes in a `finally`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from offload import lab
from offload.bench import files, harness
from offload.errors import OffloadError
from offload.kernel import netns, signals
from offload.load import attach as attach_mod
from offload.probe.report import probe

PROGRAM = "count_drop"
PLOT_DEFAULT = "offload-demo.png"
MTUS = [1500, 9000]
# Short, so the story fits in half a minute; `offload bench` measures properly.
BENCH = {"duration": 1.0, "warmup": 0.25, "repeat": 2}


def run(plot_path: str | None = None, progress: Callable[[str], None] = lambda m: None) -> dict:
    """The story; `plot_path` None: offload-demo.png if matplotlib is installed, else no chart."""
    started = time.monotonic()
    plot_skipped = None
    if plot_path is None and not files.can_plot():
        plot_skipped = f"matplotlib is not installed ({files.PLOT_EXTRA} draws the chart)"
    else:
        plot_path = plot_path or PLOT_DEFAULT
        files.check_plot(plot_path)      # an unwritable plot fails now, before the lab
    name = f"demo{os.getpid() % 10_000}"
    theirs = netns.exists(lab.netns_name(name))   # then lab.up refuses, and the finally leaves it be
    with signals.sigterm_as_interrupt() as interrupted:
        try:
            progress(f"building lab {name}: veth pairs at MTU {' and '.join(map(str, MTUS))}")
            made = lab.up(name, pairs=len(MTUS), mtus=MTUS)
            with netns.inside(made.netns):
                progress("probing")
                report = probe()
                attached = _attach_each([p.a for p in made.pairs], progress)
                progress(f"bench: native vs generic, {made.pairs[0].a} -> {made.pairs[0].b}")
                spec = harness.Spec(made.pairs[0].a, made.pairs[0].b, ["native", "generic"], PROGRAM, **BENCH)
                doc = harness.run(spec, progress)
            if interrupted():   # the bench reports one as partial results; the demo stops on it
                raise KeyboardInterrupt
        finally:
            if not theirs:
                with signals.interrupts_deferred():   # a second Ctrl-C must not cut the clean-up short
                    lab.down(name)
    progress(f"lab {name} removed" + (f"; drawing {plot_path}" if plot_path else ""))
    plot = None
    if doc["results"] and plot_path:
        files.write_plot(doc, plot_path)
        plot = os.path.abspath(plot_path)
    return {"lab": made.to_dict(), "probe": report, "attach": attached, "bench": doc, "plot": plot,
            "plot_skipped": plot_skipped,
            "removed": True, "elapsed_s": round(time.monotonic() - started, 1)}


def _attach_each(ifaces: list[str], progress: Callable[[str], None]) -> list[dict]:
    """count_drop with --mode auto on each; then detached again, since the bench attaches its own."""
    out = []
    for iface in ifaces:
        try:
            out.append(attach_mod.attach(iface, PROGRAM, progress=progress).to_dict())
        except OffloadError as e:   # the story goes on: this interface's row says why
            out.append({"interface": iface, "error": e.message})
    for r in out:
        if "error" not in r:
            attach_mod.detach(r["interface"])
    return out
