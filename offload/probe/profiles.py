"""Driver profiles: what the kernel cannot say about a driver, one YAML file per driver.

A file that does not parse or validate is reported (file and field) and skipped; the others load.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from offload.data import PROFILES, data_dir, owned_cache
from offload.errors import OffloadError, UsageError


def _yaml_load(text: str) -> Any:
    import yaml  # only for files not in the cache: most runs never import it

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: ~10x faster


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

    @property
    def offload_rules(self) -> list[dict[str, Any]]:
        """What the kernel, the driver and its firmware refuse in a device-bound program."""
        return self.data.get("offload_rules") or []


def default_dir() -> Path:
    return data_dir(PROFILES)


def chosen_dir(option: Path | None) -> Path:
    """The profiles directory a command is pointed at: `option` (--profiles), else
    $OFFLOAD_PROFILES, else offload's own. One the operator named must be a directory: a typo
    would otherwise probe with no profiles at all (bad input, exit 2, naming where it came from)."""
    env = os.environ.get(PROFILES[1])
    if option is None and not env:
        return default_dir()
    path, source = (option, f"--profiles {option}") if option is not None else (Path(env), f"{PROFILES[1]}={env}")
    hint = "give the directory holding the driver profiles (*.yaml)" + (
        "" if option is not None else f", or unset {PROFILES[1]} for offload's own")
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        raise UsageError(f"{source}: no such directory", hint=hint) from None
    except OSError as e:   # e.g. a directory above it that the caller may not search
        raise UsageError(f"{source}: cannot reach it: {e.strerror}", hint=hint) from None
    if not is_dir:
        raise UsageError(f"{source}: not a directory", hint=hint)
    return path


@lru_cache(maxsize=1)
def validator():
    from jsonschema import Draft202012Validator  # imported when first needed: ~0.1 s

    schema = json.loads(_schema_text())
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
    import yaml

    try:
        data = _yaml_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(parse)"
        return None, [ProfileProblem(file, where, f"not valid YAML: {getattr(e, 'problem', None) or e}")]
    problems = validate(data, file)
    if problems:
        return None, problems
    return Profile(data["driver"], data, file), []


def load(directory: Path | None = None, drivers: set[str] | None = None, recheck: bool = False
         ) -> tuple[dict[str, Profile], list[ProfileProblem]]:
    """Valid profiles of `directory` by driver name, and the problems of the others. With
    `drivers`, only those drivers' files (named after the driver) are read and checked.

    Schema validation costs ~0.2 s (jsonschema), more than the rest of an attach: a file whose
    exact content (with this schema) validated once is remembered in the cache, with what it
    parsed to, and is neither checked nor parsed again (no YAML import on a probe or an attach);
    `recheck` (profiles --check) validates every file regardless."""
    d = directory or default_dir()
    profiles: dict[str, Profile] = {}
    problems: list[ProfileProblem] = []
    if not d.is_dir():
        return profiles, [ProfileProblem(str(d), "(directory)", "no such directory: point --profiles or OFFLOAD_PROFILES at the driver profiles")]
    if drivers is None and not any(d.glob("*.yaml")):
        return profiles, [ProfileProblem(str(d), "(directory)", "holds no driver profiles (*.yaml)")]
    known = {} if recheck else _validated()
    fresh: dict[str, Any] = {}
    for path in sorted(d.glob("*.yaml")):
        if drivers is not None and path.stem not in drivers:
            continue
        text = path.read_text()
        key = _key(path.name, text)
        if key in known:
            data = known[key]
            if not isinstance(data, dict) or not isinstance(data.get("driver"), str):
                data = _yaml_load(text)   # a key-only entry: parse (and keep the data when JSON can)
                if known[key] is None and _json_exact(data):
                    fresh[key] = data
            profiles[data["driver"]] = Profile(data["driver"], data, str(path))
            continue
        profile, errs = parse(text, str(path))
        problems.extend(errs)
        if profile is not None:
            profiles[profile.driver] = profile
            # kept parsed only when JSON gives it back unchanged (no dates, no non-string keys)
            fresh[key] = profile.data if _json_exact(profile.data) else None
    if fresh:
        _remember({**known, **fresh})
    return profiles, problems


def _key(name: str, text: str) -> str:
    """What a validation result depends on: the schema, the file's name (it must match the
    driver) and its content."""
    return hashlib.sha256("\0".join((_schema_text(), name, text)).encode()).hexdigest()


@lru_cache(maxsize=1)
def _schema_text() -> str:
    return (Path(__file__).resolve().parents[1] / "schemas" / "profile.schema.json").read_text()


def _cache_file() -> Path | None:
    """In the cache checked ours alone (data.owned_cache): what it holds is trusted as validated.
    A cache that is not safe to use is not used: the profiles are validated again instead."""
    try:
        return owned_cache() / "validated-profiles.json"
    except OffloadError:
        return None


def _json_exact(data: Any) -> bool:
    try:
        return json.loads(json.dumps(data)) == data
    except (TypeError, ValueError):
        return False


def _validated() -> dict[str, Any]:
    """key -> the profile it parsed to (None in caches written before the data was kept)."""
    path = _cache_file()
    if path is None:
        return {}
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return {}
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return {}   # planted, or writable by others: not trusted as validated
        try:
            cached = json.loads(f.read(4 << 20))
        except (OSError, ValueError, RecursionError):
            return {}
    if isinstance(cached, list):
        return {k: None for k in cached if isinstance(k, str)}
    return cached if isinstance(cached, dict) else {}


def _remember(entries: dict[str, Any]) -> None:
    """Best effort: a cache that cannot be written only means validating again next time."""
    f = _cache_file()
    if f is None:
        return
    try:
        tmp = f.with_name(f".{f.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(dict(list(entries.items())[-1024:]), out)
        os.replace(tmp, f)
    except OSError:
        pass


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


def listing(directory: Path | None = None, recheck: bool = False) -> dict:
    """`offload profiles`: the summary of every valid profile and the problems of the others."""
    profs, problems = load(directory, recheck=recheck)
    return {"profiles": summary_rows(profs), "problems": [asdict(pr) for pr in problems]}
