import os
import platform

import pytest

pytestmark = pytest.mark.vm


def test_guest_kernel_has_netdevsim_and_pktgen():
    assert platform.release().startswith("6.1.")
    assert os.path.exists("/sys/bus/netdevsim/new_device")
    assert os.path.exists("/proc/net/pktgen/pgctrl")
