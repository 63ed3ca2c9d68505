"""The shipped schemas are complete: every list of modes is generated from probe.mode, the files in
the checkout are what the generator writes, and a validator that knows nothing of offload accepts
the DaemonSet's own policy with them."""

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from lib.helpers import ROOT

from offload.probe import mode, schemagen

SCHEMAS = ROOT / "offload" / "schemas"
FILES = sorted(SCHEMAS.glob("*.schema.json"))
WORDS = {*mode.CHOICES}


def nodes(x, where="#"):
    if isinstance(x, dict):
        yield where, x
        for k, v in x.items():
            yield from nodes(v, f"{where}/{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from nodes(v, f"{where}/{i}")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_file_on_disk_is_the_generated_one(path: Path):
    text = path.read_text()
    assert schemagen.render(text, schemagen.vocabularies()) == text, \
        f"{path.name} differs from what probe/schemagen.py generates: run `python -m offload.probe.schemagen`"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_list_of_modes_is_marked_and_no_enum_is_empty(path: Path):
    schema = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    for where, node in nodes(schema):
        if "enum" in node:
            assert node["enum"], f"{path.name} {where}: an empty enum accepts nothing"
            if WORDS & {v for v in node["enum"] if isinstance(v, str)}:
                assert schemagen.KEY in node, f"{path.name} {where}: modes listed by hand; mark it {schemagen.KEY}"
        if isinstance(node.get("properties"), dict) and set(node["properties"]) == set(mode.MODES):
            assert node.get(schemagen.KEY) == "MODES", f"{path.name} {where}: keyed by mode by hand"


def test_the_vocabulary_decides_what_is_generated():
    """A mode added to the vocabulary reaches every marked place (the generator is not a no-op)."""
    vocab = schemagen.vocabularies()
    vocab = {k: [*v, "xyz"] for k, v in vocab.items()}
    policy = schemagen.fill(json.loads((SCHEMAS / "policy.schema.json").read_text()), vocab)
    assert policy["$defs"]["mode"]["properties"]["prefer"]["enum"] == ["auto", "hw", "native", "generic", "xyz"]
    assert policy["$defs"]["mode"]["properties"]["min"]["enum"] == ["hw", "native", "generic", "xyz"]
    probe = schemagen.fill(json.loads((SCHEMAS / "probe.schema.json").read_text()), vocab)
    modes = probe["properties"]["interfaces"]["items"]["properties"]["modes"]
    assert modes["required"] == ["hw", "native", "generic", "xyz"] and modes["properties"]["xyz"] == modes["properties"]["hw"]
    apply = schemagen.fill(json.loads((SCHEMAS / "apply.schema.json").read_text()), vocab)
    assert any(n.get("enum") == ["hw", "native", "generic", "xyz", None] or n.get("enum") == [*vocab["MODES"]]
               for _, n in nodes(apply))


def test_bad_markers_are_refused():
    with pytest.raises(ValueError, match="unknown vocabulary 'MODEZ'"):
        schemagen.fill({"enum": [], schemagen.KEY: "MODEZ"}, schemagen.vocabularies())
    with pytest.raises(ValueError, match="one shape for every mode"):
        schemagen.fill({"type": "object", "properties": {"hw": {}, "native": {"type": "string"}},
                        schemagen.KEY: "MODES"}, schemagen.vocabularies())


def test_nullable_enum_keeps_its_null():
    node = schemagen.fill({"enum": ["hw", None], schemagen.KEY: "MODES"}, schemagen.vocabularies())
    assert node["enum"] == ["hw", "native", "generic", None]


def test_generate_rewrites_only_what_differs(tmp_path):
    good = tmp_path / "a.schema.json"
    good.write_text(schemagen.render(json.dumps({"enum": ["hw"], schemagen.KEY: "MODES"}), schemagen.vocabularies()))
    stale = tmp_path / "b.schema.json"
    stale.write_text(json.dumps({"enum": [], schemagen.KEY: "CHOICES"}))
    assert schemagen.generate(tmp_path, schemagen.vocabularies()) == [stale]
    assert json.loads(stale.read_text())["enum"] == ["auto", "hw", "native", "generic"]


def configmap_policy() -> dict:
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "offload-watch.yaml").read_text()))
    (cm,) = [d for d in docs if d and d["kind"] == "ConfigMap"]
    return yaml.safe_load(cm["data"]["policy.yaml"])


def test_an_outside_validator_accepts_the_daemonsets_policy():
    """jsonschema alone, with the file as shipped: nothing of offload fills it in first."""
    schema = json.loads((SCHEMAS / "policy.schema.json").read_text())
    policy = configmap_policy()
    jsonschema.Draft202012Validator(schema).validate(policy)
    bad = copy.deepcopy(policy)
    bad["rules"][0]["mode"] = {"prefer": "best"}
    with pytest.raises(jsonschema.ValidationError, match="'best' is not one of \\['auto', 'hw', 'native', 'generic'\\]"):
        jsonschema.Draft202012Validator(schema).validate(bad)


def test_policy_errors_name_modes_plainly(tmp_path):
    from offload.orchestrate import policy
    from offload.orchestrate.policy import PolicyError

    f = tmp_path / "p.yaml"
    f.write_text("rules:\n  - name: a\n    match: {interfaces: [x]}\n    program: pass\n    mode: {min: best}\n")
    with pytest.raises(PolicyError) as e:
        policy.load(str(f))
    assert "'hw', 'native', 'generic'" in str(e.value) and "Mode." not in str(e.value)
