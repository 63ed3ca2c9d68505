"""`offload watch`: apply, then keep applying as interfaces come and go, and on drift."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from offload.errors import OffloadError
from offload.kernel import netns, rtnl
from offload.kernel.linkevents import Kind, LinkEvent, LinkEvents
from offload.load import attach as attach_mod
from offload.load import gc, pins
from offload.load.batch import batch
from offload.orchestrate.apply import apply
from offload.orchestrate.policy import Policy
from offload.orchestrate.policy import load as load_policy

if TYPE_CHECKING:
    from offload.orchestrate.metrics import Health, MetricsServer

_POLL = 0.2   # seconds between checks of the stop flag, the drift timer and stop_after
# A burst of link events (a node starting hundreds of pods) is one reconcile: events are gathered
# until none came for _QUIET seconds, or for at most _BURST seconds (a steady trickle must not
# hold the first of them back for long).
_QUIET = 0.05
_BURST = 1.0


def watch(pol: Policy, interval: float = 30.0, detach_on_exit: bool = False, journal: Path | None = None,
          log: Callable[[str], None] = print, stop_after: float | None = None,
          metrics_server: MetricsServer | None = None, textfile: str | None = None) -> None:
    """Apply, then re-apply on every link appearing or vanishing (rtnetlink notifications, which
    work inside a network namespace) and every `interval` seconds (drift). SIGTERM ends it.

    `metrics_server` (a bound metrics.MetricsServer) serves /metrics from a thread of its own,
    started here so that it reads this namespace; `textfile` is rewritten after every reconcile."""
    # Up front: every reconcile would fail on privileges, and the loop would log it forever.
    attach_mod.require_privileges("watching a policy (attaching and detaching programs)")
    Watcher(pol, interval=interval, detach_on_exit=detach_on_exit, journal=journal, log=log,
            metrics_server=metrics_server, textfile=textfile).run(stop_after)


class Watcher:
    """One watch of one policy in the current network namespace: the links it has seen, its
    health for /metrics and the textfile, and `stopping`, set by SIGTERM."""

    def __init__(self, pol: Policy, *, interval: float, detach_on_exit: bool, journal: Path | None,
                 log: Callable[[str], None], metrics_server: MetricsServer | None = None,
                 textfile: str | None = None) -> None:
        self.pol, self.interval, self.detach_on_exit, self.journal = pol, interval, detach_on_exit, journal
        self.log, self.metrics_server, self.textfile = log, metrics_server, textfile
        self.ns = netns.current_name()
        self.known: set[str] = set()
        self.fresh: list[str] | None = None   # what the last link events changed (on_events)
        self.stopping = threading.Event()
        self.reread = threading.Event()             # SIGHUP: read the policy again now
        self.policy_seen = _signature(pol.path)     # the file as the running policy was read from it
        self.health: Health | None = None
        if metrics_server is not None or textfile is not None:
            from offload.orchestrate import (
                metrics,  # prometheus_client: only when asked for
            )

            self.health = metrics.Health()

    def run(self, stop_after: float | None = None) -> None:
        """Start, then reconcile on link changes and drift until SIGTERM (or `stop_after` s)."""
        with LinkEvents() as events:
            old = signal.signal(signal.SIGTERM, lambda signum, frame: self.stopping.set())
            old_hup = signal.signal(signal.SIGHUP, lambda signum, frame: self.reread.set())
            try:
                self.start()
                self._loop(events, stop_after)
            finally:
                signal.signal(signal.SIGTERM, old)
                signal.signal(signal.SIGHUP, old_hup)
                self.shutdown()

    def start(self) -> None:
        self.log(f"offload-watch: start policy={self.pol.path} netns={self.ns} interval={self.interval:g}s")
        if self.metrics_server is not None:
            from offload.orchestrate import metrics

            self.metrics_server.start(metrics.registry(self.health, process=True), self.health, healthy_within(self.interval))
            self.log(f"offload-watch: metrics={self.metrics_server.url}")
        # Links as they are before the first apply: one added while it runs is then an event of
        # its own (a dump after the apply would count it as known and never say it came).
        self.known = _link_names()
        self.reconcile("start")

    def _loop(self, events: LinkEvents, stop_after: float | None) -> None:
        began = last = time.monotonic()
        while not self.stopping.is_set():
            if stop_after is not None and time.monotonic() - began > stop_after:
                return
            if self.on_events(_burst(events)):
                self.reconcile("link-change", only=self.fresh)
                last = time.monotonic()
            elif self.reload_policy():
                self.reconcile("policy-change")
                last = time.monotonic()
            elif time.monotonic() - last >= self.interval:
                self.reconcile("periodic")
                last = time.monotonic()

    def on_events(self, events: list[LinkEvent]) -> bool:
        """Whether the links changed. The events say something may have; a dump says exactly what
        (a burst may be coalesced or lost, and a name may come and go within one batch). Sets
        `fresh`: the links the next reconcile must look at (new, or deleted and made again under
        the same name), or None when events were lost (then it looks at every link)."""
        overflow = any(e.kind is Kind.OVERFLOW for e in events)
        if overflow:
            self.log("offload-watch: event=overflow (notifications lost: resynchronising)")
        elif not any(self._news(e) for e in events):
            return False
        now = _link_names()
        remade = {e.name for e in events if e.kind is Kind.DEL} & now & self.known
        self.fresh = None if overflow else sorted((now - self.known) | remade)
        for name in sorted(now - self.known):
            self.log(f"offload-watch: event=add iface={name}")
        for name in sorted(self.known - now):
            self.log(f"offload-watch: event=remove iface={name}")
            self._forget(name)
        changed, self.known = now != self.known or bool(remade), now
        return changed

    def reload_policy(self) -> bool:
        """Whether the policy file now holds another policy (checked on every turn of the loop, and
        at once on SIGHUP). A file edited in place, replaced by a rename, or swapped under a
        ConfigMap's symlinks all change its signature. A policy that does not load is logged and
        the running one kept: a typo must not detach a fleet."""
        now = _signature(self.pol.path)
        if now == self.policy_seen and not self.reread.is_set():
            return False
        if self.reread.is_set():
            self.reread.clear()
            self.log(f"offload-watch: policy={self.pol.path} reread (SIGHUP)")
        self.policy_seen = now
        try:
            pol = load_policy(self.pol.path)
        except OffloadError as e:
            self.log(f"offload-watch: policy={self.pol.path} reload error={e.message!r} (keeping the running policy)")
            return False
        if pol == self.pol:
            return False
        self.pol = pol
        self.log(f"offload-watch: policy={pol.path} reloaded rules={len(pol.rules)}")
        return True

    def _news(self, e: LinkEvent) -> bool:
        return (e.kind is Kind.NEW and e.name not in self.known) or (e.kind is Kind.DEL and e.name in self.known)

    def reconcile(self, why: str, only: list[str] | None = None) -> None:
        """Apply the policy to every link, or to the links named in `only` (a burst's new ones:
        nothing else changed, and the periodic reconcile still looks at all of them)."""
        ok, attached = self._apply(why, only)
        if self.health is None:
            return
        self.health.record(ok, attached)
        if self.textfile is not None:
            self._write_textfile()

    def _apply(self, why: str, only: list[str] | None = None) -> tuple[bool, int | None]:
        """One reconcile, logged: whether all of it succeeded, and the programs offload holds here
        after it (None when it failed before counting). A watcher under systemd's Restart= must
        not crash-loop on one bad interface or record: the next event or period tries again."""
        attached = None
        try:
            # gc, apply and the count as one batch (no command slips in between; durable together;
            # each program loaded once). A burst of new links needs no gc (one that went had its
            # records dropped on its event): gc reads every record, a cost per attached interface
            # that a pod's start must not pay. A reconcile of every link (start, period, policy,
            # lost events) collects.
            with batch():
                freed = gc.collect(only=self.ns)["freed"] if only is None else []
                for f in freed:
                    self.log(f"offload-watch: reconcile={why} gc iface={f['interface']} reason={f['reason']!r}")
                res = apply(self.pol, best_effort=True, journal=self.journal, only=only)
                if self.health is not None:
                    attached = self._attached_count()
        except OffloadError as e:
            self.log(f"offload-watch: reconcile={why} error={e.message!r}")
            return False, attached
        except Exception as e:  # noqa: BLE001 - logged; the watcher lives on
            self.log(f"offload-watch: reconcile={why} error={type(e).__name__}: {e}")
            return False, attached
        for s in res["steps"]:
            if s["status"] == "done":
                self.log(f"offload-watch: reconcile={why} iface={s['interface']} action={s['action']} "
                         f"program={s['program']} mode={s.get('mode')}")
        for s in res["failed"]:
            self.log(f"offload-watch: reconcile={why} iface={s['interface']} action={s['action']} "
                     f"error={s['error']!r}")
        return not res["failed"], attached

    def _write_textfile(self) -> None:
        from offload.orchestrate import exports

        try:
            exports.export_prometheus(self.textfile, health=self.health)
        except (OffloadError, OSError) as e:
            self.log(f"offload-watch: textfile={self.textfile} error={getattr(e, 'message', str(e))!r}")

    def shutdown(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self.detach_on_exit:
            self._detach_ours()
        self.log("offload-watch: stopped")

    def _detach_ours(self) -> None:
        """Detach every program a policy attached here (its record says managed_by): the one alone
        on an interface, or offload's members of its chain (one detach takes them all). The slots
        are listed once, and each detach is handed its interface's (no listing per interface)."""
        with pins.state_lock():
            for iface, group in pins.by_interface(self.ns).items():
                if not any(_managed(s) for s in group):
                    continue
                try:
                    attach_mod.detach(iface, group=group)
                    self.log(f"offload-watch: exit iface={iface} action=detach")
                except OffloadError:
                    pass

    def _attached_count(self) -> int:
        """Programs offload holds in this namespace (its records; a damaged one does not count)."""
        n = 0
        for slot in pins.slots(self.ns):
            try:
                n += slot.meta() is not None
            except pins.StateError:
                pass
        return n

    def _forget(self, iface: str) -> None:
        """A vanished interface took its programs along: drop our records of them (its own slot
        and its chain members')."""
        try:
            with pins.state_lock():
                for slot in pins.interface_slots(self.ns, iface):
                    slot.remove()
        except OffloadError as e:
            self.log(f"offload-watch: event=remove iface={iface} error={e.message!r}")


def _managed(slot: pins.Slot) -> bool:
    """A policy attached the slot's program (its record says so; a damaged one does not count)."""
    try:
        return bool((slot.meta() or {}).get("managed_by"))
    except pins.StateError:
        return False


def healthy_within(interval: float) -> float:
    """How old the last reconcile may be while watch counts as alive: two periods and a minute (a
    reconcile over many NICs, or a loaded host, may run long)."""
    return 2 * interval + 60


def _burst(events: LinkEvents) -> list[LinkEvent]:
    """The events of one burst: whatever came within _POLL, then more until a quiet moment."""
    got = events.read(_POLL)
    if not got:
        return got
    end = time.monotonic() + _BURST
    while time.monotonic() < end:
        more = events.read(min(_QUIET, max(0.0, end - time.monotonic())))
        if not more:
            break
        got += more
    return got


def _signature(path: str) -> tuple[int, ...] | None:
    """What tells a changed file without reading it (the link followed: a ConfigMap's is swapped)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _link_names() -> set[str]:
    return rtnl.link_names()
