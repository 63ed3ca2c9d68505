"""A wheel built from the repo works on its own: installed into a fresh venv outside the checkout,
it lists the library, validates the profiles and attaches a library program in a lab, with
neither the checkout nor a compiler involved."""

import json
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
