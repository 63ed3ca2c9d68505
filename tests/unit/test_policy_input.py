"""Hostile policy input: bounded reads, UTF-8, no aliases, duplicate keys, short messages, and a
property test that any document either parses or raises PolicyError, quickly."""

import os
import time
from datetime import timedelta

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offload.orchestrate import policy
from offload.orchestrate.policy import MAX_BYTES, PolicyError, load, parse

RULE = "rules:\n  - name: x\n    match: {interfaces: [a*]}\n    program: count_drop\n"


def refused(text: str) -> str:
    with pytest.raises(PolicyError) as e:
        parse(text, "p.yaml")
    assert len(e.value.message) < 400, e.value.message
    return e.value.message


def test_a_policy_at_the_limit_is_read_one_byte_over_is_refused(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(RULE + "#" * (MAX_BYTES - len(RULE) - 1) + "\n")
    assert [r.name for r in load(f).rules] == ["x"]
    f.write_text(RULE + "#" * (MAX_BYTES - len(RULE)) + "\n")
    with pytest.raises(PolicyError, match=r"p\.yaml is larger than 1048576 bytes"):
        load(f)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("make,kind", [
    (lambda d: "/dev/zero", "a character device"),
    (lambda d: os.mkfifo(d / "fifo") or d / "fifo", "a FIFO"),    # no writer: opening must not wait
    (lambda d: d, "a directory"),
])
def test_non_regular_files_are_refused_without_reading(tmp_path, make, kind):
    path = make(tmp_path)
    with pytest.raises(PolicyError, match=f"{path} is not a regular file \\({kind}\\)"):
        load(path)


def test_not_utf8_names_file_and_byte_offset(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_bytes(RULE.encode() + b"# caf\xe9\n")
    with pytest.raises(PolicyError, match=f"{f}: not UTF-8 text: invalid byte 0xe9 at byte offset {len(RULE) + 5}"):
        load(f)


def test_missing_file():
    with pytest.raises(PolicyError, match="cannot read policy /nonexistent/p.yaml: No such file") as e:
        load("/nonexistent/p.yaml")
    assert e.value.hint == "check the path"


def test_missing_relative_file_says_where_it_was_looked_for(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    with pytest.raises(PolicyError) as e:
        load("../p.yaml")
    assert e.value.message == f"cannot read policy ../p.yaml: No such file or directory ({tmp_path / 'p.yaml'})"
    assert "relative paths are taken from the current directory" in e.value.hint


def test_alias_bomb_is_refused_at_once():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9))
    started = time.monotonic()
    assert "p.yaml:line 1, column 4: not valid YAML: YAML anchors and aliases" in refused(bomb)
    # Not a speed: walking the expanded document is 9**10 (3.5e9) nodes, hours of work, where the
    # refusal takes milliseconds; 60 s tells them apart on any machine, however loaded.
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("text,needle", [
    (RULE + "  - name: y\n    match: &m {interfaces: [b]}\n    program: count_drop\n", "line 6, column 12:"),  # anchor
    (RULE.replace("program: count_drop", "program: *p"), "line 4, column 14:"),                       # alias alone
    ("rules: []\nx: {<<: {a: 1}}\n", "line 2, column 5: not valid YAML: YAML merge keys"),
    ("rules: !!timestamp x\n", "line 1, column 8: not valid YAML: YAML tags"),
    ("rules: " + "[" * 200 + "]" * 200 + "\n", "nested more than"),
    ("rules: [a,\n  2024-02-30]\n", "line 2, column 3: not valid YAML: day is out of range"),
    ("a: 1\n---\nb: 2\n", "line 2, column 1: not valid YAML: expected a single document"),
    ("rules: [\x00]\n", "not valid YAML: control characters are not allowed"),
    ("rules: \ud800\n", "not valid Unicode text at character 7"),
])
def test_yaml_features_policies_do_not_need_are_refused_with_the_line(text, needle):
    assert needle in refused(text)


@pytest.mark.parametrize("text,line,key", [
    ("rules: []\nrules: []\n", "2, column 1", "rules"),
    (RULE + "    program: count_pass\n", "5, column 5", "program"),
    (RULE.replace("{interfaces: [a*]}", "{interfaces: [a*], interfaces: [b*]}"), "3, column 31", "interfaces"),
    (RULE + "    params: {target: a,\n             target: b}\n", "6, column 14", "target"),
])
def test_duplicate_keys_are_an_error_with_file_and_line(text, line, key):
    assert f"p.yaml:line {line}: not valid YAML: duplicate key {key!r} (first at line" in refused(text)


def test_messages_never_echo_a_huge_value():
    assert f"rules: {'a' * 40 + '…'!r} is not of type 'array'" in refused("rules: " + "a" * 500_000 + "\n")
    assert f"({'x' * 40}…): program not found" in refused(
        RULE.replace("name: x", "name: " + "x" * 100_000).replace("count_drop", "nosuch"))
    assert "1 is not of type 'object' (and many more)" in refused("rules: [" + "1, " * 50_000 + "]\n")


def test_parse_refuses_oversized_text():
    assert "the limit is 1048576" in refused("#" * (MAX_BYTES + 1))


# Documents built from YAML's own syntax and the policy's words, so that the examples reach deep
# into the parser and the schema, not only the scanner's first error.
FRAGMENTS = ["rules:", "\n", "  ", "- ", "name: ", "match: ", "program: ", "params: ", "mode: ", "exclude: ",
             "interfaces: ", "drivers: ", "pci: ", "kinds: ", "capabilities: ", "prefer: ", "min: ", "count_drop",
             "filter", "prefixes: ", "10.0.0.0/8", "hw", "native", "auto", "{", "}", "[", "]", ", ", ": ", "? ",
             "&a ", "*a", "!!int ", "!x ", "<<: ", "'", '"', "# c", "---", "...", "|", ">", "2024-02-30", "1e999",
             "0x1F", "~", "null", "true", "\t", "\x00", "\ufeff", "%YAML 1.1\n", "\\", "é", "x" * 50]
yamlish = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=60).map("".join)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.sampled_from(
    ["count_drop", "filter", "nosuch", "a*", "native", "generic", "hw", "auto", "8086:159b", "basic"])
