"""Every --json document against its schema, errors as JSON, RFC 3339 time stamps, and `status`
against bpftool and xdp-loader (the kernel's and libxdp's own view)."""

import json
import os
import platform
import re
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from lib.cli import OFFLOAD, offload
from lib.helpers import clang_object, need_tool
from lib.kernel import kernel_xdp
from lib.schemas import validate
from test_demo import ANSI, run_in_terminal

pytestmark = pytest.mark.root
LIBXDP_OBJS = Path(f"/usr/lib/{platform.machine()}-linux-gnu/bpf")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def bpftool_prog(prog_id: int) -> dict:
    out = subprocess.run([need_tool("bpftool"), "prog", "show", "id", str(prog_id), "-j"], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def test_every_command_s_json_validates(env, tmp_path, xdp_pass_obj):
    a, b = env.ifname, env.peer
    validate(env.offload_json("probe"), "probe")
    validate(env.offload_json("attach", a, "filter", "--param", "prefixes=10.0.0.0/8"), "attach")
    for args in (("add", a, "192.168.0.0/16"), ("list", a), ("del", a, "192.168.0.0/16")):
        validate(env.offload_json("filter", *args), "filter")
    stats = validate(env.offload_json("stats", a, "--interval", "0.1"), "stats")
    assert stats["counters"] == "offload" and STAMP.match(stats["time"])
    validate(env.offload_json("attach", b, str(xdp_pass_obj), "--mode", "generic"), "attach")
    assert validate(env.offload_json("stats", b), "stats")["counters"] == "prog_info"
    st = validate(env.offload_json("status"), "status")
    assert {r["interface"] for r in st["attachments"]} == {a, b}
    assert all(STAMP.match(r["attached_at"]) and STAMP.match(r["loaded_at"]) for r in st["attachments"])
    validate(env.offload_json("status", "-A", netns=None), "status")
    validate(env.offload_json("gc", "--dry-run", netns=None), "gc")
    validate(env.offload_json("detach", b), "detach")
    pol = tmp_path / "policy.yaml"
    pol.write_text(f"rules:\n  - name: r\n    match: {{interfaces: [{a}]}}\n    program: count_drop\n")
    validate(env.offload_json("plan", "-f", str(pol)), "plan")
    journal = tmp_path / "journal.jsonl"
    assert validate(env.offload_json("apply", "-f", str(pol), "--journal", str(journal)), "apply")["outcome"] == "ok"
    assert all(STAMP.match(json.loads(line)["time"]) for line in journal.read_text().splitlines())
    validate(env.offload_json("export", "nfd", "--path", str(tmp_path / "nfd")), "export-nfd")
    validate(env.offload_json("export", "prometheus", "--path", str(tmp_path / "m.prom")), "export-prometheus")
    assert "ExecStart=" in validate(env.offload_json("export", "systemd", netns=None), "export-systemd")["unit"]
    validate(env.offload_json("bench", "prog", "count_drop", "--repeat", "1", netns=None), "bench-prog")
    env.offload("detach", a)
    validate(env.offload_json("bench", "--tx", b, "--rx", a, "--modes", "native", "--duration", "0.3",
                              "--warmup", "0", "--repeat", "1"), "bench")


def test_lab_documents(env):
    name = "j" + os.urandom(3).hex()
    env.defer(offload, "lab", "down", name, check=False)
    made = validate(json.loads(offload("lab", "up", "--name", name, "--json").stdout), "lab-up")
    assert made["name"] == name
    labs = validate(json.loads(offload("lab", "list", "--json").stdout), "lab-list")["labs"]
    assert name in {x["name"] for x in labs}
    down = validate(json.loads(offload("lab", "down", name, "--json").stdout), "lab-down")
    assert down["labs"] == [{"name": name, "removed": True}]


@pytest.mark.parametrize("case", ["bad device", "bad program file", "not root", "policy error", "not attached"])
def test_errors_are_json_on_stdout_with_the_same_exit_code(env, tmp_path, case):
    junk = tmp_path / "junk.o"
    junk.write_bytes(bytes(range(256)) * 4)
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: r\n    match: {interfaces: [x]}\n    program: count_drop\n    mode: {min: warp}\n")
    args, code, needle, kw = {
        "bad device": (("attach", "nosuchdev0", "count_drop"), 2, "nosuchdev0", {}),
        "bad program file": (("attach", env.ifname, str(junk)), 2, "junk.o", {}),
        "not root": (("attach", "lo", "count_drop"), 3, "CAP_NET_ADMIN", {"netns": None, "user": "65534"}),
        "policy error": (("plan", "-f", str(bad)), 2, "bad.yaml", {}),
        "not attached": (("detach", env.ifname), 10, env.ifname, {}),
    }[case]
    plain = env.offload(*args, check=False, **kw)
    res = env.offload(*args, "--json", check=False, **kw)
    assert res.returncode == plain.returncode == code
    doc = validate(json.loads(res.stdout), "error")["error"]
    assert doc["exit_code"] == code and needle in doc["message"] + (doc["hint"] or "")
    assert doc["message"] in res.stderr.replace("\n", " ") or needle in res.stderr   # and said to a person
    assert kernel_xdp(env.ifname, env.netns) == {}


def test_status_says_what_bpftool_says(env, xdp_pass_obj):
    """Ours (count_drop, native) and a foreign program (iproute2, generic on the peer): tag, jited,
    sizes, load time, map and BTF ids as `bpftool prog show` reports them."""
    env.offload("attach", env.ifname, "count_drop")
    env.cmd("ip", "link", "set", "dev", env.peer, "xdpgeneric", "obj", str(xdp_pass_obj), "sec", "xdp")
    rows = {r["interface"]: r for r in validate(env.offload_json("status"), "status")["attachments"]}
    assert rows[env.ifname]["ours"] is True and rows[env.peer]["ours"] is False
    for row in rows.values():
        bt = bpftool_prog(row["prog_id"])
        assert (row["name"], row["tag"], row["jited"], row["xlated_size"]) == \
            (bt["name"], bt["tag"], bt["jited"], bt["bytes_xlated"])
        assert row["jited_size"] == bt.get("bytes_jited", 0)
        assert sorted(row["map_ids"]) == sorted(bt.get("map_ids", [])) and row["btf_id"] == bt.get("btf_id")
        assert abs(epoch(row["loaded_at"]) - bt["loaded_at"]) <= 1.5   # bpftool: whole seconds
        assert row["dispatcher"] is None
    assert rows[env.ifname]["map_ids"] and rows[env.peer]["map_ids"] == []
    argv = [OFFLOAD, "status", "--netns", env.netns]
    for cols in (80, 200):   # the new columns show where there is room, and never widen past the terminal
        _, code, raw = run_in_terminal(argv, cols=cols)
        lines = [ln.rstrip() for ln in re.split(r"\r\n|\r|\n", ANSI.sub("", raw)) if ln.strip()]
        assert code == 0 and max(map(len, lines)) <= cols, raw
        (mine,) = [ln.split() for ln in lines if ln.startswith(env.ifname)]
        assert mine[:3] == [env.ifname, "native", str(rows[env.ifname]["prog_id"])]
        if cols == 200:
            r = rows[env.ifname]
            assert mine[-4:] == [r["tag"], f"{r['jited_size']}B", ",".join(map(str, r["map_ids"])), str(r["btf_id"])]


@pytest.fixture
def libxdp_bpffs(env, tmp_path) -> Path:
    """A bpffs instance of the test's own for libxdp's pins (LIBXDP_BPFFS), so nothing it pins is
    seen by, or collides with, anyone else."""
    root = tmp_path / "bpffs"
    root.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(root)], check=True)
    env.defer(subprocess.run, ["umount", "-l", str(root)], check=False)
    return root


