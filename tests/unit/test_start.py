"""Instant start: `import offload.cli` and every subcommand's `--help` import nothing heavy, and
pyroute2's package __init__ (ndb, ipdb, conntrack, asyncio) runs only for code that asks for it.
Behaviour, not timing: each check reads a fresh interpreter's sys.modules."""

import json
import subprocess
import sys

import click
import pytest

from offload import cli

# What a start must not pay for: pyroute2's package-level families and its asyncio core, the
# human-output, schema and plotting libraries, bcc, YAML, and the sysfs and address libraries.
HEAVY = ("pyroute2.ndb", "pyroute2.ipdb", "pyroute2.conntrack", "pyroute2.iproute", "pyroute2.netlink",
         "asyncio", "rich", "jsonschema", "matplotlib", "bcc", "yaml", "pyudev", "netaddr", "numpy")

_RUN = """
import json, sys
{before}
try:
    from offload.cli import main
    main(sys.argv[1:], prog_name="offload", standalone_mode=False)
except SystemExit:
    pass
print("\\n" + json.dumps(sorted(sys.modules)))
"""


def modules_after(*argv: str, before: str = "") -> set[str]:
    res = subprocess.run([sys.executable, "-c", _RUN.format(before=before), *argv], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return set(json.loads(res.stdout.strip().splitlines()[-1]))


def heavy_in(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if any(m == h or m.startswith(h + ".") for h in HEAVY))


def commands(group: click.Group = cli.main, prefix: tuple = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        out.append(prefix + (name,))
        if isinstance(cmd, click.Group):
            out += commands(cmd, prefix + (name,))
    return out


def test_import_cli_is_light():
    res = subprocess.run([sys.executable, "-c", "import json, sys, offload.cli; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, timeout=120, check=True)
    mods = set(json.loads(res.stdout))
    assert heavy_in(mods) == []
    # the package is registered, its __init__ not run: no family of it is loaded
    assert not [m for m in mods if m.startswith("pyroute2.")]


def test_version_is_light():
    assert heavy_in(modules_after("--version")) == []


def test_every_subcommand_lists_itself():
    # the parametrisation below must see every command, nested ones included
    names = {c[-1] for c in commands()}
    assert {"probe", "attach", "bench", "apply", "watch", "lab", "up", "export"} <= names


@pytest.mark.parametrize("argv", commands(), ids=" ".join)
def test_help_of_each_subcommand_is_light(argv):
    mods = modules_after(*argv, "--help")
    assert heavy_in(mods) == [], f"offload {' '.join(argv)} --help imported {heavy_in(mods)}"


def test_pyroute2_package_still_works_for_whoever_asks():
    # code outside offload that imports pyroute2's top-level names still gets them, and its
    # submodules imported before stay the same objects
    code = ("import offload, sys; import pyroute2.netlink.exceptions as e; assert 'pyroute2.ndb' not in sys.modules; "
            "from pyroute2 import IPRoute, NetlinkError, netns; import pyroute2; "
            "assert NetlinkError is e.NetlinkError and 'pyroute2.ipdb' in sys.modules and pyroute2.__version__; "
            "print(IPRoute.__module__)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "pyroute2.iproute.linux"


def test_unknown_pyroute2_name_is_an_attribute_error():
    code = "import offload, pyroute2\ntry:\n    pyroute2.NoSuchThing\nexcept AttributeError:\n    print('ok')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "ok", res.stderr


def test_probe_with_warm_profile_cache_imports_no_pyroute2_yaml_or_schema(tmp_path):
    """The probe (read-only, this namespace) goes through offload's own netlink decoding; once its
    drivers' profiles are validated and cached, neither YAML nor jsonschema is imported."""
    before = f"import os; os.environ['OFFLOAD_CACHE_DIR'] = {str(tmp_path)!r}"
    cold = modules_after("probe", "--json", before=before)
    assert "jsonschema" in cold  # the first run validates (the cache is empty)
    warm = modules_after("probe", "--json", before=before)
    assert heavy_in(warm - {m for m in warm if m.split(".")[0] == "pyudev"}) == []  # PCI ids of a real NIC: pyudev
    assert not [m for m in warm if m.startswith("pyroute2.")]
