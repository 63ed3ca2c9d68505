"""Prometheus metrics, read from the kernel at scrape time: a prometheus_client Collector, the
`/metrics` HTTP endpoint `offload watch --metrics-address` serves, and the textfile it writes.

Imported only by the commands that export (prometheus_client is not a start-up cost).
Names follow Prometheus's conventions: base units, `_total` counters, `_info` for attachments,
`device` as node_exporter labels an interface.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from netaddr import INET_ATON, AddrFormatError, IPAddress
from prometheus_client import CollectorRegistry, MetricsHandler, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
)

from offload.errors import OffloadError, UsageError
from offload.kernel import bpfsys, clock, netns
from offload.load import stats as stats_mod
from offload.load import status as status_mod
from offload.load.programs import ACTIONS

TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"   # Debian's prometheus-node-exporter reads this
TEXTFILE_NAME = "offload.prom"


@dataclass
class Health:
    """What `watch` tells about itself. Written by the reconcile loop, read by the scrape thread:
    one lock, held only to copy a few numbers."""

    reconciles: int = 0
    errors: int = 0
    last_reconcile: float | None = None
    attached: int = 0
    last_ok: bool | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, ok: bool, attached: int | None) -> None:
        """A reconcile's outcome; `attached` None (it failed before counting) keeps the last count."""
        with self._lock:
            self.reconciles += 1
            self.errors += 0 if ok else 1
            self.last_reconcile = time.time()
            if attached is not None:
                self.attached = attached
            self.last_ok = ok

    def report(self, max_age: float, now: float | None = None) -> tuple[bool, dict]:
        """(healthy, what /healthz says): healthy once a reconcile has run and the last one is at most
        `max_age` seconds old (a loop that stopped turning is not). A failed reconcile is reported,
        not unhealthy: restarting watch would not make a NIC take a program."""
        now = time.time() if now is None else now
        with self._lock:
            last, ok, n, errors, attached = self.last_reconcile, self.last_ok, self.reconciles, self.errors, self.attached
        age = None if last is None else max(now - last, 0.0)
        healthy = age is not None and age <= max_age
        return healthy, {"healthy": healthy, "last_reconcile": None if last is None else clock.rfc3339(last),
                         "age_s": None if age is None else round(age, 1), "max_age_s": max_age,
                         "last_reconcile_ok": ok, "reconciles": n, "reconcile_errors": errors,
                         "attached_programs": attached}

    def snapshot(self) -> tuple[int, int, float | None, int]:
        with self._lock:
            return self.reconciles, self.errors, self.last_reconcile, self.attached


class OffloadCollector:
    """Every XDP program of the namespace (offload's and others'), and offload's per-action
    counters, read when Prometheus scrapes: the same reads as `offload status` and `offload stats`."""

    def __init__(self, health: Health | None = None, bench: dict | None = None) -> None:
        self.health, self.bench = health, bench   # bench: a checked `bench --json` result (exports.read_bench)

    def collect(self):
        build = InfoMetricFamily("offload_build", "The offload serving these metrics.", labels=["version"])
        build.add_metric([build_version()], {})
        yield build
        ns = netns.current_name()
        info = InfoMetricFamily("offload_xdp_program", "An XDP program attached to a device, or run by libxdp's "
                                "dispatcher there (member: offload's chain member key): who attached it (owner: "
                                "offload or foreign), in which mode, its id and tag.",
                                labels=["device", "netns", "mode", "program", "prog_id", "tag", "owner", "member"])
        pkts = CounterMetricFamily("offload_xdp_packets", "Packets offload's program saw, by XDP action (member: "
                                   "a policy's chain member, by its key).",
                                   labels=["device", "netns", "program", "action", "member"])
        nbytes = CounterMetricFamily("offload_xdp_bytes", "Bytes offload's program saw, by XDP action (member: "
                                     "a policy's chain member, by its key).",
                                     labels=["device", "netns", "program", "action", "member"])
        runs = CounterMetricFamily("offload_xdp_program_runs", "Runs of an attached program as the kernel "
                                   "counts them (only while kernel.bpf_stats_enabled is 1).",
                                   labels=["device", "netns", "mode", "prog_id"])
        run_s = CounterMetricFamily("offload_xdp_program_run_seconds", "Time spent in an attached program "
                                    "(only while kernel.bpf_stats_enabled is 1).",
                                    labels=["device", "netns", "mode", "prog_id"])
        errors = GaugeMetricFamily("offload_xdp_read_errors", "Devices whose counters could not be read "
                                   "in this scrape (the program went away meanwhile, a damaged record).")
        n_err = 0
        bpf_stats = bpfsys.stats_enabled()
        for row in status_mod.status()["attachments"]:
            dev, mode = row["interface"], str(row["mode"])
            # the attached program, then those libxdp's dispatcher runs (offload's members by their key)
            members = [(row, None)] + [(p, p.get("member") or "") for p in (row["dispatcher"] or {}).get("programs", [])
                                       if p["prog_id"] is not None and not p.get("leftover")]
            for r, member in members:
                owner = {True: "offload", False: "foreign", None: "unknown"}[r["ours"]]
                info.add_metric([dev, ns, mode, r["program"] or r["name"] or "", str(r["prog_id"]), r["tag"] or "",
                                 owner, member or ""], {})
                # status() read the program's info already; only the run counters need a fresh read
                p = bpfsys.prog_info(r["prog_id"]) if bpf_stats else None
                if p:
                    runs.add_metric([dev, ns, mode, str(r["prog_id"])], p.run_cnt)
                    run_s.add_metric([dev, ns, mode, str(r["prog_id"])], p.run_time_ns / 1e9)
                if r["ours"]:
                    n_err += not _counters(pkts, nbytes, dev, ns, member or None)
        errors.add_metric([], n_err)
        yield from (info, pkts, nbytes, errors)
        if bpf_stats:   # off: the kernel counts nothing, and an empty family would read as "no programs"
            yield from (runs, run_s)
        if self.health is not None:
            yield from _health_metrics(self.health)
        if self.bench is not None:
            yield _bench_metric(self.bench)