def test_dispatcher_config_read_from_the_kernel(env, tmp_path, libxdp_bpffs):
    """A program named xdp_dispatcher with a real .rodata config; its pin directory holds a
    program where a link belongs, and nothing for slot 1: both say so and are not listed as ids."""
    obj = clang_object(Path(__file__).with_name("fake_dispatcher.c"), tmp_path / "fake_dispatcher.o")
    disp_id = env.offload_json("attach", env.ifname, str(obj), "--mode", "generic")["prog_id"]
    other = env.offload_json("attach", env.peer, "count_pass", "--mode", "generic")["prog_id"]
    ifindex = json.loads(env.cmd("ip", "-j", "link", "show", env.ifname).stdout)[0]["ifindex"]
    pins = libxdp_bpffs / "xdp" / f"dispatch-{ifindex}-{disp_id}"
    pins.mkdir(parents=True, mode=0o700)
    subprocess.run(["bpftool", "prog", "pin", "id", str(other), str(pins / "prog0-link")], check=True)
    extra = {"LIBXDP_BPFFS": str(libxdp_bpffs)}
    before = kernel_xdp(env.ifname, env.netns)
    row = next(r for r in validate(env.offload_json("status", extra_env=extra), "status")["attachments"]
               if r["interface"] == env.ifname)
    d = row["dispatcher"]
    assert (d["version"], d["frags"], d["pins"]) == (2, False, str(pins))
    assert [(p["slot"], p["priority"], p["chain_call_actions"], p["prog_id"]) for p in d["programs"]] == \
        [(0, 10, ["pass"], None), (1, 20, ["drop", "pass"], None)]
    assert any("prog0-link" in w and "not a BPF link" in w for w in d["warnings"])
    assert any("prog1-link" in w for w in d["warnings"])
    assert kernel_xdp(env.ifname, env.netns) == before                         # read-only
    pins.chmod(0o777)                                                           # writable by anyone: not trusted
    d = next(r for r in env.offload_json("status", extra_env=extra)["attachments"]
             if r["interface"] == env.ifname)["dispatcher"]
    assert any("owned by uid 0 and writable by no one else" in w for w in d["warnings"]) and all(p["prog_id"] is None for p in d["programs"])


