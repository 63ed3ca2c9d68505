"""The /metrics server itself, in-process on 127.0.0.1: idle clients, a slow trickle and a crowd
cannot keep a scrape from being served. No kernel reads (an empty registry); deadlines are
generous, never a speed."""

import socket
import time
import urllib.request
from contextlib import ExitStack

import pytest
from prometheus_client import CollectorRegistry, Gauge

from offload.orchestrate import metrics


@pytest.fixture
def server():
    reg = CollectorRegistry()
    Gauge("offload_test_up", "A sample to scrape.", registry=reg).set(1)
    srv = metrics.MetricsServer("127.0.0.1:0")
    srv.start(reg)
    yield srv
    srv.close()


def idle_connections(stack: ExitStack, srv: metrics.MetricsServer, n: int) -> list[socket.socket]:
    """n clients that connect and never send a byte."""
    addr = srv.httpd.server_address[:2]
    return [stack.enter_context(socket.create_connection(addr, timeout=30)) for _ in range(n)]


def test_idle_connections_do_not_hold_a_scrape(server):
    with ExitStack() as stack:
        idle_connections(stack, server, 20)
        # served while all 20 are still open (one thread used to wait READ_TIMEOUT on each in turn)
        body = urllib.request.urlopen(server.url, timeout=10).read().decode()
    assert "offload_test_up 1.0" in body


def test_a_silent_client_is_disconnected(server):
    server.httpd.RequestHandlerClass.timeout = 0.5
    with ExitStack() as stack:
        (idle,) = idle_connections(stack, server, 1)
        assert idle.recv(1) == b""   # the server closed it (the socket's own timeout is 30 s)


def test_a_trickling_client_is_cut_at_the_deadline(server, monkeypatch):
    monkeypatch.setattr(metrics, "CONNECTION_DEADLINE", 1.0)
    with ExitStack() as stack:
        (slow,) = idle_connections(stack, server, 1)
        slow.sendall(b"GET /metrics HTTP/1.0\r\n")
        for _ in range(100):   # a header line now and then, each well within READ_TIMEOUT
            try:
                slow.sendall(b"X-Slow: 1\r\n")
            except OSError:     # cut: the write fails
                break
            time.sleep(0.1)
        slow.settimeout(30)
        assert slow.recv(1024) == b"", "the trickling client was never cut"


def test_connections_beyond_the_cap_are_closed_and_served_again_after(server, monkeypatch):
    with ExitStack() as stack:
        idle_connections(stack, server, metrics.MAX_CONNECTIONS)
        time.sleep(0.2)   # let the accept loop take them all (not a speed: an ordering)
        (extra,) = idle_connections(stack, server, 1)
        assert extra.recv(1) == b""   # over the cap: closed at once, no thread for it
    # the idle ones closed: slots come back as their threads end
    deadline = time.monotonic() + 30
    while True:
        try:
            body = urllib.request.urlopen(server.url, timeout=10).read().decode()
            break
        except OSError:
            assert time.monotonic() < deadline, "no slot came back"
            time.sleep(0.1)
    assert "offload_test_up" in body


def test_healthz_says_whether_watch_reconciles():
    """503 before the first reconcile and once the last is older than max_age; 200 between, with the
    last reconcile's outcome (a failed one is reported, not unhealthy); 404 where no health is given."""
    import json
    import urllib.error

    health = metrics.Health()
    srv = metrics.MetricsServer("127.0.0.1:0")
    srv.start(CollectorRegistry(), health, max_age=3600)
    url = srv.url.replace("/metrics", "/healthz")
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url, timeout=30)
        assert e.value.code == 503 and json.loads(e.value.read())["last_reconcile"] is None
        health.record(False, 2)
        doc = json.loads(urllib.request.urlopen(url, timeout=30).read())
        assert doc["healthy"] and doc["last_reconcile_ok"] is False and doc["attached_programs"] == 2
        assert doc["reconciles"] == 1 and doc["reconcile_errors"] == 1 and doc["last_reconcile"].endswith("Z")
    finally:
        srv.close()
    healthy, doc = health.report(max_age=60, now=health.last_reconcile + 61)
    assert not healthy and doc["age_s"] == 61
    plain = metrics.MetricsServer("127.0.0.1:0")
    plain.start(CollectorRegistry())
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(plain.url.replace("/metrics", "/healthz"), timeout=30)
        assert e.value.code == 404
    finally:
        plain.close()
