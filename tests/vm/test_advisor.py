"""The offload advisor against the ground truth: netdevsim's real hw attach, in the VM lane's Linux
6.1. Every program of the corpus (tests/lib/objects.py) is judged by the advisor against a
netdevsim port, then loaded bound to the port by bpftool and attached in xdpoffload mode by
iproute2 (tools independent of offload); the two must agree for every program. The table is
printed between markers for scripts/advisor-corpus (docs/advisor.md). Then `offload check` and
`attach --mode auto` as a user runs them, and the bpf(2) calls attach makes, counted by strace.
"""

import os
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


def _first_failure(stderr: str) -> str:
    """libbpf's first line saying what failed (the map create, the program load), cut short."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    said = next((ln for ln in lines if re.match(r"libbpf: (map|prog) '[^']*': .*fail", ln)),
                next((ln for ln in lines if ln.startswith("libbpf:")), lines[0] if lines else "?"))
    return re.sub(r"\s+", " ", said)[:150]


def _actual(port: str, name: str, obj) -> tuple[bool, str]:
    """netdevsim's answer, through tools that are not offload's: bpftool loads the object bound to
    the port (every map but a perf event array bound too), iproute2 attaches it in xdpoffload."""
    pin = f"/sys/fs/bpf/advisor-corpus-{os.getpid()}-{name}"
    res = subprocess.run(["bpftool", "prog", "load", str(obj), pin, "type", "xdp", "dev", port],
                         capture_output=True, text=True)
    if res.returncode != 0:
        return False, _first_failure(res.stderr)
    try:
        att = subprocess.run(["ip", "link", "set", "dev", port, "xdpoffload", "pinned", pin],
                             capture_output=True, text=True)
        if att.returncode != 0:
            return False, "ip: " + re.sub(r"\s+", " ", att.stderr.strip())[:160]
        assert "hw" in kernel_xdp(port)
        subprocess.run(["ip", "link", "set", "dev", port, "xdpoffload", "off"], check=True)
        return True, "loaded by bpftool, attached in xdpoffload by ip"
    finally:
        os.unlink(pin)
        assert kernel_xdp(port) == {}, "the corpus left something attached"


@pytest.mark.timeout(2400)   # in-process predictions, bpftool and ip per program: minutes under TCG
def test_corpus_predictions_agree_with_netdevsim(nsim, tmp_path, capsys):
    from offload.load import advisor, programs
    from offload.probe.report import assess

    objs = corpus_objects(tmp_path)
    assert len(objs) >= 15
    _, (dev,) = assess([nsim.ifname])
    assert dev.profile is not None and dev.profile.driver == "netdevsim"
    rows, wrong = [], []
    for name, obj in objs.items():
        hw = advisor.for_device(advisor.read(programs.resolve(str(obj))), dev.profile, dev.verdicts, "hw")
        assert hw.status in ("would_load", "refused"), f"{name}: the advisor is unsure: {hw.to_dict()}"
        loaded, said = _actual(nsim.ifname, name, obj)
        rules = ", ".join(sorted({f.rule for f in hw.findings if f.effect == "refuse"})) or "-"
        rows.append(f"| {name} | {hw.status} | {'loaded' if loaded else 'refused'} | {rules} | {said} |")
        if (hw.status == "would_load") != loaded:
            wrong.append(name)
    table = ["| program | predicted (hw) | netdevsim (bpftool load + ip xdpoffload) | advisor's refusing rules | "
             "what the tools said |", "| --- | --- | --- | --- | --- |", *rows,
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
    # strace names the device: map_ifindex=if_nametoindex("eni100np1") (or the number without a name)
    bound = [ln for ln in out.stderr.splitlines()
             if re.search(rf'(prog|map)_ifindex=(if_nametoindex\("{re.escape(port)}"\)|{ifindex}\b)', ln)]
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
