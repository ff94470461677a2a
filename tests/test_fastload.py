"""The loader's fast path (libyaml's parser) and its full one (ruamel.yaml) read every document alike: the same
data, the same positions of every key and value, and the same refusals (a duplicate key, a YAML 1.1 literal)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler.diagnostics import SpecError
from compiler.spec import fastload, load
from conftest import ROOT

CORPUS = sorted({*ROOT.glob("specs/*.yaml"), *ROOT.glob("tests/golden/*.yaml"), *ROOT.glob("tests/validate/*/*.yaml")})


class Refused(str):
    """The full loader's error message."""


def both(text: str) -> tuple[object, object]:
    """(fast path's reading or "declined", full loader's reading or its :class:`Refused` message)."""
    try:
        fast: object = fastload.load(text, load.MAX_WRITTEN_NODES, load.MAX_DEPTH)
    except fastload.Decline:
        fast = "declined"
    try:
        full: object = load.parse_text(text, "doc.yaml")
    except SpecError as exc:
        full = Refused(exc.diagnostics[0].message)
    return fast, full


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_fast_path_reads_every_example_as_the_full_loader_does(path: Path):
    try:
        text = load.decode(path.read_bytes(), str(path))
    except SpecError:
        return
    fast, full = both(text)
    if fast != "declined":
        assert fast == full


def test_most_examples_take_the_fast_path():
    taken = sum(both(load.decode(p.read_bytes(), str(p)))[0] != "declined" for p in CORPUS[:40]
                if not p.name.startswith("bad"))
    assert taken >= 20


@pytest.mark.parametrize("text", [
    "a: 1\na: 2\n",                   # a duplicate key
    "a: yes\n",                       # YAML 1.1 boolean, refused or read as a string alike
    "a: 0o17\nb: 017\nc: 1_000\n",    # octal, leading zeros, underscores
    "a: &x 1\nb: *x\n",               # an alias
    "a: !!str 5\n",                   # an explicit tag
    "%YAML 1.1\n---\na: 1\n",         # a directive
    "a: 1\n---\nb: 2\n",              # two documents
    "a: .inf\nb: -.Inf\nc: .nan\n",   # special floats
    "a: 2024-05-01\n",                # a date
    "a: '1'\nb: \"x\\ty\"\n",        # quoted scalars
])
def test_refusals_and_edge_cases_are_the_same_on_both_paths(text: str):
    fast, full = both(text)
    if fast == "declined":
        return  # the full loader decides alone
    assert not isinstance(full, Refused), full
    data_fast, data_full = fast[0], full[0]  # type: ignore[index]
    assert _same(data_fast, data_full)


def test_a_duplicate_key_is_refused_by_both_paths_where_it_stands():
    with pytest.raises(SpecError) as caught:
        load.load_bytes(b"apiVersion: x\nkind: Rollout\nkind: Other\n", "dup.yaml")
    (d,) = caught.value.diagnostics
    assert (d.line, "duplicate" in d.message.lower()) == (3, True)
    assert both("a: 1\na: 2\n")[0] == "declined"


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


SCALARS = st.one_of(
    st.sampled_from(["yes", "no", "on", "off", "y", "n", "true", "False", "null", "~", "", "1e3", "0x1F", "0o17",
                     "017", "1_000", "1:30", ".5", "-.inf", ".NaN", "2024-05-01", "12:30:00", "#x", "a #b", "- x",
                     "[a]", "{a: 1}", "'q'", '"d"', "%x", "@x", "`x`", "!tag", "&anchor", "*alias", "|", ">"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_characters="\x7f"),
            max_size=12),
    st.integers(min_value=-10**12, max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.none(),
)
DOCS = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(alphabet="abcxyz_-", min_size=1, max_size=6), inner,
                                                 max_size=4)), max_leaves=20)


@given(doc=st.dictionaries(st.text(alphabet="abcdefgh_", min_size=1, max_size=8), DOCS, min_size=1, max_size=5),
       flow=st.booleans())
def test_generated_documents_read_alike_on_both_paths(doc, flow):
    from ruamel.yaml import YAML
    import io

    yaml = YAML(typ="rt")
    yaml.default_flow_style = flow
    buffer = io.StringIO()
    yaml.dump(doc, buffer)
    fast, full = both(buffer.getvalue())
    if fast != "declined":
        assert not isinstance(full, Refused), (buffer.getvalue(), full)
        assert _same(fast[0], full[0]) and fast[1:] == full[1:]  # type: ignore[index]
