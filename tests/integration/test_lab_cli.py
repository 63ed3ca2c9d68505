"""`offload lab` and the CLI's contract: labs touch only what they made, `down` is idempotent and
works after a crash, privileges are named, errors never show a traceback."""

import json
import subprocess

import pytest
from lib.cli import offload
from lib.env import unique_name
from lib.kernel import host_links, netns_list

from offload import lab

pytestmark = pytest.mark.root


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.fixture
def name():
    n = unique_name()
    yield n
    lab.down(n)


def test_lab_up_list_down(name):
    before = host_links()
    made = json.loads(offload("lab", "up", "--name", name, "--pairs", "3", "--mtu", "2000", "--json").stdout)
    assert made["netns"] == f"offload-lab-{name}" and len(made["pairs"]) == 3
    assert host_links() == before, "a lab must not create devices in the host namespace"
    links = {d["ifname"]: d for d in json.loads(sh("ip", "-n", made["netns"], "-d", "-j", "link"))}
    for p in made["pairs"]:
        for dev in (p["a"], p["b"]):
            assert links[dev]["mtu"] == 2000 and links[dev]["linkinfo"]["info_kind"] == "veth"
            assert "UP" in links[dev]["flags"]
    listed = json.loads(offload("lab", "list", "--json").stdout)["labs"]
    (mine,) = [x for x in listed if x["name"] == name]
    assert [p["a"] for p in mine["pairs"]] == [p["a"] for p in made["pairs"]]
    assert "removed" in offload("lab", "down", name).stdout
    assert made["netns"] not in netns_list()
    assert "nothing to do" in offload("lab", "down", name).stdout   # idempotent
    assert host_links() == before


def test_lab_down_after_a_crash(name):
    # A run killed half-way leaves a namespace with some devices: down still removes it all.
    ns = lab.netns_name(name)
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", ns, "link", "add", f"{name}-a0", "type", "veth", "peer", "name", f"{name}-b0")
    assert ns in netns_list()
    offload("lab", "down", name)
    assert ns not in netns_list()


def test_lab_up_twice_is_refused(name):
    offload("lab", "up", "--name", name)
    res = offload("lab", "up", "--name", name, check=False)
    assert res.returncode == 2 and "exists" in res.stderr and "lab down" in res.stderr


@pytest.mark.parametrize("args,needle", [
    (["--name", "Bad_Name"], "bad lab name"),
    (["--name", "waytoolongname"], "bad lab name"),
    (["--pairs", "0"], "--pairs"),
    (["--mtu", "20"], "--mtu"),
])
def test_lab_bad_input(args, needle):
    before = netns_list()
    res = offload("lab", "up", *args, check=False)
    assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr
    # only the namespace this command would have made: other runs' labs come and go meanwhile
    named = args[1] if args[0] == "--name" else "demo"
    assert lab.netns_name(named) not in netns_list() - before


def test_failed_lab_up_leaves_nothing(name, monkeypatch):
    # The kernel refuses the second pair (an interface name over IFNAMSIZ): the first must go too.
    real = lab.pair_names
    monkeypatch.setattr(lab, "pair_names", lambda n, i: real(n, i) if i == 0 else lab.Pair("x" * 20, "y" * 20))
    from pyroute2.netlink.exceptions import NetlinkError
    with pytest.raises(NetlinkError):
        lab.up(name, pairs=3)
    assert lab.netns_name(name) not in netns_list()


def test_not_root_is_named(name):
    res = offload("lab", "up", "--name", name, check=False, user="65534")
    assert res.returncode == 3
    assert "CAP_NET_ADMIN" in res.stderr and "CAP_SYS_ADMIN" in res.stderr and "root" in res.stderr
    assert "Traceback" not in res.stderr
    assert lab.netns_name(name) not in netns_list()


def test_probe_works_unprivileged():
    # Reading is allowed to everyone; only program names need privileges.
    res = offload("probe", "--json", "lo", user="65534")
    assert json.loads(res.stdout)["interfaces"][0]["name"] == "lo"


def test_demo_builds_probes_and_removes(tmp_path):
    doc = json.loads(offload("demo", "--json", "--plot", str(tmp_path / "demo.png")).stdout)
    report = doc["probe"]
    rec = {i["name"].split("-", 1)[-1]: i["recommended"]["mode"] for i in report["interfaces"]}
    assert rec["a0"] == rec["b0"] == "native"
    assert rec["a1"] == rec["b1"] == "generic"      # MTU 9000 pair: native blocked
    assert doc["lab"]["netns"] not in netns_list()   # (other labs may come and go meanwhile)


def test_profiles_check():
    res = offload("profiles", "--check", "--json")
    doc = json.loads(res.stdout)
    assert doc["problems"] == [] and {"veth", "netdevsim"} <= {p["driver"] for p in doc["profiles"]}


def test_profiles_check_fails_on_a_bad_file(tmp_path):
    (tmp_path / "x.yaml").write_text("driver: y\n")
    res = offload("profiles", "--check", "--profiles", str(tmp_path), check=False)
    assert res.returncode == 1 and "x.yaml" in res.stderr
