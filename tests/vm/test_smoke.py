"""offload's view of the VM lane's kernel: the facts it reads there, and the choices it makes from
them (this kernel has pktgen and netdevsim, and no netdev netlink family)."""

import platform

import pytest
from lib.cli import offload_json

from offload.bench.harness import choose_generator

pytestmark = pytest.mark.vm


def test_offload_reads_the_guest_kernel_and_picks_pktgen():
    report = offload_json("probe", "lo")
    assert report["host"]["kernel"] == platform.release() and platform.release().startswith("6.1.")
    assert report["host"]["netdev_family"] is False         # the family came in Linux 6.3
    (lo,) = report["interfaces"]
    assert lo["xdp"]["features"] is None and lo["recommended"]["mode"] == "generic"
    assert choose_generator("auto") == "pktgen"             # /proc/net/pktgen is there
