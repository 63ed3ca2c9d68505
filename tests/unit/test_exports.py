"""The exports' decisions, pure: which interfaces count for NFD labels, label names, the metrics
address, the systemd unit. Over recorded fixtures of real drivers; no kernel needed."""

import dataclasses
import os
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lib.helpers import load_fixture

from offload.errors import OffloadError, UsageError
from offload.kernel import fs
from offload.orchestrate import exports
from offload.orchestrate.metrics import parse_address
from offload.probe import verdicts

VALID = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


@pytest.fixture(scope="module")
def profs(shipped_profiles):
    return shipped_profiles[0]


def assessed(fixture: str, profs, **changes):
    host, devs = load_fixture(fixture)
    out = []
    for d in devs.values():
        d = dataclasses.replace(d, **changes)
        out.append((d, verdicts.evaluate(d, profs.get(d.driver or ""), host)))
    return out


def test_a_nic_node_is_labelled_native(profs):
    res = exports.nfd_labels(assessed("mlx5_core-6.8", profs))
    assert res["labels"] == {"offload.xdp/best-mode": "native", "offload.xdp/driver.mlx5_core": "true",
                             "offload.xdp/native": "true"}
    assert res["counted"] == ["ens1f0np0", "ens1f1np1"] and res["ignored"] == []


def test_a_veth_only_node_is_not_labelled_native_unless_virtual_is_asked_for(profs):
    res = exports.nfd_labels(assessed("veth-6.18", profs))
    assert res["labels"] == {"offload.xdp/best-mode": "none"} and res["counted"] == []
    assert {i["kind"] for i in res["ignored"]} == {"veth"}
    res = exports.nfd_labels(assessed("veth-6.18", profs), include_virtual=True)
    assert res["labels"]["offload.xdp/native"] == "true" and res["labels"]["offload.xdp/best-mode"] == "native"


def test_a_virtio_vm_counts_its_nic_and_never_loopback(profs):
    res = exports.nfd_labels(assessed("virtio_net-6.18", profs), include_virtual=True)
    assert res["counted"] == ["eth0"] and res["ignored"] == [{"interface": "lo", "kind": "loopback"}]


def test_a_driver_name_that_cannot_be_a_label_is_skipped_with_a_warning(profs):
    res = exports.nfd_labels(assessed("mlx5_core-6.8", profs, driver="x" * 70))
    assert not [k for k in res["labels"] if "driver." in k]
    assert res["labels"]["offload.xdp/native"] == "true"
    assert "cannot be a label name" in res["warnings"][0]
    res = exports.nfd_labels(assessed("mlx5_core-6.8", profs, driver="we/ird drv"))
    assert "offload.xdp/driver.we-ird-drv" in res["labels"]


@given(st.text(max_size=100))
def test_label_names_are_valid_or_refused(raw):
    name = exports.label_name(raw)
    assert name is None or (len(name) <= 63 and VALID.fullmatch(name))


@pytest.mark.parametrize("address, want", [("127.0.0.1:9477", ("127.0.0.1", 9477)), ("[::1]:0", ("::1", 0)),
                                           ("192.0.2.7:9477", ("192.0.2.7", 9477)),
                                           ("[fe80::1%eth1]:9477", ("fe80::1%eth1", 9477))])
def test_metrics_address(address, want):
    assert parse_address(address) == want


@pytest.mark.parametrize("address", ["0:9000", "0.0.0.0:9477", "[::]:9477", ":9477", "[]:9477",
                                     "[0:0::0]:9477", "0.0:9477", "[::ffff:0.0.0.0]:9477"])
def test_an_unspecified_metrics_address_is_refused(address):
    # every interface of the host is never a default: the operator names the address
    with pytest.raises(UsageError, match="name the address to listen on"):
        parse_address(address)


@pytest.mark.parametrize("address", ["9477", ":9477", "127.0.0.1:", "127.0.0.1:65536", "host:9477",
                                     "127.0.0.1:-1", "[::1:9477", "127.0.0.1%eth0:9477"])
def test_bad_metrics_address(address):
    with pytest.raises(UsageError):
        parse_address(address)


def test_systemd_unit_quotes_what_it_must():
    unit = exports.systemd_unit(policy="/etc/offload/my policy%1.yaml", command=["/usr/local/bin/offload"])
    (line,) = [x for x in unit.splitlines() if x.startswith("ExecStart=")]
    assert line.startswith("ExecStart=/usr/local/bin/offload watch -f '/etc/offload/my policy%%1.yaml' ")
    with pytest.raises(UsageError):
        exports.systemd_unit(policy="policy.yaml")


def test_open_dir_refuses_dotdot_and_files(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(UsageError, match="'..' is not allowed"):
        fs.open_dir(str(tmp_path / ".." / tmp_path.name))
    with pytest.raises(UsageError, match="not a directory"):
        fs.open_dir(str(tmp_path / "f"))
    with pytest.raises(UsageError, match="no such directory") as e:
        fs.open_dir(str(tmp_path / "missing"))
    assert e.value.hint == "make the directory first, or give a path in one that exists"


def test_cli_start_up_does_not_import_prometheus_client():
    code = "import sys, offload.cli; assert 'prometheus_client' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_open_dir_follows_our_own_links_even_with_dotdot(tmp_path):
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "lib").symlink_to("../usr/lib")          # like Debian's /lib -> usr/lib
    fd = fs.open_dir(str(tmp_path / "a" / "lib"))
    try:
        assert os.readlink(f"/proc/self/fd/{fd}") == str(tmp_path / "usr" / "lib")
    finally:
        os.close(fd)
    fd = fs.open_dir(str(tmp_path / "made" / "deeper"), create=True)
    os.close(fd)
    assert (tmp_path / "made").stat().st_mode & 0o777 == 0o755


def test_nfd_feature_file_carries_its_expiry_first():
    """NFD's directive, first, in RFC 3339 UTC whole seconds (what NFD's Go time.RFC3339 parses)."""
    labels = {"offload.xdp/best-mode": "native", "offload.xdp/native": "true"}
    assert exports.nfd_text(labels, 1_800_000_000.7).splitlines() == [
        "# +expiry-time=2027-01-15T08:00:00Z", "offload.xdp/best-mode=native", "offload.xdp/native=true"]
    assert exports.nfd_text(labels).splitlines() == ["offload.xdp/best-mode=native", "offload.xdp/native=true"]


def test_nfd_expiry_is_three_rounds_of_a_labeller_unless_asked():
    assert exports.nfd_expiry(300, None) == 900
    assert exports.nfd_expiry(300, 60) == 60
    assert exports.nfd_expiry(None, None) is None and exports.nfd_expiry(None, 120) == 120


def test_an_export_refused_its_directory_names_it_and_exits_3(tmp_path, monkeypatch):
    import errno

    from offload.errors import Exit

    def denied(path, data, create_dirs=False):
        raise PermissionError(errno.EACCES, "Permission denied", ".offload.prom.1.tmp")   # made at the dir's fd

    monkeypatch.setattr(fs, "replace_path", denied)
    with pytest.raises(OffloadError) as e:
        exports.write_file(str(tmp_path / "offload.prom"), "x\n", "--path")
    assert e.value.exit_code == Exit.PRIVILEGE
    assert e.value.message.startswith(f"--path {tmp_path}/offload.prom: {tmp_path}/.offload.prom.1.tmp: Permission "
                                      "denied: this process")