def _xdp_loader_status(env, ifname: str, extra: dict) -> list[list[str]]:
    out = subprocess.run(["nsenter", f"--net=/run/netns/{env.netns}", "xdp-loader", "status", ifname],
                         capture_output=True, text=True, check=True, env={**os.environ, **extra}).stdout
    return [line.split() for line in out.splitlines() if line.split()[:1] in ([ifname], ["=>"])]


def test_libxdp_dispatcher_listed_like_xdp_loader_does(env, libxdp_bpffs):
    """Two programs put on one interface by xdp-loader (libxdp's multi-program dispatcher): offload
    status lists them with priority and chain-call actions, as `xdp-loader status` does."""
    need_tool("xdp-loader")
    extra = {"LIBXDP_BPFFS": str(libxdp_bpffs)}
    load = ["nsenter", f"--net=/run/netns/{env.netns}", "xdp-loader", "load", "-v", "-m", "skb"]
    env.defer(subprocess.run, ["nsenter", f"--net=/run/netns/{env.netns}", "xdp-loader", "unload", "--all",
                               env.ifname], env={**os.environ, **extra}, check=False)
    first = subprocess.run([*load, "-P", "10", env.ifname, str(LIBXDP_OBJS / "xdpfilt_alw_all.o")],
                           capture_output=True, text=True, env={**os.environ, **extra})
    lines = _xdp_loader_status(env, env.ifname, extra)
    if first.returncode != 0 or not lines or "xdp_dispatcher" not in lines[0]:
        why = next((ln.strip() for ln in first.stderr.splitlines() if "dispatcher" in ln and "fail" in ln),
                   first.stderr.strip()[-200:])
        pytest.skip(f"libxdp cannot build its dispatcher on this kernel (it needs freplace/EXT programs): {why}")
    subprocess.run([*load, "-P", "20", "-A", "XDP_PASS,XDP_DROP", env.ifname, str(LIBXDP_OBJS / "xdpfilt_dny_all.o")],
                   check=True, env={**os.environ, **extra})
    lines = _xdp_loader_status(env, env.ifname, extra)
    theirs = [(int(ln[1]), ln[2][:15], int(ln[3]), ln[4],
               sorted(a.removeprefix("XDP_").lower() for a in ",".join(ln[5:]).split(",") if a))
              for ln in lines if ln[0] == "=>"]
    row = next(r for r in validate(env.offload_json("status", extra_env=extra), "status")["attachments"]
               if r["interface"] == env.ifname)
    assert row["name"] == "xdp_dispatcher" and row["prog_id"] == int(lines[0][4 if lines[0][3] == "skb" else 3])
    ours = [(p["priority"], p["name"], p["prog_id"], p["tag"], sorted(p["chain_call_actions"]))
            for p in row["dispatcher"]["programs"]]
    assert ours == theirs and len(ours) == 2 and not row["dispatcher"]["warnings"]
