"""The container image (scripts/build-image) does the job on its own: built from this checkout
(or reused when nothing changed), run with podman as the DaemonSet runs it (privileged, the host's
bpffs at /sys/fs/bpf, /run/offload from the host), joined to a lab namespace, it probes, lists the
library and applies a policy; the kernel, the pins and the records on the host agree with it, the
host's offload sees the attachment as its own, and a detach through the image leaves nothing.

Each test has a bpffs of its own (mounted for it, unmounted after) and a run directory of its
own, so nothing of another test run on this host is in view."""

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from lib.helpers import ROOT
from lib.kernel import kernel_xdp

from offload.kernel import netns as netns_mod

# The first test builds the image when the cache is cold: ~2 minutes, more on a busy host.
pytestmark = [pytest.mark.root, pytest.mark.image, pytest.mark.timeout(1200)]

PODMAN = str(ROOT / "scripts/podman")
LIBRARY = ["count_drop", "count_pass", "filter", "redirect", "reflect"]


@pytest.fixture(scope="module")
def image() -> str:
    """The image's id (not its tag: another checkout may retag offload:<version> meanwhile)."""
    for tool in ("podman", "mmdebstrap"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (scripts/setup installs it): the image cannot be built here")
    res = subprocess.run([str(ROOT / "scripts/build-image"), "--print-id"], capture_output=True, text=True,
                         timeout=1800)
    assert res.returncode == 0, res.stderr[-4000:]
    return res.stdout.strip()


class State:
    """Where the container keeps its state, on the host: a bpffs instance and a run directory."""

    def __init__(self, base: Path) -> None:
        self.bpffs, self.run = base / "bpffs", base / "run"
        self.bpffs.mkdir()
        self.run.mkdir(mode=0o700)
        subprocess.run(["mount", "-t", "bpf", "bpffs", str(self.bpffs)], check=True)

    def close(self) -> None:
        subprocess.run(["umount", str(self.bpffs)], check=True)

    def host_env(self) -> dict[str, str]:
        """The host's offload, looking at the same state."""
        return {**os.environ, "OFFLOAD_BPFFS": str(self.bpffs), "OFFLOAD_RUN_DIR": str(self.run)}

    def files(self) -> list[str]:
        """Every pin and record offload keeps (the bpffs instance's own *.debug iterators aside)."""
        found = [str(p.relative_to(self.bpffs)) for p in self.bpffs.rglob("*") if p.is_file()]
        found += [str(p.relative_to(self.run)) for p in (self.run / "attachments").rglob("*") if p.is_file()]
        return sorted(f for f in found if f not in ("progs.debug", "maps.debug"))


@pytest.fixture
def state(tmp_path):
    s = State(tmp_path)
    yield s
    s.close()


def podman_run(image: str, *args: str, netns: str | None, state: State | None = None,
               mounts: tuple[str, ...] = (), entrypoint: str | None = None) -> subprocess.CompletedProcess:
    """`podman run` of the image in `netns` (None: the host's), with the mounts the DaemonSet has:
    /run/netns too, so offload inside names the namespace it is in as `ip netns` does."""
    argv = [PODMAN, "run", "--rm", "--privileged",
            "--network", f"ns:/run/netns/{netns}" if netns else "host", "-v", "/run/netns:/run/netns:ro"]
    if state:
        argv += ["-v", f"{state.bpffs}:/sys/fs/bpf", "-v", f"{state.run}:/run/offload"]
    for m in mounts:
        argv += ["-v", m]
    if entrypoint:
        argv += ["--entrypoint", entrypoint]
    return subprocess.run([*argv, image, *args], capture_output=True, text=True, timeout=300)


def host_offload_json(state: State, *args: str) -> dict:
    res = subprocess.run([str(ROOT / ".venv/bin/offload"), *args, "--json"], capture_output=True, text=True,
                         timeout=300, env=state.host_env())
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_image_carries_the_library_and_no_compiler_or_kernel_headers(image):
    res = podman_run(image, "-c", "command -v clang gcc bpftool; ls -A /usr/src; ls -A /lib/modules 2>/dev/null; "
                                  "command -v offload", netns=None, entrypoint="/bin/sh")
    assert res.stdout.split() == ["/opt/offload/bin/offload"], res.stdout + res.stderr
    res = podman_run(image, "programs", "--json", netns=None)
    assert res.returncode == 0, res.stderr
    assert [p["name"] for p in json.loads(res.stdout)["programs"]] == LIBRARY
    res = podman_run(image, "profiles", "--check", "--json", netns=None)
    assert res.returncode == 0, res.stderr
    profiles = json.loads(res.stdout)["profiles"]
    assert len(profiles) >= 20 and all("/opt/offload/" in p["file"] for p in profiles)
    version = subprocess.run([str(ROOT / ".venv/bin/offload"), "--version"], capture_output=True, text=True).stdout
    assert podman_run(image, "--version", netns=None).stdout == version


def test_image_is_lean_and_leaves_plotting_out(image, tmp_path):
    """At most 170 MB (it was 313 MB with matplotlib, numpy and pillow, which only --plot uses);
    --plot in it says how to get them."""
    size = int(subprocess.run([PODMAN, "image", "inspect", "--format", "{{.Size}}", image], capture_output=True,
                              text=True, check=True).stdout)
    assert size <= 170_000_000, f"{size / 1e6:.0f} MB"
    res = podman_run(image, "-c", "/opt/offload/bin/python -c 'import importlib.util as u; "
                     "print(*(bool(u.find_spec(m)) for m in (\"matplotlib\", \"numpy\", \"PIL\")))'",
                     netns=None, entrypoint="/bin/sh")
    assert res.stdout.split() == ["False", "False", "False"], res.stdout + res.stderr
    res = podman_run(image, "bench", "--lab", "--plot", "/tmp/b.png", netns=None)
    assert res.returncode == 4 and "offload[plot]" in res.stderr, res.stdout + res.stderr


def test_image_applies_a_policy_the_host_sees_and_detaches_leaving_nothing(image, env, state, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - name: image-test\n"
                      f"    match: {{interfaces: [{env.ifname}]}}\n"
                      "    program: count_drop\n    mode: {prefer: auto, min: generic}\n")
    ns = env.netns or "host"

    # The probe inside agrees with the host's on every interface of the namespace.
    res = podman_run(image, "probe", "--json", netns=env.netns)
    assert res.returncode == 0, res.stderr
    inside = {i["name"]: i["recommended"]["mode"] for i in json.loads(res.stdout)["interfaces"]}
    host = host_offload_json(state, "probe", *(["--netns", env.netns] if env.netns else []))
    assert inside == {i["name"]: i["recommended"]["mode"] for i in host["interfaces"]}
    expected = inside[env.ifname]

    run_policy = ("apply", "-f", "/etc/offload/policy.yaml", "--json")
    res = podman_run(image, *run_policy, netns=env.netns, state=state, mounts=(f"{policy}:/etc/offload/policy.yaml:ro",))
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    (step,) = doc["steps"]
    assert doc["outcome"] == "ok" and step["interface"] == env.ifname and step["mode"] == expected
    assert kernel_xdp(env.ifname, env.netns) == {expected: step["prog_id"]}

    # Pinned and recorded on the host, under the namespace's own name, and the host's offload
    # calls it its own.
    assert state.files() == [f"attachments/{ns}/{env.ifname}.json", f"offload/{ns}/{env.ifname}/map_xdp_stats",
                             f"offload/{ns}/{env.ifname}/map_xdp_stats_fast", f"offload/{ns}/{env.ifname}/prog"]
    pinned = json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "pinned",
                                        str(state.bpffs / "offload" / ns / env.ifname / "prog")],
                                       capture_output=True, text=True, check=True).stdout)
    assert pinned["id"] == step["prog_id"]
    status = host_offload_json(state, "status", *(["--netns", env.netns] if env.netns else []))
    assert [(a["interface"], a["mode"], a["prog_id"], a["ours"]) for a in status["attachments"]] == [
        (env.ifname, expected, step["prog_id"], True)]

    # A second container finds the first one's state: nothing to do.
    res = podman_run(image, *run_policy, netns=env.netns, state=state, mounts=(f"{policy}:/etc/offload/policy.yaml:ro",))
    assert res.returncode == 0 and json.loads(res.stdout)["changed"] == 0, res.stdout + res.stderr
    assert kernel_xdp(env.ifname, env.netns) == {expected: step["prog_id"]}

    res = podman_run(image, "detach", env.ifname, "--json", netns=env.netns, state=state)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["detached"] == {"mode": expected, "prog_id": step["prog_id"]}
    assert kernel_xdp(env.ifname, env.netns) == {}
    assert state.files() == []


