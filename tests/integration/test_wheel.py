"""A wheel built from the repo works on its own: installed into a fresh venv outside the checkout,
it lists the library, validates the profiles and attaches a library program in a lab, with
neither the checkout nor a compiler involved."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lib.helpers import ROOT
from lib.kernel import kernel_xdp

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """offload's wheel in a venv of its own (its dependencies from the package index)."""
    where = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(where / "dist"), str(ROOT)],
                   check=True, timeout=600, cwd=where)
    (whl,) = (where / "dist").glob("offload-*.whl")
    venv = where / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", str(whl)], check=True, timeout=900,
                   cwd=where)
    return venv


def run(venv: Path, *args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {"PATH": f"{venv}/bin:/usr/sbin:/usr/bin:/sbin:/bin", "OFFLOAD_CACHE_DIR": str(cache), "HOME": str(cache)}
    return subprocess.run([str(venv / "bin/offload"), *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=cache)


def test_wheel_carries_library_and_profiles(installed, tmp_path):
    res = run(installed, "programs", "--json", cache=tmp_path)
    assert res.returncode == 0, res.stderr
    names = [p["name"] for p in json.loads(res.stdout)["programs"]]
    assert names == ["count_drop", "count_pass", "filter", "redirect", "reflect"]
    res = run(installed, "profiles", "--check", "--json", cache=tmp_path)
    assert res.returncode == 0, res.stderr
    profiles = json.loads(res.stdout)["profiles"]
    assert len(profiles) >= 20 and all("/_data/drivers_profiles/" in p["file"] for p in profiles)
    assert not any(str(ROOT) in p["file"] for p in profiles)
    shipped = subprocess.run([str(installed / "bin/python"), "-c", "from importlib import resources; "
                              "print(*sorted(p.name for p in (resources.files('offload') / 'schemas').iterdir()))"],
                             capture_output=True, text=True, check=True, cwd=tmp_path).stdout.split()
    assert shipped == sorted(p.name for p in (ROOT / "offload" / "schemas").glob("*.json"))
    # the wheel's schemas are complete as built (setup.py generates the mode lists): a plain
    # jsonschema, nothing of offload's, accepts a policy with modes in it
    check = ("import json, sys, jsonschema; from importlib import resources; "
             "s = json.loads((resources.files('offload') / 'schemas' / 'policy.schema.json').read_text()); "
             "jsonschema.validate({'rules': [{'name': 'a', 'match': {'interfaces': ['x']}, 'program': 'pass', "
             "'mode': {'prefer': 'native', 'min': 'generic'}}]}, s); print('ok')")
    assert subprocess.run([str(installed / "bin/python"), "-c", check], capture_output=True, text=True,
                          cwd=tmp_path).stdout == "ok\n"
    res = run(installed, "attach", "--no-such-option", "--json", cache=tmp_path)   # errors load their schema's kind
    assert res.returncode == 2 and json.loads(res.stdout)["error"]["exit_code"] == 2


def test_wheel_attaches_without_compiling(installed, env, tmp_path):
    res = run(installed, "attach", env.ifname, "count_drop", "--netns", env.netns, "--json", cache=tmp_path)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert kernel_xdp(env.ifname, env.netns) == {"native": out["prog_id"]}
    assert not list(tmp_path.glob("*.o")), "the wheel compiled a library program instead of using its object"
    res = run(installed, "detach", env.ifname, "--netns", env.netns, cache=tmp_path)
    assert res.returncode == 0 and kernel_xdp(env.ifname, env.netns) == {}


def test_wheel_without_plot_extra_leaves_matplotlib_out_and_says_how_to_plot(installed, env, tmp_path):
    """The plain install has no matplotlib; it probes and benches, and --plot names the extra."""
    has = subprocess.run([str(installed / "bin/python"), "-c", "import importlib.util as u; "
                          "print(*(bool(u.find_spec(m)) for m in ('matplotlib', 'numpy', 'PIL')))"],
                         capture_output=True, text=True, check=True, cwd=tmp_path).stdout.split()
    assert has == ["False", "False", "False"]
    res = run(installed, "probe", "--netns", env.netns, "--json", cache=tmp_path)
    assert res.returncode == 0 and env.ifname in [i["name"] for i in json.loads(res.stdout)["interfaces"]], res.stderr
    res = run(installed, "bench", "--lab", "--duration", "0.3", "--warmup", "0.1", "--repeat", "1",
              "--modes", "generic", "--plot", str(tmp_path / "b.png"), cache=tmp_path)
    assert res.returncode == 4 and "pip install 'offload[plot]'" in res.stderr, res.stderr
    assert not (tmp_path / "b.png").exists()
    res = run(installed, "bench", "--lab", "--duration", "0.3", "--warmup", "0.1", "--repeat", "1",
              "--modes", "generic", "--json", cache=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["results"][0]["rx_pps"] > 0


def test_wheel_without_plot_extra_demo_tells_the_story_without_the_chart(installed, tmp_path):
    res = run(installed, "demo", "--json", cache=tmp_path)
    assert res.returncode == 0, res.stderr
    story = json.loads(res.stdout)
    assert story["plot"] is None and "offload[plot]" in story["plot_skipped"] and story["bench"]["results"]
    assert not list(tmp_path.glob("*.png"))
    res = run(installed, "demo", "--plot", str(tmp_path / "d.png"), cache=tmp_path)
    assert res.returncode == 4 and "offload[plot]" in res.stderr, res.stderr


def test_wheel_with_plot_extra_plots(installed, tmp_path):
    (whl,) = installed.parent.joinpath("dist").glob("offload-*.whl")
    subprocess.run([str(installed / "bin/python"), "-m", "pip", "install", "-q", f"{whl}[plot]"], check=True,
                   timeout=900, cwd=tmp_path)
    res = run(installed, "bench", "--lab", "--duration", "0.3", "--warmup", "0.1", "--repeat", "1",
              "--modes", "generic", "--plot", str(tmp_path / "b.png"), cache=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_libbpf_is_exit_4_naming_the_package(installed, env, tmp_path):
    """libbpf.so.1 hidden in a mount namespace of the command's own (a /dev/null bound over it)."""
    import ctypes.util

    lib = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    paths = sorted({line.split(" => ")[1] for line in lib.splitlines() if "libbpf.so.1 " in line})
    assert paths and ctypes.util.find_library("bpf")
    hide = "; ".join(f"mount --bind /dev/null {os.path.realpath(p)}" for p in paths)
    res = subprocess.run(["unshare", "-m", "sh", "-c", f"{hide}; exec \"$0\" \"$@\"", str(installed / "bin/offload"),
                          "attach", env.ifname, "count_drop", "--netns", env.netns, "--json"],
                         capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "OFFLOAD_CACHE_DIR": str(tmp_path)})
    assert res.returncode == 4, res.stdout + res.stderr
    err = json.loads(res.stdout)["error"]
    assert "libbpf.so.1" in err["message"] and "apt-get install libbpf1" in err["hint"]
    assert kernel_xdp(env.ifname, env.netns) == {}
