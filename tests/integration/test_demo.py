"""`offload demo` as a newcomer meets it: the whole story (probe, attach with the fallback in the
kernel's words, native vs generic measured, a plot), in an 80-column terminal, and nothing left
behind, also when it is stopped half-way."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest
from lib.cli import OFFLOAD, offload
from lib.helpers import PIN_ROOT, RUN_ROOT
from lib.kernel import netns_list
from lib.schemas import validate

pytestmark = pytest.mark.root

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")


def leftovers(pid: int) -> list[str]:
    """Whatever the demo run by process `pid` could leave: its namespace, pins, records (only its
    own: other demos and labs may come and go meanwhile)."""
    ns = f"offload-lab-demo{pid % 10_000}"
    return [p for p in (ns, f"{PIN_ROOT}/{ns}", f"{RUN_ROOT}/attachments/{ns}")
            if (p == ns and ns in netns_list()) or (p != ns and Path(p).exists())]


def test_demo_json_tells_the_whole_story(tmp_path):
    plot = tmp_path / "demo.png"
    doc = validate(json.loads(offload("demo", "--json", "--plot", str(plot)).stdout), "demo")
    validate(doc["probe"], "probe")
    validate({"schema_version": 1, **doc["bench"]}, "bench")
    assert doc["lab"]["netns"] not in netns_list()
    assert not (PIN_ROOT / doc['lab']['netns']).exists()
    rec = {i["name"].split("-", 1)[-1]: i["recommended"]["mode"] for i in doc["probe"]["interfaces"]}
    assert rec["a0"] == rec["b0"] == "native" and rec["a1"] == rec["b1"] == "generic"
    a0, a1 = doc["attach"]
    assert a0["mode"] == "native" and a1["mode"] == "generic"
    (native,) = [f for f in a1["fallbacks"] if f["mode"] == "native"]
    assert "Peer MTU is too large to set XDP" in native["reason"]
    assert [r["mode"] for r in doc["bench"]["results"]] == ["native", "generic"]
    assert all(r["rx_pps"] > 0 for r in doc["bench"]["results"]) and doc["bench"]["partial"] is None
    assert doc["plot"] == str(plot) and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def run_in_terminal(argv: list[str], cols: int, rows: int = 24, timeout: float = 300) -> tuple[int, int, str]:
    """Run `argv` with stdin, stdout and stderr on a pseudo-terminal of `cols` columns: its pid,
    exit code and output. `timeout` only catches a hang (generous: the machine is shared)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}   # the tty's size rules
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env={**env, "TERM": "xterm"},
                            start_new_session=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:   # EIO: every writer has closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.pid, proc.wait(timeout=10), b"".join(chunks).decode(errors="replace")


def test_demo_in_an_80_column_terminal(tmp_path):
    # how long the demo takes is a benchmark's business, not a test's: this machine's load varies
    pid, code, raw = run_in_terminal([OFFLOAD, "demo", "--plot", str(tmp_path / "demo.png")], cols=80)
    assert code == 0, raw
    assert not leftovers(pid)
    lines = re.split(r"\r\n|\r|\n", ANSI.sub("", raw))
    too_wide = [ln for ln in lines if len(ln.rstrip()) > 80]
    assert not too_wide, too_wide
    text = " ".join(ANSI.sub("", raw).split())
    assert "…" not in text
    assert re.search(r"fallback: \S+-a1 native -> generic", text)
    assert "Peer MTU is too large to set XDP" in text
    assert re.search(r"native/generic \d+\.\d\dx", text)
    assert f"plot: {tmp_path / 'demo.png'}" in text


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_demo_stopped_half_way_leaves_nothing(tmp_path, sig):
    proc = subprocess.Popen([OFFLOAD, "demo", "--plot", str(tmp_path / "demo.png")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pins = PIN_ROOT / f"offload-lab-demo{proc.pid % 10_000}"
    deadline = time.time() + 60
    while not pins.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert pins.exists(), "the demo never attached anything"
    time.sleep(1.0)   # into the attach or the bench
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in err
    assert not leftovers(proc.pid) and not (tmp_path / "demo.png").exists()
