"""kernel/linkevents on a real kernel: links of a lab namespace coming and going arrive as events
with the kernel's names and indexes, and a receive buffer that overflows says so."""

import pytest

from offload.kernel import netns, rtnl
from offload.kernel.linkevents import OVERFLOW, Kind, LinkEvent, LinkEvents

pytestmark = pytest.mark.root


def read_until(events: LinkEvents, want: set[LinkEvent]) -> list[LinkEvent]:
    """What arrives until every event wanted has (a bounded number of reads: none hangs)."""
    seen: list[LinkEvent] = []
    for _ in range(100):
        seen += events.read(0.2)
        if want <= set(seen):
            break
    return seen


def test_links_added_and_deleted_arrive_as_events(env):
    lab = env.make_lab(pairs=1)
    a, b = f"{lab.name}-e1", f"{lab.name}-f1"
    with netns.inside(lab.netns):
        events = LinkEvents()
    with events:
        assert events.read(0) == []
        env.cmd("ip", "link", "add", a, "type", "veth", "peer", "name", b, netns=lab.netns)
        with netns.inside(lab.netns):
            index = {link.name: link.ifindex for link in rtnl.dump_links()}
        added = {LinkEvent(Kind.NEW, a, index[a]), LinkEvent(Kind.NEW, b, index[b])}
        seen = read_until(events, added)
        assert added <= set(seen) and {e.kind for e in seen} == {Kind.NEW}, seen
        env.cmd("ip", "link", "del", a, netns=lab.netns)
        deleted = {LinkEvent(Kind.DEL, a, index[a]), LinkEvent(Kind.DEL, b, index[b])}
        seen = read_until(events, deleted)
        assert deleted <= set(seen) and OVERFLOW not in seen, seen


def test_an_overflowing_buffer_reads_as_overflow(env):
    lab = env.make_lab(pairs=1)
    with netns.inside(lab.netns):
        events = LinkEvents(rcvbuf=1)   # the kernel's least: room for about one notification
    with events:
        for i in range(4):
            env.cmd("ip", "link", "add", f"{lab.name}-o{i}", "type", "veth", "peer", "name", f"{lab.name}-p{i}",
                    netns=lab.netns)
        assert events.read(0) == [OVERFLOW]            # the kernel reports the loss before what it kept
        kept = read_until(events, set())
        assert 0 < len(kept) < 8 and OVERFLOW not in kept, kept   # 8 links came; most were dropped
