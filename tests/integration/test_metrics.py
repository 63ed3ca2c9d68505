"""Live metrics (`watch --metrics-address`, `--textfile-dir`), the textfile and NFD exports, the
systemd unit: scraped over HTTP, checked against `offload stats`, iproute2, bpftool, promtool and
systemd-analyze."""

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone

import pytest
from lib.cli import OFFLOAD
from lib.helpers import ROOT, need_tool, valid_manifest
from lib.kernel import kernel_xdp
from prometheus_client.parser import text_string_to_metric_families

from offload.bench.frames import ipv4_udp
from offload.kernel import netns as netns_mod

pytestmark = pytest.mark.root


def send_frames(env, dev: str, n: int) -> int:
    """n UDP frames out of `dev` (the peer): they arrive on env.ifname. Returns the frame size."""
    frame = ipv4_udp("198.51.100.1", "198.51.100.2")
    with netns_mod.inside(env.netns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with s:
        s.bind((dev, 0))
        for _ in range(n):
            s.send(frame)
    return len(frame)


def scrape(url: str, timeout: float = 30) -> tuple[str, dict]:
    text = urllib.request.urlopen(url, timeout=timeout).read().decode()
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def value(samples: dict, name: str, **labels) -> float:
    want = {k: str(v) for k, v in labels.items()}
    hits = [v for (n, lbl), v in samples.items() if n == name and want.items() <= dict(lbl).items()]
    assert len(hits) == 1, f"{name}{want}: {len(hits)} samples"
    return hits[0]


def labels_of(samples: dict, name: str) -> list[dict]:
    return [dict(lbl) for (n, lbl) in samples if n == name]


def start_watch(env, tmp_path, *extra: str) -> tuple[subprocess.Popen, str]:
    pol = tmp_path / "policy.yaml"
    pol.write_text(f"rules:\n  - name: t\n    match: {{interfaces: [\"{env.ifname}\"]}}\n"
                   "    program: count_drop\n    mode: {prefer: auto, min: generic}\n")
    proc = subprocess.Popen([OFFLOAD, "watch", "-f", str(pol), "--interval", "60", "--metrics-address",
                             "127.0.0.1:0", *extra, "--netns", env.netns],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = ""
    deadline = time.time() + 60
    while "metrics=" not in line and time.time() < deadline and proc.poll() is None:
        line = proc.stdout.readline()
    m = re.search(r"metrics=(http://\S+)", line)
    if not m:
        proc.kill()
        raise AssertionError(f"watch did not say where it serves: {line!r} {proc.stderr.read()}")
    return proc, m.group(1)


def wait_attached(url: str) -> tuple[str, dict]:
    """The first scrape after watch's program is attached, pinned and recorded (between the
    kernel's attach and the record, it is not yet known as offload's and has no counters)."""
    deadline = time.time() + 60
    while time.time() < deadline:
        text, samples = scrape(url)
        if labels_of(samples, "offload_xdp_packets_total"):
            return text, samples
        time.sleep(0.05)
    raise AssertionError(f"watch attached nothing within 60 s: {text}")


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out + err


def test_metrics_endpoint_counts_live_traffic_and_shows_foreign_programs(env, tmp_path, xdp_pass_obj):
    if env.kind != "veth":
        pytest.skip("needs a veth lab: exact counts need an idle receiver")
    promtool = need_tool("promtool")
    # someone else's program on the peer: offload did not attach it, the info metric still shows it
    env.cmd("ip", "link", "set", "dev", env.peer, "xdpgeneric", "obj", str(xdp_pass_obj), "sec", "xdp")
    theirs = kernel_xdp(env.peer, env.netns)["generic"]
    tf = tmp_path / "textfile"
    proc, url = start_watch(env, tmp_path, "--textfile-dir", str(tf))
    try:
        text, before = wait_attached(url)
        ours = kernel_xdp(env.ifname, env.netns)
        (mode, prog_id), = ours.items()
        n = 1000
        size = send_frames(env, env.peer, n)
        _, after = scrape(url)
        stats = env.offload_json("stats", env.ifname)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url.removesuffix("metrics"), timeout=30)
        assert e.value.code == 404
    finally:
        rc, log = stop(proc)
    assert rc == 0, log

    dev = {"device": env.ifname, "netns": env.netns}
    drop0 = value(before, "offload_xdp_packets_total", **dev, action="drop")
    assert value(after, "offload_xdp_packets_total", **dev, action="drop") - drop0 == n   # the counter moved
    assert value(after, "offload_xdp_packets_total", **dev, action="drop") == stats["packets"]["drop"]
    assert value(after, "offload_xdp_bytes_total", **dev, action="drop") == stats["bytes"]["drop"]
    assert stats["bytes"]["drop"] - value(before, "offload_xdp_bytes_total", **dev, action="drop") == n * size

    tag = json.loads(subprocess.run(["bpftool", "prog", "show", "id", str(prog_id), "-j"], capture_output=True,
                                    text=True, check=True).stdout)["tag"]
    info = {(i["device"], i["owner"]): i for i in labels_of(after, "offload_xdp_program_info")}
    assert info[(env.ifname, "offload")] == {**dev, "mode": mode, "program": "count_drop", "prog_id": str(prog_id),
                                             "tag": tag, "owner": "offload", "member": ""}
    assert info[(env.peer, "foreign")]["prog_id"] == str(theirs) and info[(env.peer, "foreign")]["mode"] == "generic"
    assert not [lbl for lbl in labels_of(after, "offload_xdp_packets_total") if lbl["device"] == env.peer]
    assert value(after, "offload_watch_reconciles_total") >= 1
    assert value(after, "offload_watch_reconcile_errors_total") == 0
    assert value(after, "offload_watch_attached_programs") == 1
    assert abs(value(after, "offload_watch_last_reconcile_timestamp_seconds") - time.time()) < 300

    res = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    # the textfile, rewritten after every reconcile: promtool accepts it, nothing half-written is left
    assert os.listdir(tf) == ["offload.prom"]
    prom = (tf / "offload.prom").read_text()
    res = subprocess.run([promtool, "check", "metrics"], input=prom, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f'offload_xdp_program_info{{device="{env.ifname}"' in prom
    # SIGTERM freed the port
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    env.cmd("ip", "link", "set", "dev", env.peer, "xdpgeneric", "off")


def test_idle_connections_do_not_delay_a_scrape(env, tmp_path):
    proc, url = start_watch(env, tmp_path)
    addr = urllib.parse.urlsplit(url)
    idle = []
    try:
        wait_attached(url)
        # clients that connect and never send a request (a port scan, a stuck proxy)
        idle = [socket.create_connection((addr.hostname, addr.port), timeout=30) for _ in range(20)]
        text, samples = scrape(url, timeout=10)   # a generous deadline: each idle one used to hold it 10 s
    finally:
        for s in idle:
            s.close()
        rc, log = stop(proc)
    assert rc == 0, log
    assert {lbl["device"] for lbl in labels_of(samples, "offload_xdp_program_info")} >= {env.ifname}


@pytest.mark.parametrize("address, code, says", [
    ("9477", 2, "expected ADDR:PORT"),
    ("localhost:9477", 2, "not an IP address"),
    ("127.0.0.1:99999", 2, "expected ADDR:PORT"),
    ("192.0.2.1:9477", 1, "cannot serve /metrics on 192.0.2.1:9477"),   # not an address of this host
    ("0:9000", 2, "name the address to listen on"),         # every address of the host: never implied
    ("0.0.0.0:9000", 2, "name the address to listen on"),
    ("[::]:9000", 2, "name the address to listen on"),
])
def test_a_bad_metrics_address_fails_before_anything_is_attached(env, tmp_path, address, code, says):
    pol = tmp_path / "policy.yaml"
    pol.write_text(f"rules:\n  - name: t\n    match: {{interfaces: [\"{env.ifname}\"]}}\n    program: count_drop\n")
    res = env.offload("watch", "-f", str(pol), "--metrics-address", address, check=False)
    assert res.returncode == code and says in res.stderr, res.stderr
    assert kernel_xdp(env.ifname, env.netns) == {}


def test_export_prometheus_textfile(env, tmp_path):
    promtool = need_tool("promtool")
    res = env.offload_json("attach", env.ifname, "count_drop")
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"config": {"program": "count_drop"}, "results": [
        {"mode": "native", "generator": "live-frames", "rx_pps": 1.5e6},
        {"mode": "generic", "generator": "live-frames", "rx_pps": None}]}))
    out = env.offload_json("export", "prometheus", "--textfile-dir", str(tmp_path / "tf"), "--bench-json", str(bench))
    prom = tmp_path / "tf" / "offload.prom"
    assert out["path"] == str(prom) and os.listdir(tmp_path / "tf") == ["offload.prom"]
    assert oct(prom.stat().st_mode & 0o777) == "0o644"   # node-exporter runs as a user of its own
    check = subprocess.run([promtool, "check", "metrics"], input=prom.read_text(), capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    fams = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    assert fams["offload_xdp_packets"].type == "counter"
    (info,) = fams["offload_xdp_program_info"].samples   # the text format has no info type: a gauge of 1
    assert info.value == 1 and info.labels["prog_id"] == str(res["prog_id"]) and info.labels["owner"] == "offload"
    (pps,) = fams["offload_bench_rx_packets_per_second"].samples      # the missing rate is absent, not 0
    assert pps.labels["mode"] == "native" and pps.value == 1.5e6
    bad = env.offload("export", "prometheus", "--path", str(tmp_path / "offload.txt"), check=False)
    assert bad.returncode == 2 and "*.prom" in bad.stderr


def test_textfile_directory_behind_someone_elses_symlink_is_refused(env, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    os.lchown(link, 65534, 65534)          # nobody's link: root must not follow it
    res = env.offload("export", "prometheus", "--textfile-dir", str(link), check=False)
    assert res.returncode == 9 and "symbolic link owned by uid 65534" in res.stderr, res.stderr
    assert os.listdir(real) == []
    os.lchown(link, 0, 0)                  # root's own link is followed
    env.offload("export", "prometheus", "--textfile-dir", str(link))
    assert os.listdir(real) == ["offload.prom"]


def test_nfd_labels_ignore_virtual_interfaces_unless_asked(env, tmp_path):
    if env.kind != "veth":
        pytest.skip("needs a namespace whose only links are veths")
    feat = tmp_path / "features.d" / "offload"
    res = env.offload_json("export", "nfd", "--path", str(feat))
    # a CNI-like namespace (veths only) is not an XDP-native node
    assert feat.read_text() == "offload.xdp/best-mode=none\n"
    assert res["counted"] == [] and {i["interface"] for i in res["ignored"]} == {env.ifname, env.peer}
    assert os.listdir(feat.parent) == ["offload"]      # the dot-file it was written as is gone
    env.offload("export", "nfd", "--path", str(feat), "--include-virtual")
    labels = dict(line.split("=", 1) for line in feat.read_text().split())
    assert labels == {"offload.xdp/best-mode": "native", "offload.xdp/driver.veth": "true",
                      "offload.xdp/native": "true"}
    bad = env.offload("export", "nfd", "--path", str(tmp_path / ".hidden"), check=False)
    assert bad.returncode == 2 and "readers skip dot-files" in bad.stderr


def test_nfd_interval_rewrites_until_sigterm(env, tmp_path):
    feat = tmp_path / "offload"
    proc = subprocess.Popen([OFFLOAD, "export", "nfd", "--path", str(feat), "--interval", "1", "--json",
                             "--netns", env.netns], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not feat.exists() and time.time() < deadline:
            time.sleep(0.05)
        first = feat.stat().st_mtime_ns
        while feat.stat().st_mtime_ns == first and time.time() < deadline:
            time.sleep(0.05)
        assert feat.stat().st_mtime_ns != first, "not rewritten"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    rounds = [json.loads(line) for line in out.splitlines()]
    assert len(rounds) >= 2 and all(r["labels"]["offload.xdp/best-mode"] for r in rounds)


def test_generated_systemd_unit_verifies(tmp_path):
    analyze = need_tool("systemd-analyze")
    unit = tmp_path / "offload-watch.service"
    subprocess.run([OFFLOAD, "export", "systemd", "--path", str(unit), "--metrics-address", "127.0.0.1:9477",
                    "--textfile-dir", "/var/lib/prometheus/node-exporter"], check=True, capture_output=True)
    text = unit.read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", text, re.M).group(1).split()
    assert exec_start[:2] == [OFFLOAD, "watch"] and "--metrics-address" in exec_start
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
    # the check can fail: the old unit's path, which nothing installs
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace(OFFLOAD, "/opt/offload/.venv/bin/offload"))
    res = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True)
    assert res.returncode != 0 and "/opt/offload/.venv/bin/offload" in res.stderr


@pytest.mark.parametrize("extra", [[], ["--metrics-address", "[::1]:9477", "--textfile-dir", "/var/lib/node-exporter"]])
def test_generated_systemd_unit_is_hardened(tmp_path, extra):
    """`systemd-analyze security --offline=true` rates the unit at most 4.0; the unhardened unit of
    before (its [Service] without the sandbox) rates over 7, so the check can fail."""
    analyze = need_tool("systemd-analyze")
    unit = tmp_path / "offload-watch.service"
    subprocess.run([OFFLOAD, "export", "systemd", "--path", str(unit), *extra], check=True, capture_output=True)

    def exposure(path) -> float:
        res = subprocess.run([analyze, "security", "--offline=true", str(path)], capture_output=True, text=True)
        found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout + res.stderr)
        assert found, res.stdout + res.stderr
        return float(found.group(1))

    assert exposure(unit) <= 4.0
    text = unit.read_text()
    for setting in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                    "ProtectKernelModules=yes", "ProtectKernelLogs=yes", "ProtectKernelTunables=yes",
                    "ProtectControlGroups=yes", "LockPersonality=yes", "MemoryDenyWriteExecute=yes", "UMask=0077",
                    "CacheDirectory=offload", "StateDirectory=offload", "RuntimeDirectory=offload"):
        assert re.search(rf"^{re.escape(setting)}$", text, re.M), setting
    families = re.search(r"^RestrictAddressFamilies=(.*)$", text, re.M).group(1).split()
    assert families == ["AF_NETLINK", "AF_UNIX", "AF_INET", *(["AF_INET6"] if extra else [])]
    bare = tmp_path / "bare.service"
    bare.write_text(re.sub(r"^(AmbientCapabilities|CapabilityBoundingSet|NoNewPrivileges|Protect\w+|Private\w+|"
                           r"Restrict\w+|SystemCall\w+|MemoryDeny\w+|LockPersonality|UMask|DevicePolicy|"
                           r"KeyringMode|RemoveIPC)=.*\n", "", text, flags=re.M))
    assert exposure(bare) > 7.0


