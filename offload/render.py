"""Human output of the top-level commands (labs); each layer renders its own results."""

from __future__ import annotations

from rich.console import Console

from offload.lab import Lab


def lab_up(made: Lab, out: Console) -> None:
    pairs = ", ".join(f"{p.a}<->{p.b}" for p in made.pairs[:8]) + (" ..." if len(made.pairs) > 8 else "")
    out.print(f"lab {made.name}: namespace {made.netns}, {len(made.pairs)} veth pair(s) at MTU {made.mtu}: {pairs}")
    out.print(f"probe it: offload probe --netns {made.netns}    remove it: offload lab down {made.name}")


def lab_list(labs: list[Lab], out: Console) -> None:
    if not labs:
        out.print("no labs")
    for x in labs:
        out.print(f"{x.name}: namespace {x.netns}, {len(x.pairs)} pair(s), MTU {x.mtu}")
