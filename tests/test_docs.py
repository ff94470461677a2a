"""The documents show what the benchmarks measured."""

from __future__ import annotations

import pytest

from conftest import ROOT

RESULTS = ROOT / "benchmarks" / "results" / "detection.md"
DOCS = (ROOT / "README.md", ROOT / "docs" / "observability.md")  # benchmarks/detection.py writes these three
BEGIN, END = "<!-- detection:begin -->", "<!-- detection:end -->"


def block(text: str) -> str:
    assert BEGIN in text and END in text
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_the_detection_table_is_the_benchmarks(doc):
    """`python -m benchmarks detection` writes all three; a document edited alone would tell another story."""
    assert block(doc.read_text(encoding="utf-8")) == block(RESULTS.read_text(encoding="utf-8"))