def test_labeller_manifest_validates():
    docs = valid_manifest(ROOT / "deploy/offload-nfd-labeller.yaml", 2)
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    cmd = ds["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[:3] == ["offload", "export", "nfd"] and "--interval" in cmd and "--include-virtual" not in cmd
    # it writes where the watch DaemonSet's selector reads from
    watch = [d for d in valid_manifest(ROOT / "deploy/offload-watch.yaml", 3) if d["kind"] == "DaemonSet"]
    assert watch[0]["spec"]["template"]["spec"]["nodeSelector"] == {"offload.xdp/native": "true"}


def test_watch_manifest_probes_resources_and_reload():
    """What the kubelet needs: probes on watch's own /healthz at the port it serves, requests and
    limits, and the ConfigMap mounted whole (a subPath mount never sees an edit, so no reload)."""
    docs = valid_manifest(ROOT / "deploy/offload-watch.yaml", 3)
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    port = int(c["command"][c["command"].index("--metrics-address") + 1].rsplit(":", 1)[1])
    assert [p["containerPort"] for p in c["ports"] if p["name"] == "metrics"] == [port]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}, probe
    interval = float(c["command"][c["command"].index("--interval") + 1])
    live = c["livenessProbe"]
    # the kubelet gives up only after watch's own staleness bound has passed
    assert live["periodSeconds"] * live["failureThreshold"] >= interval
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}, kind
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "policy"]
    assert "subPath" not in mount and c["command"][c["command"].index("-f") + 1].startswith(mount["mountPath"] + "/")
    assert "/run/netns" in (ROOT / "deploy/offload-watch.yaml").read_text()   # the comment on why it is not mounted
    assert not [v for v in pod["volumes"] if v.get("hostPath", {}).get("path") == "/run/netns"]


