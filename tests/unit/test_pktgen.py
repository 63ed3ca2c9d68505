"""pktgen: result parsing on real /proc/net/pktgen texts, and the commands a config writes."""

import pytest
from lib.helpers import FIXTURES

from offload.bench.generators import pktgen
from offload.errors import UsageError

REAL = (FIXTURES / "pktgen" / "linux-6.1-veth-ok.txt").read_text()  # recorded in the VM lane


def test_parse_a_real_result():
    r = pktgen.parse_result("ta77e5c-a0@0", REAL)
    assert r.ok and r.device == "ta77e5c-a0@0"
    assert (r.usec, r.packets, r.pkt_size, r.pps, r.mbps, r.errors) == (26640, 500, 60, 18768, 9, 0)


def test_running_device_reports_packets_so_far():
    # the same device file while running: no Result line yet, the Current section counts
    r = pktgen.parse_result("d@0", REAL.split("Result:")[0])
    assert not r.ok and r.packets == 500 and r.errors == 0


def test_config_commands():
    cfg = pktgen.PktgenConfig(device="eth9", threads=[0, 1], pkt_size=64, count=1000, dst_mac="02:00:00:00:00:02",
                              src_mac="02:00:00:00:00:01", dst_min="198.18.0.2", dst_max="198.18.0.9",
                              udp_src=(1000, 2000), rate_pps=50000)
    cmds = cfg.commands("eth9@0")
    assert "count 1000" in cmds and "pkt_size 64" in cmds and "dst_max 198.18.0.9" in cmds
    assert "udp_src_min 1000" in cmds and "udp_src_max 2000" in cmds and "ratep 50000" in cmds
    assert "src_mac 02:00:00:00:00:01" in cmds and "xmit_mode start_xmit" in cmds


@pytest.mark.parametrize("kw", [{"xmit_mode": "warp"}, {"dst_min": "not-an-ip"}])
def test_bad_config_is_refused_before_writing(kw):
    cfg = pktgen.PktgenConfig(device="eth9", threads=[0], **kw)
    with pytest.raises(UsageError):
        cfg.commands("eth9@0")