def _counters(pkts: CounterMetricFamily, nbytes: CounterMetricFamily, dev: str, ns: str, member: str | None) -> bool:
    """offload's per-action counters of the program on `dev` (or of its chain member `member`);
    False when they could not be read."""
    try:
        s = stats_mod.read(dev, member)
    except (OffloadError, OSError):
        return False
    if s["counters"] == "offload":   # a user's object: the kernel's run counts are all there is
        for action in ACTIONS:
            pkts.add_metric([dev, ns, s["program"], action, member or ""], s["packets"][action])
            nbytes.add_metric([dev, ns, s["program"], action, member or ""], s["bytes"][action])
    return True


def _health_metrics(h: Health):
    reconciles, errs, last, attached = h.snapshot()
    total = CounterMetricFamily("offload_watch_reconciles", "Reconciles watch has run (start, link "
                                "changes, periodic drift checks).")
    total.add_metric([], reconciles)
    bad = CounterMetricFamily("offload_watch_reconcile_errors", "Reconciles that failed as a whole or "
                              "left a step failed.")
    bad.add_metric([], errs)
    attached_g = GaugeMetricFamily("offload_watch_attached_programs", "Programs offload holds attached in "
                                   "watch's namespace after the last reconcile.")
    attached_g.add_metric([], attached)
    yield from (total, bad, attached_g)
    if last is not None:   # no sample rather than a 1970 timestamp before the first reconcile
        g = GaugeMetricFamily("offload_watch_last_reconcile_timestamp_seconds",
                              "When watch last reconciled (Unix time).")
        g.add_metric([], last)
        yield g


def _bench_metric(doc: dict) -> GaugeMetricFamily:
    results, program = doc["results"], doc["config"]["program"]
    g = GaugeMetricFamily("offload_bench_rx_packets_per_second", "Packets per second received through "
                          "each mode in the last offload bench (a run without a rate has no sample).",
                          labels=["mode", "generator", "program"])
    for r in results:
        if r.get("rx_pps") is not None:   # a missing rate is absent, never a 0 that looks measured
            g.add_metric([str(r["mode"]), str(r.get("generator", "")), program], float(r["rx_pps"]))
    return g


def build_version() -> str:
    """This offload's version as installed (the package's metadata: a wheel, the image, a checkout
    installed editable)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("offload")
    except PackageNotFoundError:   # run from a bare checkout on PYTHONPATH
        return "unknown"


def registry(health: Health | None = None, bench: dict | None = None, process: bool = False) -> CollectorRegistry:
    """The collectors; `process`: the client's process_* and python_info too, for the long-lived
    /metrics endpoint only (in a textfile they would describe a process gone by the time of the
    scrape, under the names node-exporter uses for its own)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(OffloadCollector(health, bench))
    if process:
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
    return reg


def text(health: Health | None = None, bench: dict | None = None) -> str:
    """The exposition text (what /metrics serves and the textfile holds)."""
    return generate_latest(registry(health, bench)).decode()


# -- /metrics -----------------------------------------------------------------------------------
READ_TIMEOUT = 10           # seconds a connection may stay silent (Prometheus sends its request at once)
CONNECTION_DEADLINE = 30    # seconds a connection may last in all (a slow trickle ends too)
MAX_CONNECTIONS = 64        # served at once; more are closed at once (a scraper retries at its next interval)


