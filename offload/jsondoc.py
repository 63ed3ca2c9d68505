"""The one place every `--json` document gets its envelope: `schema_version` first, then the
command's own keys; errors as `{"schema_version", "error": {"message", "hint", "exit_code"}}`.
Each document kind has a JSON Schema (2020-12) in offload/schemas/<kind>.schema.json."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

# One integer per document kind. It goes up when a key is removed or changes meaning; keys are
# only ever added within a version (so consumers must ignore keys they do not know).
VERSIONS = {
    "probe": 1, "profiles": 1, "programs": 1, "attach": 1, "detach": 1, "status": 1, "gc": 1,
    "stats": 1, "filter": 1, "bench": 1, "bench-prog": 1, "bench-search": 1, "bench-compare": 1, "plan": 1,
    "apply": 1, "lab-up": 1, "lab-down": 1, "lab-list": 1, "demo": 1, "export-nfd": 1, "export-prometheus": 1,
    "export-systemd": 1, "error": 1,
}


def document(kind: str, data: dict) -> dict:
    """`data` under the envelope of its kind (an unknown kind is a bug, caught by the tests)."""
    return {"schema_version": VERSIONS[kind], **{k: v for k, v in data.items() if k != "schema_version"}}


def error(message: str, hint: str | None, exit_code: int) -> dict:
    return document("error", {"error": {"message": message, "hint": hint, "exit_code": int(exit_code)}})


@lru_cache(maxsize=None)
def schema(kind: str) -> dict:
    """The JSON Schema of a document kind (package data)."""
    return json.loads((resources.files("offload") / "schemas" / f"{kind}.schema.json").read_text())
