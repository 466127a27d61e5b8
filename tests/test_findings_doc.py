"""docs/findings.md is generated from the committed study records, never edited by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab.report.findings_doc import write_findings

ROOT = Path(__file__).resolve().parents[1]


def test_committed_findings_regenerate_from_the_committed_records(tmp_path: Path, monkeypatch) -> None:
    if not any((ROOT / "studies").glob("*/study.json")):
        pytest.skip("no study records are committed yet")
    doc = ROOT / "docs" / "findings.md"
    assert doc.is_file(), "studies/ holds records but docs/findings.md is missing: run `tunelab findings`"
    monkeypatch.chdir(ROOT)  # the sweep files and records resolve as in a checkout
    monkeypatch.delenv("TUNELAB_STUDIES_DIR", raising=False)
    out = tmp_path / "findings.md"
    write_findings(ROOT / "studies", out, pages=False)
    assert out.read_text() == doc.read_text(), (
        "docs/findings.md differs from what its records give: regenerate it with `tunelab findings`")
