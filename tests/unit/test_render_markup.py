"""Interface names (and other strings from the kernel or records) are printed literally: an
interface may be called `[red]zz` or `[/]` (dev_valid_name() allows both), and rich must neither
style it nor fail on it (an unescaped `[/]` raises MarkupError)."""

import io

import pytest
from rich.console import Console

from offload.load import render

NAMES = ["[red]zz", "[/]", "[bold", "x\\[red]y", "[link=x]l", "[b]x[/b]"]


def consoles() -> tuple[Console, Console, io.StringIO]:
    buf = io.StringIO()
    con = Console(file=buf, width=400, color_system=None, highlight=False, soft_wrap=True)
    return con, con, buf


def attach_res(name: str) -> dict:
    return {"interface": name, "mode": "native", "prog_id": 7, "program": name, "replaced": None,
            "warnings": [f"{name}: a warning"], "fallbacks": [{"mode": "hw", "reason": f"{name}: no hw"}]}


def status_res(name: str) -> dict:
    row = {"interface": name, "mode": "native", "prog_id": 7, "name": name, "ours": True, "program": name,
           "attached_at": name}
    return {"netns": name, "attachments": [row], "stale_pins": [name], "warnings": [f"{name}: a warning"]}


def stats_res(name: str, counters: str) -> dict:
    base = {"interface": name, "mode": "native", "program": name, "prog_id": 7, "counters": counters}
    if counters == "prog_info":
        return {**base, "run_cnt": 1, "run_time_ns": 2, "note": f"{name}: a note"}
    actions = ("aborted", "drop", "pass", "tx", "redirect")
    return {**base, "packets": dict.fromkeys(actions, 1), "bytes": dict.fromkeys(actions, 60)}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("show,times", [
    (lambda name, out, err: render.attach_result(attach_res(name), out, err), 4),
    (lambda name, out, err: render.status(status_res(name), out, err), 8),
    (lambda name, out, err: render.stats(stats_res(name, "offload"), out), 2),
    (lambda name, out, err: render.stats(stats_res(name, "prog_info"), out), 3),
    (lambda name, out, err: render.detach_result({"interface": name, "detached": None}, out), 1),
], ids=["attach", "status", "stats", "stats-prog-info", "detach"])
def test_names_are_printed_literally(show, times, name):
    out, err, buf = consoles()
    show(name, out, err)
    assert buf.getvalue().count(name) == times, buf.getvalue()   # every one, none taken as a tag