def parse_address(address: str) -> tuple[str, int]:
    """ADDR:PORT or [V6ADDR]:PORT, an explicit address: an unspecified one (0, 0.0.0.0, ::) would
    serve on every interface of the host, which the operator has to name, not get by default."""
    host, sep, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--metrics-address {address!r}: expected ADDR:PORT, e.g. 127.0.0.1:9477 or [::1]:9477")
    if not host or _unspecified(host):
        raise UsageError(f"--metrics-address {address!r}: an unspecified address listens on every interface; "
                         "name the address to listen on, e.g. 127.0.0.1:9477 or this host's address on the "
                         "network Prometheus scrapes from")
    return host, int(port)


def _unspecified(host: str) -> bool:
    """Whether `host` is 0.0.0.0 or :: in any spelling (UsageError if it is no IP address at all)."""
    addr, pct, scope = host.partition("%")   # fe80::1%eth0: a link-local address names its interface
    try:
        # INET_ATON: the spellings the kernel's resolver takes too ("0", "127.1")
        ip = IPAddress(addr) if ":" in addr else IPAddress(addr, flags=INET_ATON)
    except (AddrFormatError, ValueError):
        ip = None
    if ip is None or (pct and (ip.version != 6 or not scope)):
        raise UsageError(f"--metrics-address: {host!r} is not an IP address")
    return ip.value == 0 or (ip.is_ipv4_mapped() and ip.ipv4().value == 0)


class _Server(http.server.ThreadingHTTPServer):
    """A thread per connection, so an idle or slow client holds only its own; at most
    MAX_CONNECTIONS at once, each cut after CONNECTION_DEADLINE."""

    allow_reuse_address = True
    request_queue_size = MAX_CONNECTIONS   # a burst of connects waits in the backlog, not refused
    daemon_threads = True   # a client still connected never keeps watch from exiting

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:   # no thread started: it will not release the slot
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        cut = threading.Timer(CONNECTION_DEADLINE, _cut, (request,))
        cut.daemon = True
        cut.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            cut.cancel()
            self.slots.release()

    def handle_error(self, request, client_address) -> None:
        pass   # a client that went away or was cut: no traceback in watch's log


def _cut(request: socket.socket) -> None:
    """End a connection past its deadline: its thread's blocked read or write returns."""
    try:
        request.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass   # closed meanwhile


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """/metrics over HTTP, served apart from the caller: one thread accepts, and each connection
    gets a thread of its own. The socket is bound at construction (so the address is taken in the
    caller's network namespace, where the scraper is); serving begins at `start()`, and reads the
    kernel in the namespace the threads were started in."""

    def __init__(self, address: str) -> None:
        host, port = parse_address(address)
        cls = _Server6 if ":" in host else _Server
        try:
            self.httpd = cls((host, port), http.server.BaseHTTPRequestHandler)
        except OSError as e:
            raise OffloadError(f"cannot serve /metrics on {address}: {e.strerror or e}",
                               hint="choose a free port and an address of this host (--metrics-address)") from None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/metrics"

    def start(self, reg: CollectorRegistry, health: Health | None = None, max_age: float = 0.0) -> None:
        """Serve `reg` at /metrics and, with `health`, watch's last reconcile at /healthz."""
        self.httpd.RequestHandlerClass = _handler(reg, health, max_age)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="offload-metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop serving and free the port (idempotent)."""
        if self.thread is not None:
            self.httpd.shutdown()   # waits for the request in flight, if any
            self.thread.join()
            self.thread = None
        self.httpd.server_close()


def _handler(reg: CollectorRegistry, health: Health | None, max_age: float) -> type:
    base = MetricsHandler.factory(reg)

    class Handler(base):
        timeout = READ_TIMEOUT   # a silent client's thread ends (the socket's timeout on each read)

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/healthz" and health is not None:
                self._healthz()
                return
            if path != "/metrics":
                self.send_error(404, "only /metrics" + (" and /healthz are" if health else " is") + " served here")
                return
            try:
                super().do_GET()
            except OffloadError as e:   # e.g. a damaged state tree: say so, the next scrape tries again
                self.send_error(500, e.message)

        def _healthz(self) -> None:
            """200 while watch reconciles, 503 before its first reconcile or once it stopped: what
            the kubelet's probes read (no kernel reads: a probe must be cheap)."""
            healthy, doc = health.report(max_age)
            body = (json.dumps(doc) + "\n").encode()
            self.send_response(200 if healthy else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:   # noqa: A002 - the base class's name
            pass   # one line per scrape would drown watch's own log

    return Handler
