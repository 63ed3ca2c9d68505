"""`offload lab` and the CLI's contract: labs touch only what they made, `down` is idempotent and
works after a crash, privileges are named, errors never show a traceback."""

import json
import subprocess

import pytest
from lib.env import unique_name
from lib.helpers import OFFLOAD

from offload import lab

pytestmark = pytest.mark.root


def run(*argv, check=True, user=None):
    cmd = list(argv)
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--inh-caps=-all"] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)


def host_links() -> list[str]:
    return sorted(d["ifname"] for d in json.loads(run("ip", "-j", "link", "show").stdout))


def netns_list() -> set[str]:
    return {line.split()[0] for line in run("ip", "netns", "list").stdout.splitlines() if line.strip()}


@pytest.fixture
def name():
    n = unique_name()
    yield n
    lab.down(n)


def test_lab_up_list_down(name):
    before = host_links()
    made = json.loads(run(OFFLOAD, "lab", "up", "--name", name, "--pairs", "3", "--mtu", "2000", "--json").stdout)
    assert made["netns"] == f"offload-lab-{name}" and len(made["pairs"]) == 3
    assert host_links() == before, "a lab must not create devices in the host namespace"
    links = {d["ifname"]: d for d in json.loads(run("ip", "-n", made["netns"], "-d", "-j", "link").stdout)}
    for p in made["pairs"]:
        for dev in (p["a"], p["b"]):
            assert links[dev]["mtu"] == 2000 and links[dev]["linkinfo"]["info_kind"] == "veth"
            assert "UP" in links[dev]["flags"]
    listed = json.loads(run(OFFLOAD, "lab", "list", "--json").stdout)["labs"]
    (mine,) = [x for x in listed if x["name"] == name]
    assert [p["a"] for p in mine["pairs"]] == [p["a"] for p in made["pairs"]]
    assert "removed" in run(OFFLOAD, "lab", "down", name).stdout
    assert made["netns"] not in netns_list()
    assert "nothing to do" in run(OFFLOAD, "lab", "down", name).stdout   # idempotent
    assert host_links() == before


def test_lab_down_after_a_crash(name):
    # A run killed half-way leaves a namespace with some devices: down still removes it all.
    ns = lab.netns_name(name)
    run("ip", "netns", "add", ns)
    run("ip", "-n", ns, "link", "add", f"{name}-a0", "type", "veth", "peer", "name", f"{name}-b0")
    assert ns in netns_list()
    run(OFFLOAD, "lab", "down", name)
    assert ns not in netns_list()


def test_lab_up_twice_is_refused(name):
    run(OFFLOAD, "lab", "up", "--name", name)
    res = run(OFFLOAD, "lab", "up", "--name", name, check=False)
    assert res.returncode == 2 and "exists" in res.stderr and "lab down" in res.stderr


@pytest.mark.parametrize("args,needle", [
    (["--name", "Bad_Name"], "bad lab name"),
    (["--name", "waytoolongname"], "bad lab name"),
    (["--pairs", "0"], "--pairs"),
    (["--mtu", "20"], "bad MTU"),
])
def test_lab_bad_input(args, needle):
    before = netns_list()
    res = run(OFFLOAD, "lab", "up", *args, check=False)
    assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr
    assert netns_list() == before


def test_failed_lab_up_leaves_nothing(name, monkeypatch):
    # The kernel refuses the second pair (an interface name over IFNAMSIZ): the first must go too.
    real = lab.pair_names
    monkeypatch.setattr(lab, "pair_names", lambda n, i: real(n, i) if i == 0 else lab.Pair("x" * 20, "y" * 20))
    from pyroute2.netlink.exceptions import NetlinkError
    with pytest.raises(NetlinkError):
        lab.up(name, pairs=3)
    assert lab.netns_name(name) not in netns_list()


def test_not_root_is_named(name):
    res = run(OFFLOAD, "lab", "up", "--name", name, check=False, user="65534")
    assert res.returncode == 3
    assert "CAP_NET_ADMIN" in res.stderr and "CAP_SYS_ADMIN" in res.stderr and "root" in res.stderr
    assert "Traceback" not in res.stderr
    assert lab.netns_name(name) not in netns_list()


def test_probe_works_unprivileged():
    # Reading is allowed to everyone; only program names need privileges.
    res = run(OFFLOAD, "probe", "--json", "lo", user="65534")
    assert json.loads(res.stdout)["interfaces"][0]["name"] == "lo"


def test_demo_builds_probes_and_removes():
    before = netns_list()
    res = run(OFFLOAD, "demo", "--json")
    report = json.loads(res.stdout)
    rec = {i["name"].split("-", 1)[-1]: i["recommended"]["mode"] for i in report["interfaces"]}
    assert rec["a0"] == rec["b0"] == "native"
    assert rec["a1"] == rec["b1"] == "generic"      # MTU 9000 pair: native blocked
    assert netns_list() == before


def test_profiles_check():
    res = run(OFFLOAD, "profiles", "--check", "--json")
    doc = json.loads(res.stdout)
    assert doc["problems"] == [] and {"veth", "netdevsim"} <= {p["driver"] for p in doc["profiles"]}


def test_profiles_check_fails_on_a_bad_file(tmp_path):
    (tmp_path / "x.yaml").write_text("driver: y\n")
    res = run(OFFLOAD, "profiles", "--check", "--profiles", str(tmp_path), check=False)
    assert res.returncode == 1 and "x.yaml" in res.stderr
