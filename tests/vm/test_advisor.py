"""The offload advisor against the ground truth: netdevsim's real hw attach, in the VM lane's Linux
6.1. Every program of the corpus (tests/lib/objects.py) is judged by `offload check` against a
netdevsim port, then attached with `--mode hw` (no advisor in the way); the two must agree for
every program. The table is printed between markers for scripts/advisor-corpus (docs/advisor.md).
"""

import json
import re
import shutil
import subprocess

import pytest
from lib.cli import offload, offload_json
from lib.env import NetdevSim
from lib.kernel import kernel_xdp
from lib.objects import corpus_objects

pytestmark = pytest.mark.vm


@pytest.fixture
def nsim():
    with NetdevSim() as env:
        yield env


def _actual(port: str, obj) -> tuple[bool, str]:
    res = offload("attach", port, str(obj), "--mode", "hw", "--json", check=False)
    if res.returncode == 0:
        assert kernel_xdp(port) == {"hw": json.loads(res.stdout)["prog_id"]}
        offload_json("detach", port)
        assert kernel_xdp(port) == {}
        return True, "attached in hw"
    assert kernel_xdp(port) == {}, "a refused attach left something behind"
    first = (res.stderr.strip().splitlines() or ["?"])[0]
    return False, re.sub(r"\s+", " ", first)[:160]


@pytest.mark.timeout(2400)   # ~40 offload commands under qemu TCG: a slow machine's margin
def test_corpus_predictions_agree_with_netdevsim(nsim, tmp_path, capsys):
    objs = corpus_objects(tmp_path)
    assert len(objs) >= 15
    rows, wrong = [], []
    for name, obj in objs.items():
        doc = offload_json("check", str(obj), nsim.ifname)
        (target,) = doc["targets"]
        hw = target["modes"]["hw"]
        predicted = hw["status"]
        assert predicted in ("would_load", "refused"), f"{name}: the advisor is unsure: {hw}"
        loaded, said = _actual(nsim.ifname, obj)
        rules = ", ".join(sorted({f["rule"] for f in hw["findings"] if f["effect"] == "refuse"})) or "-"
        rows.append(f"| {name} | {predicted} | {'loaded' if loaded else 'refused'} | {rules} | {said} |")
        if (predicted == "would_load") != loaded:
            wrong.append(name)
    table = ["| program | predicted (hw) | netdevsim hw attach | advisor's rules | kernel said |",
             "| --- | --- | --- | --- | --- |", *rows,
             f"agreement: {len(rows) - len(wrong)}/{len(rows)}"]
    with capsys.disabled():
        print("\nADVISOR-CORPUS-BEGIN\n" + "\n".join(table) + "\nADVISOR-CORPUS-END", flush=True)
    assert not wrong, f"the advisor disagrees with netdevsim on {wrong}"


def test_percpu_map_is_predicted_and_auto_goes_straight_to_native(nsim, tmp_path):
    obj = corpus_objects(tmp_path)["percpu-array"]
    doc = offload_json("check", str(obj), nsim.ifname)
    (t,) = doc["targets"]
    assert t["modes"]["hw"]["status"] == "refused" and t["predicted"] == "native"
    (f,) = [f for f in t["modes"]["hw"]["findings"] if f["rule"] == "kernel-map-types"]
    assert "map hits" in f["what"] and re.search(r"percpu-array\.c:\d+$", f["where"]), f
    res = offload_json("attach", nsim.ifname, str(obj))
    assert res["mode"] == "native"
    (hw,) = res["fallbacks"]
    assert hw["mode"] == "hw" and hw["reason"].startswith("not tried: the program would be refused")
    assert "map hits" in hw["reason"] and "percpu-array.c:" in hw["reason"]
    assert kernel_xdp(nsim.ifname) == {"native": res["prog_id"]}
    offload_json("detach", nsim.ifname)


def _device_bound(port: str, ifindex: int, *args: str) -> tuple[int, int]:
    """Run `offload attach` under strace: bpf(2) calls bound to the port (BPF_PROG_LOAD and
    BPF_MAP_CREATE with its ifindex) and the exit code."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (scripts/setup installs it)")
    out = subprocess.run([strace, "-f", "-qq", "-e", "trace=bpf", "-s", "0", ".venv/bin/offload", "attach", port,
                          *args], capture_output=True, text=True)
    bound = [ln for ln in out.stderr.splitlines() if re.search(rf"(prog|map)_ifindex={ifindex}\b", ln)]
    return len(bound), out.returncode


@pytest.mark.timeout(900)    # two interpreters started under strace in TCG
def test_auto_makes_no_hw_load_attempt_when_the_advisor_refuses(nsim, tmp_path):
    obj = str(corpus_objects(tmp_path)["percpu-array"])
    ifindex = int(open(f"/sys/class/net/{nsim.ifname}/ifindex").read())
    bound, rc = _device_bound(nsim.ifname, ifindex, obj)
    assert rc == 0 and bound == 0
    offload_json("detach", nsim.ifname)
    tried, rc = _device_bound(nsim.ifname, ifindex, obj, "--try-hw")   # the flag: tried, refused, native
    assert rc == 0 and tried >= 1
    offload_json("detach", nsim.ifname)
    assert kernel_xdp(nsim.ifname) == {}
