"""The hot paths import only what they use: `offload attach` and `detach` of a library program,
and the probe of a lab, touch no pyroute2 (offload's own netlink decoding, kernel/nlraw), and with
the profile cache warm no YAML or jsonschema; --json needs no rich. Checked on a real veth lab,
with iproute2 as ground truth for what was attached."""

import json
import subprocess
import sys

import pytest
from lib.env import NetEnv

pytestmark = pytest.mark.root

_RUN = """
import json, sys
from offload.cli import main
try:
    main(sys.argv[1:], prog_name="offload", standalone_mode=False)
except SystemExit:
    pass
print("\\n" + json.dumps(sorted(sys.modules)))
"""
HEAVY = ("pyroute2", "asyncio", "rich", "jsonschema", "yaml", "matplotlib", "bcc", "netaddr")


def run(*argv: str, cache) -> tuple[str, set[str]]:
    res = subprocess.run([sys.executable, "-c", _RUN, *argv], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "OFFLOAD_CACHE_DIR": str(cache)})
    assert res.returncode == 0, res.stderr
    *out, mods = res.stdout.rstrip("\n").split("\n")
    return "\n".join(out), set(json.loads(mods))


def heavy(mods: set[str]) -> list[str]:
    # "pyroute2" alone is the package registered by offload/__init__.py without its __init__ run
    return sorted(m for m in mods if m.split(".")[0] in HEAVY and m != "pyroute2")


def xdp_prog(env: NetEnv, dev: str) -> int | None:
    (link,) = env.json_cmd("ip", "-d", "-j", "link", "show", "dev", dev)
    return (link.get("xdp") or {}).get("prog", {}).get("id")


def test_attach_and_detach_import_nothing_heavy(env, tmp_path):
    run("probe", "--json", "--netns", env.netns, cache=tmp_path)   # warms the profile cache
    out, mods = run("attach", env.ifname, "count_drop", "--mode", "native", "--json", "--netns", env.netns,
                    cache=tmp_path)
    result = json.loads(out)
    assert result["mode"] == "native" and xdp_prog(env, env.ifname) == result["prog_id"]
    assert heavy(mods) == []
    out, mods = run("detach", env.ifname, "--json", "--netns", env.netns, cache=tmp_path)
    assert xdp_prog(env, env.ifname) is None
    assert heavy(mods) == []


def test_probe_of_a_lab_imports_nothing_heavy(env, tmp_path):
    run("probe", "--json", "--netns", env.netns, cache=tmp_path)
    out, mods = run("probe", "--json", "--netns", env.netns, cache=tmp_path)
    names = {i["name"] for i in json.loads(out)["interfaces"]}
    assert {env.ifname, env.peer} <= names
    assert heavy(mods) == []


def test_attaching_bcc_c_imports_no_bcc_here(env, tmp_path):
    """bcc compiles and loads in a child process: offload's own never imports it."""
    src = tmp_path / "pass.c"
    src.write_text("int xdp_prog(struct xdp_md *ctx) { return XDP_PASS; }\n")
    run("probe", "--json", "--netns", env.netns, cache=tmp_path)
    out, mods = run("attach", env.ifname, str(src), "--mode", "native", "--json", "--netns", env.netns,
                    cache=tmp_path)
    result = json.loads(out)
    assert result["mode"] == "native" and xdp_prog(env, env.ifname) == result["prog_id"]
    assert heavy(mods) == []
    run("detach", env.ifname, "--json", "--netns", env.netns, cache=tmp_path)
    assert xdp_prog(env, env.ifname) is None
