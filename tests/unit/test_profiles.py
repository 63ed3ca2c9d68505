"""Driver profiles: every shipped file validates; malformed ones are reported with file and field
and never stop the others from loading (example-based and property-based)."""

import copy
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offload.probe import profiles

REQUIRED = ("veth virtio_net tun netdevsim nfp mlx5_core mlx4_en ice i40e ixgbe ixgbevf igb igc bnxt_en ena gve "
            "hv_netvsc qede sfc nicvf mvneta mvpp2 mana vmxnet3 bonding").split()
# Drivers whose `ethtool -i` name differs from the common name: at least one of each group.
ALIASED = ({"st_gmac", "stmmac"}, {"fsl_dpaa2_eth", "dpaa2-eth", "dpaa2_eth"}, {"vif", "xen-netfront", "xen_netfront"})

GOOD = {
    "driver": "good", "summary": "a valid profile",
    "xdp": {"native": {"supported": True, "since": "5.10", "source": "drivers/net/good.c good_xdp()"},
            "zero_copy": {"supported": False}, "hw_offload": {"supported": False},
            "multi_buffer": {"supported": False}},
    "sources": ["drivers/net/good.c"],
}


def test_every_shipped_profile_validates(shipped_profiles):
    profs, problems = shipped_profiles
    assert problems == []
    missing = [d for d in REQUIRED if d not in profs]
    assert missing == []
    for group in ALIASED:
        assert group & set(profs), f"no profile for any of {group}"


def test_every_supported_fact_has_a_source(shipped_profiles):
    profs, _ = shipped_profiles
    for p in profs.values():
        for name, cap in p.data["xdp"].items():
            if cap["supported"]:
                assert cap.get("source"), f"{p.path}: xdp.{name}"
        for req in p.requirements:
            assert req["source"]


def test_hw_offload_only_where_mainline_has_it(shipped_profiles):
    profs, _ = shipped_profiles
    assert {d for d, p in profs.items() if p.capability("hw_offload")["supported"]} == {"nfp", "netdevsim"}


def test_malformed_yaml_names_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("driver: bad\nsummary: [unclosed\n")
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(GOOD))
    profs, problems = profiles.load(tmp_path)
    assert list(profs) == ["good"]
    (p,) = problems
    assert p.file.endswith("bad.yaml") and p.field.startswith("line ")


def test_unknown_and_wrong_fields_are_named(tmp_path):
    data = copy.deepcopy(GOOD)
    data["xdp"]["native"]["sincе"] = "5.10"          # a look-alike key
    data["xdp"]["zero_copy"]["supported"] = "yes"
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(data))
    _, problems = profiles.load(tmp_path)
    fields = {p.field for p in problems}
    assert "xdp.native" in fields and "xdp.zero_copy.supported" in fields
    assert any("sinc" in p.message for p in problems)


def test_driver_must_match_file_name(tmp_path):
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(GOOD))
    _, (p,) = profiles.load(tmp_path)
    assert p.field == "driver" and "other" in p.message


def test_supported_without_since_is_refused():
    data = copy.deepcopy(GOOD)
    del data["xdp"]["native"]["since"]
    problems = profiles.validate(data, "good.yaml")
    assert [p.field for p in problems] == ["xdp.native"] and "since" in problems[0].message


# ---- property-based ------------------------------------------------------------------------------

versions = st.builds(lambda a, b: f"{a}.{b}", st.integers(2, 7), st.integers(0, 20))
sources = st.text(string.ascii_letters + string.digits + " ./()_-", min_size=8, max_size=40)


@st.composite
def capability(draw):
    if draw(st.booleans()):
        return {"supported": True, "since": draw(versions), "source": draw(sources)}
    return {"supported": False}


@st.composite
def valid_profiles(draw):
    return {
        "driver": "good", "summary": draw(st.text(min_size=1, max_size=30)),
        "xdp": {k: draw(capability()) for k in ("native", "zero_copy", "hw_offload", "multi_buffer")},
        "sources": draw(st.lists(sources, min_size=1, max_size=3)),
    }


@settings(deadline=None)   # the first example pays for importing jsonschema (imported lazily)
@given(valid_profiles())
def test_generated_valid_profiles_parse(data):
    profile, problems = profiles.parse(yaml.safe_dump(data), "good.yaml")
    assert problems == [] and profile is not None and profile.data == data


JUNK = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _paths(d, prefix=()):
    for k, v in d.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from _paths(v, prefix + (k,))


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200, deadline=None)  # no timing asserts: this machine is shared
@given(valid_profiles(), st.data())
def test_any_corruption_is_reported_with_its_field(data, draw):
    corrupt = copy.deepcopy(data)
    path = draw.draw(st.sampled_from(sorted(_paths(corrupt))))
    parent = corrupt
    for k in path[:-1]:
        parent = parent[k]
    action = draw.draw(st.sampled_from(["junk", "delete", "extra"]))
    if action == "junk":
        new = draw.draw(JUNK)
        if new == parent[path[-1]]:
            return
        parent[path[-1]] = new
    elif action == "delete":
        del parent[path[-1]]
    else:
        parent["x_unknown"] = 1
    profile, problems = profiles.parse(yaml.safe_dump(corrupt), "good.yaml")
    if profiles.validator().is_valid(corrupt) and corrupt.get("driver") == "good":
        # e.g. junk that happens to be valid (a summary string, an optional key removed)
        assert problems == []
        return
    assert profile is None and problems
    for p in problems:
        assert p.file == "good.yaml" and p.field and p.message


@pytest.mark.parametrize("planted", ["writable by others", "another owner", "a link"])
def test_a_validation_cache_not_ours_alone_is_not_trusted(tmp_path, monkeypatch, planted):
    """The cache remembers what each validated profile parsed to: one someone else could write
    would feed the mode decisions whatever it likes. Ours alone is used; anything else is not."""
    import json
    import os

    from offload import data

    monkeypatch.setenv(data.ENV_CACHE, str(tmp_path / "cache"))
    profiles.load()                                                   # validates, and remembers
    cache = tmp_path / "cache" / "validated-profiles.json"
    entries = json.loads(cache.read_text())
    for entry in entries.values():
        if entry and entry["driver"] == "veth":
            entry["xdp"]["native"]["since"] = "0.1"                     # a forged fact
    cache.write_text(json.dumps(entries))
    assert profiles.load()[0]["veth"].data["xdp"]["native"]["since"] == "0.1"   # ours: read as validated
    if planted == "writable by others":
        cache.chmod(0o666)
    elif planted == "another owner":
        os.chown(cache, 65534, 65534)
    else:
        cache.rename(tmp_path / "elsewhere.json")
        cache.symlink_to(tmp_path / "elsewhere.json")
    assert profiles.load()[0]["veth"].data["xdp"]["native"]["since"] != "0.1"   # validated afresh