def test_objects_attach_in_the_image_and_c_sources_are_refused_with_what_is_missing(image, env, state, tmp_path,
                                                                                    xdp_pass_obj):
    """A compiled object attaches as a library program does; C needs a compiler and the image has
    none: refused before anything is loaded, with what to do, and nothing attached or pinned."""
    (tmp_path / "src").mkdir()
    shutil.copy(xdp_pass_obj, tmp_path / "src/xdp_pass.o")
    (tmp_path / "src/bcc.c").write_text("BPF_ARRAY(counts, u64, 1);\n"
                                        "int xdp_prog(struct xdp_md *ctx) { return XDP_PASS; }\n")
    shutil.copy(ROOT / "tests/integration/xdp_pass.c", tmp_path / "src/libbpf.c")
    mounts = (f"{tmp_path / 'src'}:/src:ro",)
    res = podman_run(image, "attach", env.ifname, "/src/bcc.c", netns=env.netns, state=state, mounts=mounts)
    assert res.returncode == 4, res.stderr
    assert "bcc-dialect C needs bcc, which is not installed here" in res.stderr and "SEC(" in res.stderr
    res = podman_run(image, "attach", env.ifname, "/src/libbpf.c", netns=env.netns, state=state, mounts=mounts)
    assert res.returncode == 5 and "clang is not installed" in res.stderr, res.stderr
    assert kernel_xdp(env.ifname, env.netns) == {}
    assert state.files() == []
    res = podman_run(image, "attach", env.ifname, "/src/xdp_pass.o", "--json", netns=env.netns, state=state,
                     mounts=mounts)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["program"] == "xdp_pass" and kernel_xdp(env.ifname, env.netns) == {doc["mode"]: doc["prog_id"]}
    res = podman_run(image, "detach", env.ifname, netns=env.netns, state=state)
    assert res.returncode == 0 and kernel_xdp(env.ifname, env.netns) == {} and state.files() == [], res.stderr


