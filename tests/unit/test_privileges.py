"""A refusal is said with what was refused and what this process lacks (kernel.privileges)."""

import errno
import os

from offload.errors import Exit
from offload.kernel import fs, privileges


def test_read_only_file_names_the_path_and_what_to_make_writable(tmp_path):
    e = privileges.explain_denied(OSError(errno.EROFS, "Read-only file system", str(tmp_path / "state.lock")))
    assert e.exit_code == Exit.ENVIRONMENT
    assert e.message.startswith(f"{tmp_path}/state.lock: Read-only file system") and "ReadWritePaths=" in e.hint


def test_denied_file_names_the_nearest_existing_path_its_owner_and_mode(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: mode != os.W_OK)
    e = privileges.explain_denied(PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "a" / "b")))
    assert e.exit_code == Exit.PRIVILEGE
    assert f"lacks write permission on {tmp_path} (owner uid {os.stat(tmp_path).st_uid}, mode drwx" in e.message


def test_denied_file_names_every_permission_lacking(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    e = privileges.explain_denied(PermissionError(errno.EACCES, "Permission denied", str(tmp_path)))
    assert f"lacks read and write permission on {tmp_path} (owner" in e.message
    assert e.hint.startswith(f"give uid {os.geteuid()} read and write access to {tmp_path}")


def test_kernel_refusal_names_the_capabilities_this_process_lacks(monkeypatch):
    monkeypatch.setattr(privileges, "effective", lambda: 1 << privileges.CAP_NET_ADMIN | 1 << privileges.CAP_BPF)
    e = privileges.explain_denied(OSError(errno.EPERM, "BPF_PROG_GET_FD_BY_ID 7: Operation not permitted"))
    assert e.exit_code == Exit.PRIVILEGE
    assert e.message.endswith("this process lacks CAP_SYS_ADMIN, CAP_PERFMON") and "root" not in e.message
    monkeypatch.setattr(privileges, "effective", lambda: (1 << 41) - 1)
    e = privileges.explain_denied(OSError(errno.EPERM, "bpf: Operation not permitted"))
    assert "though this process holds CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN, CAP_PERFMON" in e.message
    assert "seccomp" in e.hint


def test_our_own_refusal_keeps_its_reason():
    e = privileges.explain_denied(fs.Untrusted(errno.EPERM, "it is a symbolic link or not a directory"))
    assert e.message == "refused: it is a symbolic link or not a directory"
