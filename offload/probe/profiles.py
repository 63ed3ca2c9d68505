"""Driver profiles: what the kernel cannot say about a driver, one YAML file per driver.

A file that does not parse or validate is reported (file and field) and skipped; the others load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from offload.data import PROFILES, data_dir

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster


@dataclass(frozen=True)
class ProfileProblem:
    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"


@dataclass(frozen=True)
class Profile:
    driver: str
    data: dict[str, Any]
    path: str

    def capability(self, name: str) -> dict[str, Any]:
        return self.data["xdp"].get(name) or {"supported": False}

    def limit(self, name: str) -> Any:
        return (self.data.get("limits") or {}).get(name)

    @property
    def requirements(self) -> list[dict[str, Any]]:
        return self.data.get("requirements") or []


def default_dir() -> Path:
    return data_dir(PROFILES)


@lru_cache(maxsize=1)
def validator():
    from jsonschema import Draft202012Validator  # imported when first needed: ~0.1 s

    schema = json.loads(resources.files("offload").joinpath("schemas/profile.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _field(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def validate(data: Any, file: str) -> list[ProfileProblem]:
    """Schema problems of one parsed profile, plus the file-name rule."""
    problems = [
        ProfileProblem(file, _field(e.absolute_path), e.message)
        for e in sorted(validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if isinstance(data, dict) and isinstance(data.get("driver"), str):
        stem = Path(file).stem
        if data["driver"] != stem:
            problems.append(ProfileProblem(file, "driver", f"'{data['driver']}' does not match the file name '{stem}'"))
    return problems


def parse(text: str, file: str) -> tuple[Profile | None, list[ProfileProblem]]:
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(parse)"
        return None, [ProfileProblem(file, where, f"not valid YAML: {getattr(e, 'problem', None) or e}")]
    problems = validate(data, file)
    if problems:
        return None, problems
    return Profile(data["driver"], data, file), []


def load(directory: Path | None = None, drivers: set[str] | None = None
         ) -> tuple[dict[str, Profile], list[ProfileProblem]]:
    """Valid profiles of `directory` by driver name, and the problems of the others. With
    `drivers`, only those drivers' files (named after the driver) are read and checked."""
    d = directory or default_dir()
    profiles: dict[str, Profile] = {}
    problems: list[ProfileProblem] = []
    if not d.is_dir():
        return profiles, [ProfileProblem(str(d), "(directory)", "no such directory; set OFFLOAD_PROFILES")]
    if drivers is None and not any(d.glob("*.yaml")):
        return profiles, [ProfileProblem(str(d), "(directory)", "holds no driver profiles (*.yaml)")]
    for path in sorted(d.glob("*.yaml")):
        if drivers is not None and path.stem not in drivers:
            continue
        profile, errs = parse(path.read_text(), str(path))
        problems.extend(errs)
        if profile is not None:
            profiles[profile.driver] = profile
    return profiles, problems


def summary_rows(profs: dict[str, Profile]) -> list[dict]:
    """One row per driver: since which kernel each capability exists ("-": never), the MTU limit."""
    rows = []
    for drv, p in sorted(profs.items()):
        x = p.data["xdp"]

        def since(k: str) -> str:
            return x[k].get("since") if x[k].get("supported") else "-"

        rows.append({"driver": drv, "native": since("native"), "zero_copy": since("zero_copy"),
                     "hw_offload": since("hw_offload"), "multi_buffer": since("multi_buffer"),
                     "native_mtu_max": (p.limit("native_mtu_max") or {}).get("value"), "file": p.path})
    return rows