def test_the_daemonset_runs_this_image_as_built(image, env, state, tmp_path):
    """deploy/offload-watch.yaml's container, as podman runs it: this version's image, no kernel
    headers mounted, its own command and mounts (the ConfigMap's policy swapped for one matching the
    lab); it attaches, stops on SIGTERM with exit 0 and leaves the program attached and pinned."""
    import yaml

    docs = list(yaml.safe_load_all((ROOT / "deploy/offload-watch.yaml").read_text()))
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    version = subprocess.run([str(ROOT / ".venv/bin/offload"), "--version"], capture_output=True,
                             text=True).stdout.split()[-1]
    assert container["image"] == f"localhost/offload:{version}"
    host_paths = [v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v]
    assert not any(p.startswith(("/lib/modules", "/usr/src")) for p in host_paths), host_paths

    policy_dir = tmp_path / "policy"
    policy_dir.mkdir()
    (policy_dir / "policy.yaml").write_text("rules:\n  - name: image-test\n"
                                            f"    match: {{interfaces: [{env.ifname}]}}\n"
                                            "    program: count_drop\n")
    sources = {"policy": policy_dir, "bpffs": state.bpffs, "run": state.run}
    mounts = []
    for m in container["volumeMounts"]:
        src = sources.get(m["name"])
        if src is None:                     # any other volume: an empty directory of its own
            src = tmp_path / f"volume-{m['name']}"
            src.mkdir()
        mounts += ["-v", f"{src}:{m['mountPath']}" + (":ro" if m.get("readOnly") else "")]
    # The kubelet expands $(VAR) in the command from the container's env; status.hostIP is the
    # node's address: here the lab namespace's loopback (watch refuses an unspecified address).
    if env.netns:
        env.cmd("ip", "link", "set", "dev", "lo", "up")
    fields = {"status.hostIP": "127.0.0.1"}
    values = {e["name"]: e.get("value") or fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
              for e in container.get("env", [])}
    command = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], c) for c in container["command"]]
    name = f"offload-image-test-{env.ifname}"
    argv = [PODMAN, "run", "-d", "--name", name, "--privileged",
            "--network", f"ns:/run/netns/{env.netns}" if env.netns else "host", "-v", "/run/netns:/run/netns:ro",
            *mounts, "--entrypoint", command[0], image, *command[1:]]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    env.defer(subprocess.run, [PODMAN, "rm", "-f", name], capture_output=True)
    deadline = time.monotonic() + 120
    while not kernel_xdp(env.ifname, env.netns) and time.monotonic() < deadline:
        time.sleep(0.2)
    attached = kernel_xdp(env.ifname, env.netns)
    # the kubelet's probes, as the manifest names them: the port the container serves, /healthz
    port = int(command[command.index("--metrics-address") + 1].rsplit(":", 1)[1])
    probes = {container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes == {"/healthz"}
    health: dict = {}
    while not health.get("attached_programs") and time.monotonic() < deadline:   # recorded after the attach
        try:
            with netns_mod.inside(env.netns):
                health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30).read())
        except urllib.error.HTTPError as e:   # 503 until the first reconcile is recorded
            health = json.loads(e.read())
        time.sleep(0.2)
    assert health["healthy"] and health["attached_programs"] == 1, health
    subprocess.run([PODMAN, "stop", "-t", "20", name], check=True, capture_output=True, timeout=120)
    res = subprocess.run([PODMAN, "logs", name], capture_output=True, text=True)
    logs = res.stdout + res.stderr            # podman gives the container's stderr on its stdout
    code = subprocess.run([PODMAN, "inspect", "--format", "{{.State.ExitCode}}", name], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert len(attached) == 1, logs
    assert code == "0" and "offload-watch: stopped" in logs, logs
    assert kernel_xdp(env.ifname, env.netns) == attached          # stays attached: no --detach-on-exit
    ns = env.netns or "host"
    assert f"offload/{ns}/{env.ifname}/prog" in state.files()
    res = podman_run(image, "detach", env.ifname, "--json", netns=env.netns, state=state)
    assert res.returncode == 0 and kernel_xdp(env.ifname, env.netns) == {} and state.files() == [], res.stderr