def test_labeller_feature_file_expires(tmp_path):
    """The labeller's command, run here: its file starts with NFD's expiry directive, its --expires-after
    ahead, so the labels vanish when the labeller does."""
    docs = valid_manifest(ROOT / "deploy/offload-nfd-labeller.yaml", 2)
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    cmd = ds["spec"]["template"]["spec"]["containers"][0]["command"]
    after = float(cmd[cmd.index("--expires-after") + 1])
    assert after >= 2 * float(cmd[cmd.index("--interval") + 1])
    path = tmp_path / "offload"
    args = [a for a in cmd[1:] if a not in ("--interval", cmd[cmd.index("--interval") + 1])]
    args[args.index("--path") + 1] = str(path)
    before = time.time()
    subprocess.run([OFFLOAD, *args], check=True, capture_output=True)
    first = path.read_text().splitlines()[0]
    m = re.fullmatch(r"# \+expiry-time=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)", first)
    assert m, first
    expires = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert before + after - 5 <= expires.timestamp() <= time.time() + after + 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_prometheus_scrapes_watch_and_sees_new_frames(env, tmp_path):
    """The issue's failure, end to end: Prometheus (the Debian package's server) scraping watch's
    endpoint sees 1,000 more frames as `offload stats` does, with the counter typed as such."""
    if env.kind != "veth":
        pytest.skip("needs a veth lab: exact counts need an idle receiver")
    server = need_tool("prometheus")
    proc, url = start_watch(env, tmp_path)
    web = f"127.0.0.1:{free_port()}"
    target = url.removeprefix("http://").removesuffix("/metrics")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: offload\n    static_configs: [{{targets: ['{target}']}}]\n")
    prom = subprocess.Popen([server, f"--config.file={tmp_path / 'prometheus.yml'}", f"--web.listen-address={web}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def query(q: str) -> float | None:
        try:
            doc = json.load(urllib.request.urlopen(f"http://{web}/api/v1/query?query={urllib.parse.quote(q)}",
                                                   timeout=10))
        except OSError:
            return None   # not up yet
        res = doc["data"]["result"]
        return float(res[0]["value"][1]) if res else None

    def settles_at(q: str, want: float) -> float | None:
        deadline, got = time.time() + 90, None
        while time.time() < deadline:
            got = query(q)
            if got == want:
                break
            time.sleep(0.5)
        return got

    q = f'offload_xdp_packets_total{{action="drop",device="{env.ifname}",netns="{env.netns}"}}'
    try:
        wait_attached(url)
        assert settles_at(q, env.offload_json("stats", env.ifname)["packets"]["drop"]) is not None
        for _ in range(2):
            send_frames(env, env.peer, 1000)
            want = env.offload_json("stats", env.ifname)["packets"]["drop"]
            assert settles_at(q, want) == want      # Prometheus follows, round after round
        # Prometheus asks for OpenMetrics, where the family is named without `_total`
        meta = json.load(urllib.request.urlopen(f"http://{web}/api/v1/metadata", timeout=10))["data"]
        (fam,) = [meta[k] for k in ("offload_xdp_packets", "offload_xdp_packets_total") if k in meta]
        assert fam[0]["type"] == "counter"
        assert query(f'offload_xdp_program_info{{device="{env.ifname}",owner="offload"}}') == 1
    finally:
        prom.terminate()
        prom.communicate(timeout=30)
        rc, log = stop(proc)
    assert rc == 0, log


def test_textfile_has_build_info_and_no_process_metrics(tmp_path):
    """offload_build_info{version} in both outputs; the client's process_* metrics only on /metrics
    (watch's, test_unit_sandbox.py): in node-exporter's textfile they would be a gone process's, under
    the names node-exporter itself exports."""
    prom = tmp_path / "offload.prom"
    subprocess.run([OFFLOAD, "export", "prometheus", "--path", str(prom)], check=True, capture_output=True)
    version = subprocess.run([OFFLOAD, "--version"], capture_output=True, text=True).stdout.split()[-1]
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(prom.read_text()) for s in fam.samples}
    assert labels_of(samples, "offload_build_info") == [{"version": version}]
    assert not [n for n, _ in samples if n.startswith(("process_", "python_"))]
