"""bcc-dialect C compiled and loaded in a forked child process.

bcc runs C++ (its rewriter, clang's frontend) over the user's text, and some texts crash it: in
offload's own process that crash would end an `apply` half-way, after it has changed interfaces,
with no rollback. So bcc runs in a child made by fork, which keeps offload's network namespace
(a device for hardware offload is named there). The child sends back a small JSON report and the
program's and maps' fds over a socketpair (SCM_RIGHTS), then exits without cleaning up: its bcc
objects die with it, and the kernel objects live on through the parent's fds. Everything the child
writes to stdout and stderr (clang's diagnostics, the verifier's log, a crash's last words) goes to
a file the parent reads afterwards: no size limit, and it survives the child's crash. bcc is
imported only in the child.
"""

from __future__ import annotations

import ctypes
import faulthandler
import json
import os
import signal
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

TIMEOUT = 300.0            # s: bcc compiles large programs in seconds; this bounds a hang, not a build
_FDS_PER_MESSAGE = 250     # SCM_MAX_FD is 253 per message
_MAX_REPORT = 1 << 20
_PR_SET_PDEATHSIG = 1

Work = Callable[[], tuple[dict, list[int]]]   # the child's job: its report and the fds to send


class Crashed(Exception):
    """The child ended without a report: `how` names its signal (SIGSEGV) or its exit status."""

    def __init__(self, how: str, output: bytes) -> None:
        super().__init__(how)
        self.how, self.output = how, output


class Hung(Exception):
    """The child did not report within the timeout (it has been killed)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"no report within {timeout:g} s")
        self.timeout = timeout


@dataclass
class Outcome:
    report: dict           # the child's status, as `work` returned it
    fds: list[int]         # the fds it sent, now the caller's to close
    output: bytes          # all the child wrote to fds 1 and 2


def run(work: Work, timeout: float = TIMEOUT) -> Outcome:
    """Run `work` in a forked child; what it returns (a JSON-able report, fds to pass) comes back.
    An exception in `work` comes back as the report {"status": "error", "type", "error"}."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, tempfile.TemporaryFile() as out:
        with theirs:
            pid = os.fork()
            if pid == 0:  # pragma: no cover (the child; coverage does not follow it)
                ours.close()
                _child(theirs, out.fileno(), work)
        got = None
        try:   # our copy of the child's end is closed: its death reads as end of file here
            got = _receive(ours, timeout)
            status = os.waitpid(pid, 0)[1]   # it exits as soon as it has sent its report
        except BaseException:
            _close(got[1] if got else [])
            _stop(pid)
            raise
        out.seek(0)
        output = out.read()
    if got is None:
        raise Crashed(_how(status), output)
    return Outcome(got[0], got[1], output)


def _child(sock: socket.socket, out_fd: int, work: Work) -> None:
    """The child's whole life: never returns into the parent's code, never runs its clean-ups."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)    # ^C is the parent's to answer; it stops us
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # not outlive offload
        os.dup2(out_fd, 1)   # nothing the child says can reach offload's own output (its JSON)
        os.dup2(out_fd, 2)
        faulthandler.disable()   # a crash is reported by the parent, not as a Python traceback of offload's
        try:
            report, fds = work()
        except Exception as e:
            report, fds = {"status": "error", "type": type(e).__name__, "error": str(e)}, []
        _send(sock, report, fds)
        code = 0
    finally:
        os._exit(code)


def _send(sock: socket.socket, report: dict, fds: list[int]) -> None:
    """The report with the first fds, then the rest, as many per message as SCM_RIGHTS carries."""
    data = json.dumps({**report, "nfds": len(fds)}).encode()
    socket.send_fds(sock, [data], fds[:_FDS_PER_MESSAGE])
    for i in range(_FDS_PER_MESSAGE, len(fds), _FDS_PER_MESSAGE):
        socket.send_fds(sock, [b"+"], fds[i:i + _FDS_PER_MESSAGE])


def _receive(sock: socket.socket, timeout: float) -> tuple[dict, list[int]] | None:
    """The child's report and fds; None when it ended without one. Raises Hung after `timeout`."""
    sock.settimeout(timeout)
    fds: list[int] = []
    try:
        data = _recv(sock, fds)
        if not data:
            return None
        report = json.loads(data)
        wanted = report.pop("nfds")
        while len(fds) < wanted:
            if not _recv(sock, fds):
                raise ConnectionError("the child ended half-way through sending its fds")
        return report, fds
    except socket.timeout:
        _close(fds)
        raise Hung(timeout) from None
    except BaseException:
        _close(fds)
        raise


def _recv(sock: socket.socket, into: list[int]) -> bytes:
    """One message (b"" at end of file), its fds appended to `into`."""
    data, fds, flags, _ = socket.recv_fds(sock, _MAX_REPORT, _FDS_PER_MESSAGE)
    into += fds
    if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
        raise OSError(f"the child's report was cut short (flags {flags:#x}): too many fds open here?")
    return data


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _stop(pid: int) -> None:
    """Kill the child and reap it (unless that was done already)."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _how(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


def compile_and_load(text: str, cflags: list[str], entry: str, device: str | None,
                     timeout: float = TIMEOUT) -> Outcome:
    """bcc's BPF(text=...) and load_func(entry, XDP) in a child. The report's status: "ok" (fds: the
    program's, then one per name in "maps"), "compile" (BPF() failed), or "load" (load_func failed:
    "error" holds bcc's words, "load_at" where in the output its attempt began)."""
    return run(lambda: _bcc(text, cflags, entry, device), timeout)


def _bcc(text: str, cflags: list[str], entry: str, device: str | None) -> tuple[dict, list[int]]:
    """The child's work: the fds it returns are bcc's, sent before the child exits."""
    from bcc import BPF

    from offload.kernel.bcc import table_fds

    dev = device.encode() if device else None  # bcc wants bytes (bcc issue #3320)
    try:
        bpf = BPF(text=text.encode(), cflags=cflags, device=dev)
    except Exception as e:
        return {"status": "compile", "error": str(e)}, []
    load_at = os.lseek(2, 0, os.SEEK_CUR)
    try:
        fn = bpf.load_func(entry.encode(), BPF.XDP, device=dev)
    except Exception as e:
        return {"status": "load", "error": str(e), "load_at": load_at}, []
    maps = table_fds(bpf.module)
    return {"status": "ok", "maps": list(maps)}, [fn.fd, *maps.values()]
