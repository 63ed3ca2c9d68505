"""The real commands in a real 80-column terminal (tmux, as an operator's split pane): no `…`, no
line the terminal had to wrap, no trailing spaces, and wrapped text indented under its start.
The renderers themselves are tested line by line in tests/unit/test_output_width.py."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import subprocess

import pytest
from lib.cli import OFFLOAD
from lib.env import VethEnv
from lib.helpers import need_tool

COLS = 80


class Tmux:
    """A tmux server of its own (a socket named for this test, no user config), killed on exit
    with everything running in it."""

    def __init__(self) -> None:
        self.tmux = need_tool("tmux")
        self.socket = f"offload-i21-{os.getpid()}-{secrets.token_hex(3)}"
        self.n = 0
        self.path: str | None = None   # the socket file, which tmux leaves behind after kill-server

    def __enter__(self) -> "Tmux":
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run([self.tmux, "-L", self.socket, "kill-server"], capture_output=True, timeout=30)
        if self.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def _tmux(self, *args: str, timeout: float = 30) -> str:
        return subprocess.run([self.tmux, "-L", self.socket, "-f", "/dev/null", *args], capture_output=True,
                              text=True, check=True, timeout=timeout).stdout

    def run(self, *argv: str, timeout: float = 300) -> str:
        """`argv` in a fresh 80-column pane, to its end: the screen as tmux holds it, lines the
        terminal wrapped joined again (-J, which also keeps trailing spaces)."""
        self.n += 1
        session, done = f"c{self.n}", f"done-{self.socket}-{self.n}"
        # COLUMNS would override the pane's own width; the pane stays open until the server goes
        line = f"env -u COLUMNS -u LINES {shlex.join(argv)}; tmux wait-for -S {done}; exec sleep 3600"
        self._tmux("new-session", "-d", "-s", session, "-x", str(COLS), "-y", "400", line)
        self.path = self.path or self._tmux("display-message", "-p", "-t", session, "#{socket_path}").strip()
        self._tmux("wait-for", done, timeout=timeout)   # a hang fails the test; the machine is shared
        return self._tmux("capture-pane", "-p", "-J", "-S", "-", "-t", session).rstrip("\n")


def check_screen(screen: str) -> list[str]:
    lines = screen.splitlines()
    assert "…" not in screen, screen
    assert not [ln for ln in lines if len(ln) > COLS], screen   # joined: the terminal wrapped it
    assert not [ln for ln in lines if ln != ln.rstrip()], screen
    assert "Traceback" not in screen, screen
    return lines


@pytest.fixture(scope="module")
def tmux():
    with Tmux() as t:
        yield t


def test_profiles_and_programs_at_80_columns(tmux):
    lines = check_screen(tmux.run(OFFLOAD, "profiles"))
    head = next(ln for ln in lines if ln.startswith("driver ") and "zero-copy" in ln)
    assert re.split(r"\s{2,}", head.strip()) == ["driver", "native", "zero-copy", "hw-offload", "multi-buffer",
                                                "native MTU"]
    assert any(ln.split()[:2] == ["fsl_dpaa2_eth", "5.0"] for ln in lines)
    lines = check_screen(tmux.run(OFFLOAD, "programs"))
    assert lines[0] == "program     params    what"
    wrapped = [ln for ln in lines[1:] if ln.startswith(" ")]
    assert wrapped and all(ln.startswith(" " * 22) for ln in wrapped)   # under the `what` column


def test_help_at_80_columns(tmux):
    for argv in ((OFFLOAD, "--help"), (OFFLOAD, "bench", "--help"), (OFFLOAD, "export", "--help")):
        lines = check_screen(tmux.run(*argv))
        listed = lines[lines.index("Commands:") + 1:]
        assert listed and not [ln for ln in listed if ln.endswith("...")], lines
    text = " ".join(tmux.run(OFFLOAD, "--help").split())
    assert "then everything is removed." in text and "of programs no longer attached (every namespace)." in text


@pytest.mark.root
def test_attach_status_stats_detach_at_80_columns(tmux):
    with VethEnv() as env:
        ns, dev = env.netns, env.ifname
        lines = check_screen(tmux.run(OFFLOAD, "attach", dev, "count_drop", "--netns", ns))
        hw = next(i for i, ln in enumerate(lines) if ln.startswith("hw: "))
        more = lines[hw + 1:next(i for i, ln in enumerate(lines) if ln.startswith(f"{dev}: attached"))]
        assert more and all(ln.startswith("    ") and not ln.startswith("     ") for ln in more), lines
        assert "hw-offload" in " ".join(lines)
        check_screen(tmux.run(OFFLOAD, "status", "--netns", ns))
        check_screen(tmux.run(OFFLOAD, "stats", dev, "--netns", ns))
        check_screen(tmux.run(OFFLOAD, "probe", "--netns", ns))
        check_screen(tmux.run(OFFLOAD, "probe", "-v", "--netns", ns))
        lines = check_screen(tmux.run(OFFLOAD, "detach", dev, "--netns", ns))
        assert lines[-1].startswith(f"{dev}: detached prog")


def test_an_error_wraps_indented_at_a_terminal_and_stays_whole_in_a_pipe(tmux, tmp_path):
    missing = str(tmp_path / ("a-long-directory-name-" * 3) / "missing_program.bpf.o")
    lines = check_screen(tmux.run(OFFLOAD, "attach", "i21b-none0", missing))
    start = next(i for i, ln in enumerate(lines) if ln.startswith("offload: error: "))
    assert len(lines) > start + 1 and all(ln.startswith("  ") for ln in lines[start + 1:]), lines
    assert "".join(missing.split()) in "".join("".join(lines).split())
    piped = subprocess.run([OFFLOAD, "attach", "i21b-none0", missing], capture_output=True, text=True, timeout=300,
                           env={k: v for k, v in os.environ.items() if k != "COLUMNS"})
    assert piped.returncode == 2
    first = piped.stderr.splitlines()[0]   # a log line: one line, however long, the path unbroken
    assert first.startswith("offload: error: ") and missing in first and len(first) > 100


def test_the_progress_line_ticks_through_a_long_step(tmp_path):
    """The live status line at a real terminal (a pty, as `offload bench` runs it): one step that
    lasts over 3 s is shown with a later time than it started with, without a new step."""
    import fcntl
    import struct
    import sys
    import termios

    script = tmp_path / "step.py"
    script.write_text("import time\nfrom offload import cli\nwith cli._progress(quiet=False) as progress:\n"
                      "    progress('native: run 1/3')\n    time.sleep(3.5)\n")
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLS, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, str(script)], stdin=slave, stdout=slave, stderr=slave,
                            env={**env, "TERM": "xterm"}, start_new_session=True)
    os.close(slave)
    chunks = []
    try:
        while data := os.read(master, 65536):
            chunks.append(data)
    except OSError:   # EIO: the child closed the terminal
        pass
    finally:
        os.close(master)
    assert proc.wait(timeout=60) == 0
    shown = {int(m) for m in re.findall(r"\[0:(\d\d)\] native: run 1/3", b"".join(chunks).decode(errors="replace"))}
    assert 0 in shown and max(shown) >= 2, shown   # slept 3.5 s: the line was redrawn after 2 s at least
