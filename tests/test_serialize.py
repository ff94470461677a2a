"""The YAML writer: the block layout written in Python gives libyaml's bytes, whatever the data."""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from compiler import serialize

from conftest import ROOT

WORDS = ["yes", "no", "on", "off", "y", "N", "null", "Null", "~", "true", "False", "1e3", "0o17", "0x1F", "1_000",
         "12:30:00", "2001-12-14", ".inf", "-.Inf", ".nan", "<<", "=", "---", "...", "--- a", "... b", "-", "- a",
         "?", "? a", ":", "a:", "a: b", "a #b", "a#b", "#a", "'a'", '"a"', "a'b", 'a"b', "a\\b", "{a}", "[a]",
         "a, b", "&a", "*a", "!a", "|a", ">a", "%a", "@a", "`a", " a", "a ", "", "1.0", "-5", "+5", "0", "007",
         "a\nb", "a\n", "a\n\n", "\na", " a\nb", "a \nb", "a\n\n\nb\n", "a\tb", "é", "é: x", "a\x85b", "a\u2028b",
         "\ufeffa", "a\x00b", "a\x7fb", "sum(rate(x{a=\"b\"}[5m])) > 0.1", "http://x:80/a?b=c#d", "x" * 130]
CHARS = st.sampled_from(list("ab -:#'\"\\{}[],&*!|>%@`?\n\t.e+_/=~0123456789") + ["é", "\x85", "\u2028", "\ufeff",
                                                                                   "\x00", "€", "\U0001f600"])
STRINGS = st.one_of(st.sampled_from(WORDS), st.text(CHARS, max_size=12))
SCALARS = st.one_of(STRINGS, st.integers(-10**20, 10**20), st.booleans(), st.none(),
                    st.floats(allow_nan=True, allow_infinity=True))
KEYS = st.one_of(st.sampled_from(["name", "kind", "n", "yes", "a b", "a: b", "x" * 127, "x" * 129, "", "é"]),
                 STRINGS, st.integers(0, 3))
DATA = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.lists(inner, max_size=3).map(tuple),
    st.dictionaries(KEYS, inner, max_size=4)), max_leaves=25)


def both(docs: list, multi: bool) -> tuple[str, str]:
    return serialize.yaml_text(docs if multi else docs[0], multi=multi), serialize._libyaml(docs, multi)


@settings(max_examples=600, deadline=None)
@given(DATA)
def test_any_document_is_written_as_libyaml_writes_it(data):
    fast, reference = both([data], False)
    assert fast == reference


@settings(max_examples=150, deadline=None)
@given(st.lists(DATA, min_size=1, max_size=3))
def test_any_documents_are_written_as_libyaml_writes_them(docs):
    fast, reference = both(docs, True)
    assert fast == reference


LONG_TEXT = st.lists(st.sampled_from(["a", "b c", "", "  d", "x" * 300, "e:", "- f"]), min_size=2, max_size=8).map(
    "\n".join)


# block_yaml declines many of the drawn blocks (those are written whole): many draws are filtered out.
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.dictionaries(KEYS, DATA, max_size=3), st.dictionaries(KEYS, st.one_of(DATA, LONG_TEXT), min_size=1,
                                                                  max_size=4))
def test_a_block_written_once_nests_as_libyaml_writes_it_nested(outer, inner):
    """The rules of a PrometheusRule are written once, for rules.yaml, and nested under ``spec``."""
    block = serialize.block_yaml(inner)
    nested = serialize.nested_yaml({k: v for k, v in outer.items() if k != "spec"}, "spec", block, "a header") \
        if block is not None else None
    assume(nested is not None)  # what libyaml writes alone is written whole
    whole = {**{k: v for k, v in outer.items() if k != "spec"}, "spec": inner}
    assert nested == serialize.comment("a header") + serialize._libyaml([whole], False)


def test_every_scalar_of_the_word_list_in_every_position():
    for word in WORDS:
        for data in ({"k": word}, [word], {"k": [word]}, [{"k": word}], {"a": {"b": [[word, {"c": word}]]}},
                     {word: 1}, [[word]], {"k": {word: [word]}}):
            fast, reference = both([data], False)
            assert fast == reference, (word, data)
            assert yaml.safe_load(fast) == data


def test_the_fast_layout_covers_what_the_targets_write():
    """Every generated YAML file of the repository re-written both ways; nearly all take the fast layout."""
    files = sorted((ROOT / "generated").rglob("*.yaml"))
    assert files
    fast_docs = 0
    for path in files:
        docs = serialize.read_yaml(path.read_text())
        for doc in docs:
            fast, reference = both([doc], False)
            assert fast == reference, path
            try:
                serialize._block_documents([doc], False)
                fast_docs += 1
            except serialize._Unusual:
                pass
    assert fast_docs >= 0.95 * sum(len(serialize.read_yaml(p.read_text())) for p in files)


def test_floats_keep_their_yaml_spelling():
    for value in (1.5, 1e20, 1e-7, -0.0, math.inf, -math.inf, math.nan, 3.0):
        fast, reference = both([{"v": value}], False)
        assert fast == reference


def test_root_scalars_and_empty_roots_are_left_to_libyaml():
    assert serialize.yaml_text("plain") == serialize._libyaml(["plain"], False)
    assert serialize.yaml_text({}) == "{}\n"


def test_a_kept_final_newline_and_a_long_key_are_left_to_libyaml():
    assert serialize.yaml_text({"k": "a\n\n"}) == "k: |+\n  a\n\n...\n"
    key = "k" * 129
    assert serialize.yaml_text({key: 1}) == f"? {key}\n: 1\n"


def test_read_back_everywhere(tmp_path: Path):
    data = {"a": ["x: y", "#c", {"b": "é\nz"}], "c": "multi\nline\n"}
    text = serialize.yaml_text(data)
    assert yaml.safe_load(text) == data
