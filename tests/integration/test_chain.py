"""`offload attach --priority` (libxdp's multi-program dispatcher) on a kernel that refuses the
dispatcher's freplace programs, as this development machine's does (BPF_PROG_TYPE_EXT: EPERM): the
reason is shown, nothing is left attached or pinned, and the lone-program fallback happens only
with --allow-single. The chain itself runs in the VM lane (tests/vm/test_chain.py), whose kernel
has the JIT freplace needs. Checked against `ip -j link` and the bpffs, not offload's view."""

import json
import os

import pytest
from lib.helpers import PIN_ROOT
from lib.helpers import RUN_ROOT as _RUN
from lib.kernel import kernel_xdp
from lib.schemas import validate

from offload.load import chain, dispatcher

pytestmark = pytest.mark.root


@pytest.fixture
def refused() -> str:
    why = chain.freplace_refusal()
    if why is None:
        pytest.skip("this kernel runs freplace programs: libxdp builds its dispatcher here (tests/vm/test_chain.py)")
    return why


def ifindex(env) -> int:
    return json.loads(env.cmd("ip", "-j", "link", "show", env.ifname).stdout)[0]["ifindex"]


def nothing_left(env) -> None:
    assert kernel_xdp(env.ifname, env.netns) == {}
    assert not (PIN_ROOT / env.netns).exists(), "offload's pins left behind"
    assert not (_RUN / "attachments" / env.netns).exists(), "offload's record left behind"
    xdp_dir = f"{dispatcher.bpffs_root()}/xdp"
    prefix = f"dispatch-{ifindex(env)}-"
    assert not os.path.isdir(xdp_dir) or not [d for d in os.listdir(xdp_dir) if d.startswith(prefix)]


def test_refused_with_the_kernel_s_reason_and_nothing_half_attached(env, refused):
    res = env.offload("attach", env.ifname, "count_pass", "--priority", "20", check=False)
    assert res.returncode == 4, res.stderr                                 # ENVIRONMENT
    assert "BPF_PROG_TYPE_EXT" in res.stderr and refused in res.stderr and "nothing was attached" in res.stderr
    assert "--allow-single" in res.stderr and "Traceback" not in res.stderr
    nothing_left(env)
    doc = validate(json.loads(env.offload("attach", env.ifname, "count_pass", "--priority", "20", "--json",
                                          check=False).stdout), "error")
    assert doc["error"]["exit_code"] == 4 and refused in doc["error"]["message"]
    nothing_left(env)


def test_allow_single_attaches_it_alone_and_says_why(env, refused):
    res = env.offload_json("attach", env.ifname, "count_pass", "--priority", "20", "--allow-single",
                           "--mode", "generic")
    assert res["chain"] is None and res["mode"] == "generic"
    assert any("--allow-single" in w and refused in w for w in res["warnings"])
    assert kernel_xdp(env.ifname, env.netns) == {"generic": res["prog_id"]}
    (row,) = [r for r in env.offload_json("status")["attachments"] if r["interface"] == env.ifname]
    assert row["ours"] and row["prog_id"] == res["prog_id"] and row["dispatcher"] is None
    env.offload_json("detach", env.ifname)
    nothing_left(env)


@pytest.mark.parametrize("args, says", [
    (["--priority", "20", "--mode", "hw"], "a chain is never offloaded"),
    (["--priority", "20", "--min-mode", "hw"], "a chain is never offloaded"),
    (["--chain", "pass"], "go with --priority"),
    (["--allow-single"], "go with --priority"),
    (["--priority", "20", "--chain", "pass,teleport"], "unknown action 'teleport'"),
    (["--priority", "-1"], "--priority"),
])
def test_bad_chain_input_is_exit_2(env, args, says):
    res = env.offload("attach", env.ifname, "count_pass", *args, check=False)
    assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr, res.stderr
    nothing_left(env)


def test_libxdp_adapter_reads_what_the_kernel_has(env):
    """kernel.libxdp on this host: a lone program is libxdp's `legacy` case, in its mode, with the
    kernel's id; libxdp's own words come back with an error (its log, captured, not printed)."""
    import socket

    from offload.kernel import libxdp
    from offload.kernel import netns as netns_mod

    res = env.offload_json("attach", env.ifname, "count_pass", "--mode", "generic")
    with netns_mod.inside(env.netns):
        seen = libxdp.chain(socket.if_nametoindex(env.ifname))
    assert (seen.mode, seen.main_prog_id, seen.legacy, seen.members) == ("generic", res["prog_id"], True, ())
    assert kernel_xdp(env.ifname, env.netns) == {"generic": res["prog_id"]}
    with pytest.raises(libxdp.LibxdpError) as e:
        libxdp.Program.from_id(2**32 - 1)
    assert e.value.errno == 2 and any("program fd" in line for line in e.value.log)
    env.offload_json("detach", env.ifname)
    nothing_left(env)
