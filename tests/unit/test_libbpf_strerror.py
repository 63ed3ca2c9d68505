"""libbpf's own error numbers (LIBBPF_ERRNO__*, 4000 and up) in libbpf's words, from
libbpf_strerror(): strerror() knows none of them ("Unknown error 4003")."""

from __future__ import annotations

import errno
import os

import pytest

from offload.kernel import bpfsys


def test_libbpf_numbers_in_libbpfs_words():
    assert bpfsys.strerror(4003) == "Endian mismatch"      # LIBBPF_ERRNO__ENDIAN
    assert bpfsys.strerror(-4003) == "Endian mismatch"     # libbpf returns them negated
    assert os.strerror(4003) == "Unknown error 4003"       # what was shown before


@pytest.mark.parametrize("code", range(4000, 4014))   # LIBBPF_ERRNO__LIBELF .. __NLPARSE
def test_every_libbpf_number_has_its_text(code):
    text = bpfsys.strerror(code)
    assert text and "Unknown" not in text and str(code) not in text


def test_system_numbers_stay_the_c_librarys():
    assert bpfsys.strerror(errno.EPERM) == os.strerror(errno.EPERM)
    assert bpfsys.strerror(-errno.E2BIG) == os.strerror(errno.E2BIG)


def test_a_number_past_libbpfs_table_is_said_to_be_libbpfs():
    text = bpfsys.strerror(4999)   # libbpf 1.1: "Unknown libbpf error 4999"
    assert "libbpf" in text and "4999" in text


def test_bpf_errors_carry_libbpfs_words(monkeypatch):
    import ctypes

    monkeypatch.setattr(ctypes, "get_errno", lambda: 0)
    with pytest.raises(bpfsys.BpfError) as e:
        bpfsys._check(-4007, "bpf_prog_load")     # LIBBPF_ERRNO__VERIFY
    assert "Unknown error" not in str(e.value) and bpfsys.strerror(4007) in str(e.value)
