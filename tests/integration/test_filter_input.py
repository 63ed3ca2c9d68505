"""`filter` and `stats` on interfaces that do not exist (bad input, exit 2) or carry nothing of
offload's (exit 10), and nested prefixes each keeping an entry of their own through the CLI."""

import socket

import pytest
from lib.kernel import kernel_xdp

from offload.bench.frames import ipv4_udp
from offload.kernel import netns as netns_mod

pytestmark = pytest.mark.root


MISSING = [["stats", "nosuch0"], ["stats", "nosuch0", "--interval", "0.1"], ["filter", "list", "nosuch0"],
           ["filter", "add", "nosuch0", "192.0.2.0/24"], ["filter", "del", "nosuch0", "192.0.2.0/24"]]


def test_missing_interface_is_bad_input(env):
    for args in MISSING:   # one lab for all: building one is the slow part
        res = env.offload(*args, check=False)
        assert res.returncode == 2, (args, res.returncode, res.stderr)
        where = f"network namespace {env.netns}" if env.netns else "the host's network namespace"
        assert f"nosuch0: no such interface in {where}" in res.stderr, res.stderr
        assert "hint: list them with `offload probe" in res.stderr and "Traceback" not in res.stderr


def test_existing_interface_without_ours_is_not_attached(env):
    for args, needle in [(["stats"], "no program of offload's"), (["filter", "list"], "no `filter` program"),
                         (["filter", "add"], "no `filter` program")]:
        res = env.offload(*args, env.ifname, *(["192.0.2.0/24"] if "add" in args else []), check=False)
        assert res.returncode == 10 and needle in res.stderr, (args, res.returncode, res.stderr)
    assert kernel_xdp(env.ifname, env.netns) == {}


def test_nested_prefixes_each_have_an_entry(env):
    # overlapping prefixes in the attach param are all applied, not skipped under the /16
    env.offload_json("attach", env.ifname, "filter", "--param", "prefixes=198.51.0.0/16,198.51.100.0/24")
    assert env.offload_json("filter", "list", env.ifname)["prefixes"] == ["198.51.0.0/16", "198.51.100.0/24"]
    res = env.offload_json("filter", "add", env.ifname, "198.51.100.128/25", "198.51.0.0/16")
    assert res == {"schema_version": 1, "interface": env.ifname, "added": ["198.51.100.128/25"], "already_present": ["198.51.0.0/16"]}
    res = env.offload_json("filter", "del", env.ifname, "198.51.0.0/16", "203.0.113.0/24")
    assert res == {"schema_version": 1, "interface": env.ifname, "removed": ["198.51.0.0/16"], "not_present": ["203.0.113.0/24"]}
    assert env.offload_json("filter", "list", env.ifname)["prefixes"] == ["198.51.100.0/24", "198.51.100.128/25"]
    if env.kind == "veth":   # the /24 still drops once the /16 is gone
        with netns_mod.inside(env.netns):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        with s:
            s.bind((env.peer, 0))
            for f in [ipv4_udp("198.51.100.9", "203.0.113.1")] * 3 + [ipv4_udp("198.51.7.9", "203.0.113.1")] * 2:
                s.send(f)
        st = env.offload_json("stats", env.ifname)
        assert st["packets"]["drop"] == 3 and st["packets"]["pass"] == 2


def test_concurrent_edits_take_turns(env):
    """Two edits at once would both call a prefix "added" (and one's rollback could delete the
    other's entry): an edit waits while another holds offload's state lock, then runs."""
    import json
    import subprocess
    import time

    from lib.cli import OFFLOAD

    from offload.load import pins

    env.offload_json("attach", env.ifname, "filter")
    with pins.locked(pins.STATE_LOCK, 5, "the test", ""):
        cmd = [OFFLOAD, "filter", "add", env.ifname, "192.0.2.0/24", "--json", "--netns", env.netns]
        waiting = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert waiting.poll() is None, "the edit ran while another held the lock"
        assert env.offload_json("filter", "list", env.ifname)["prefixes"] == []   # reads do not wait
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, err
    assert json.loads(out)["added"] == ["192.0.2.0/24"]
    assert env.offload_json("filter", "list", env.ifname)["prefixes"] == ["192.0.2.0/24"]


def test_more_prefixes_than_the_blocklist_holds_are_refused_whole(env):
    """The kernel says ENOSPC (E2BIG) only part-way through (that was exit 70, after thousands of
    writes): the request is counted first and refused (exit 2) with nothing written, naming the
    count and the limit. (An empty map: reading a full LPM trie's keys takes minutes here.)"""
    from offload.load.filter import MAX_ENTRIES

    env.offload_json("attach", env.ifname, "filter", "--param", "prefixes=192.0.2.0/24")
    many = [f"10.{i >> 8}.{i & 255}.0/24" for i in range(MAX_ENTRIES)]
    res = env.offload("filter", "add", env.ifname, "2001:db8::/32", *many, check=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert (f"{MAX_ENTRIES} new IPv4 prefixes on top of the 1 blocked would make {MAX_ENTRIES + 1}; "
            f"the blocklist holds at most {MAX_ENTRIES}: nothing was changed") in res.stderr
    assert env.offload_json("filter", "list", env.ifname)["prefixes"] == ["192.0.2.0/24"]