keys = st.sampled_from(["rules", "name", "match", "program", "params", "mode", "exclude", "interfaces",
                        "drivers", "pci", "kinds", "capabilities", "prefer", "min", "prefixes", "target"]) | scalars
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    keys, inner, max_size=5), max_leaves=30)
dumped = documents.map(lambda d: yaml.safe_dump({"rules": d} if not isinstance(d, dict) else d))


# deadline: a catastrophic parse (an exponential walk) of these small documents would take far longer
# than 10 s, while a loaded machine can stretch a millisecond parse past 1 s
@settings(max_examples=300, deadline=timedelta(seconds=10), suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(yamlish, dumped, st.text(max_size=200)))
def test_any_document_parses_or_raises_policy_error(text):
    try:
        pol = parse(text, "p.yaml")
    except PolicyError as e:
        assert e.message.startswith("p.yaml") and len(e.message) < 600
    else:
        assert isinstance(pol, policy.Policy)


def test_room_in_the_blocklist_is_counted_per_family_before_any_write():
    from offload.errors import UsageError
    from offload.load.filter import MAX_ENTRIES, _check_room, _key, parse_prefixes

    full = [f"10.{i >> 8}.{i & 255}.0/24" for i in range(MAX_ENTRIES)]
    present = {4: {_key(n) for n in parse_prefixes(full[:-1])}, 6: set()}
    _check_room(present, parse_prefixes([full[-1], full[0], "2001:db8::/32"]))   # exactly full; v6 apart
    with pytest.raises(UsageError, match=f"2 new IPv4 prefixes on top of the {MAX_ENTRIES - 1} blocked would "
                                         f"make {MAX_ENTRIES + 1}"):
        _check_room(present, parse_prefixes([full[-1], "192.0.2.0/24"]))


def test_excerpt_is_short_and_quoted():
    from offload.errors import excerpt

    assert excerpt("abc") == "'abc'" and excerpt("x" * 41) == repr("x" * 40 + "…")
    assert excerpt("a\nb" * 100, 3) == repr("a\nb…")


SHADOW = "root:$y$j9T$SALT$SECRETHASH:19800:0:99999:7:::\ndaemon:*:19800:0:99999:7:::\n"


@pytest.mark.parametrize("text", [
    SHADOW,                                   # a mapping of odd keys: jsonschema listed every one
    SHADOW.replace(":::\n", "\n"),            # one folded multi-line string
    "rules: 1\n" + SHADOW,                    # a policy-ish top level: at most a 40-character excerpt
    "a: [\n" + "SECRET " * 100 + "\n",        # a YAML error: PyYAML's str() quotes the lines around it
    "a: b\n\t" + "SECRET",
])
def test_messages_quote_nothing_of_a_file_beyond_a_short_excerpt(text):
    msg = refused(text)
    assert not any(text[i:i + 41] in msg for i in range(len(text) - 40)), msg
    assert "daemon" not in msg and ("SECRET" not in msg or text.startswith("rules:")), msg


def test_schema_messages_cut_the_values_they_quote():
    msg = refused(RULE + "    mode: {prefer: " + "z" * 1000 + "}\n")
    assert f"{'z' * 40 + '…'!r} is not one of" in msg
    msg = refused(RULE + "    " + "k" * 1000 + ": 1\n    other: 2\n")
    assert f"Additional properties are not allowed ({'k' * 40 + '…'!r} was unexpected; and 1 more)" in msg
