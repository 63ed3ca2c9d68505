"""offload's view of the VM lane's kernel: the facts it reads there, and the choices it makes from
them (this kernel has pktgen and netdevsim, and no netdev netlink family)."""

import json
import platform
import subprocess

import pytest
from lib.cli import OFFLOAD

from offload.bench.harness import choose_generator

pytestmark = pytest.mark.vm


def test_offload_reads_the_guest_kernel_and_picks_pktgen():
    # the installed command itself (the lane's other calls are forked from pytest: lib/cli.py)
    res = subprocess.run([OFFLOAD, "probe", "lo", "--json"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["host"]["kernel"] == platform.release() and platform.release().startswith("6.1.")
    assert report["host"]["netdev_family"] is False         # the family came in Linux 6.3
    (lo,) = report["interfaces"]
    assert lo["xdp"]["features"] is None and lo["recommended"]["mode"] == "generic"
    assert choose_generator("auto") == "pktgen"             # /proc/net/pktgen is there
