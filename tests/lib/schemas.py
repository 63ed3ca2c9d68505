"""Validate a `--json` document against its JSON Schema (offload/schemas/<kind>.schema.json)."""

from __future__ import annotations

import jsonschema

from offload import jsondoc


def validate(doc: dict, kind: str) -> dict:
    """`doc` if it is a valid `kind` document (RFC 3339 `date-time` formats checked); else the
    test fails with every violation and where it is."""
    v = jsonschema.Draft202012Validator(jsondoc.schema(kind), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(v.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, f"{kind} document violates its schema:\n" + "\n".join(
        f"  at {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:300]}" for e in errors)
    return doc
