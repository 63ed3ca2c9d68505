"""The shipped JSON Schemas, completed from the one mode vocabulary (`probe.mode`).

A schema marks each place that lists modes with the keyword `x-offload-vocabulary` (validators
ignore keywords they do not know): `"MODES"` or `"CHOICES"` (the constants of `probe.mode`) next
to an `enum`, or `"MODES"` on an object keyed by mode (its `properties` and `required`). `fill`
writes the vocabulary there, so the files are complete for any outside validator. setup.py runs
it over the wheel's copies at build time (this module and `probe.mode` are standard-library only,
loaded before offload's dependencies exist); `tests/unit/test_schemagen.py` fails when a file in
the checkout differs from what it generates: `python -m offload.probe.schemagen` rewrites them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType

KEY = "x-offload-vocabulary"


def vocabularies(mode: ModuleType | None = None) -> dict[str, list[str]]:
    """The vocabulary lists by name, as plain strings (JSON has no enum members)."""
    if mode is None:
        from offload.probe import mode
    return {"MODES": [str(m) for m in mode.MODES], "CHOICES": [str(c) for c in mode.CHOICES]}


def _fill_node(node: dict, words: list[str], where: str) -> None:
    if "enum" in node:
        # a nullable field keeps its null after the modes
        node["enum"] = [*words, *([None] if None in node["enum"] else [])]
    elif isinstance(node.get("properties"), dict):
        shapes = list(node["properties"].values())
        if not shapes or any(s != shapes[0] for s in shapes):
            raise ValueError(f"{where}: an object keyed by mode needs one shape for every mode")
        node["properties"] = {w: shapes[0] for w in words}
        node["required"] = list(words)
    else:
        raise ValueError(f"{where}: {KEY} marks an enum or an object keyed by mode")


def fill(schema, vocab: dict[str, list[str]], where: str = "#"):
    """`schema` with every marked place completed from `vocab` (in place; returned)."""
    if isinstance(schema, dict):
        if KEY in schema:
            name = schema[KEY]
            if name not in vocab:
                raise ValueError(f"{where}: unknown vocabulary {name!r}; known: {', '.join(vocab)}")
            _fill_node(schema, vocab[name], where)
        for k, v in schema.items():
            fill(v, vocab, f"{where}/{k}")
    elif isinstance(schema, list):
        for i, v in enumerate(schema):
            fill(v, vocab, f"{where}/{i}")
    return schema


def render(text: str, vocab: dict[str, list[str]]) -> str:
    """A schema file's text as generated: filled, two-space indented, one trailing newline."""
    return json.dumps(fill(json.loads(text), vocab), indent=2, ensure_ascii=False) + "\n"


def generate(directory: Path, vocab: dict[str, list[str]]) -> list[Path]:
    """Rewrite every *.schema.json under `directory` as generated; the files that changed."""
    changed = []
    for path in sorted(directory.glob("*.schema.json")):
        old = path.read_text()
        new = render(old, vocab)
        if new != old:
            path.write_text(new)
            changed.append(path)
    return changed


if __name__ == "__main__":
    here = Path(__file__).resolve().parents[1] / "schemas"
    for p in generate(here, vocabularies()):
        print(f"rewrote {p}", file=sys.stderr)
