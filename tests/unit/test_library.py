"""The library's catalogue as `offload programs` shows it: each summary is the first whole
sentence of the program's top comment, even where that sentence runs over several lines."""

from pathlib import Path

from offload.load import programs


def test_summaries_are_whole_first_sentences():
    rows = {r["name"]: r for r in programs.catalogue()}
    assert set(rows) >= {"count_drop", "count_pass", "filter", "redirect", "reflect"}
    for name, row in rows.items():
        assert row["summary"].endswith("."), (name, row["summary"])
        assert "*" not in row["summary"] and not row["summary"].startswith(f"{name}:")
    assert rows["reflect"]["summary"].endswith("with source and destination MAC swapped (XDP_TX).")


def test_summary_of_a_user_comment(tmp_path: Path):
    src = tmp_path / "x.c"
    src.write_text("/* mine: pass IPv4 frames. Drop\n * the rest.\n */\nint x;\n")
    assert programs.summary(src) == "pass IPv4 frames."
    src.write_text("/*\n * one line\n * then two.\n *\n * Later paragraph.\n */\n")
    assert programs.summary(src) == "one line then two."
    src.write_text("int no_comment;\n")
    assert programs.summary(src) == ""
