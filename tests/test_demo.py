"""`uact demo` end to end on real simulators; a second run reuses every finished stage."""

import json

import pytest
from support import CARDS

from unified_action.demo import DEMO_DATASETS, run_demo


@pytest.mark.slow
def test_demo_runs_and_reuses_stages(tmp_path):
    summary = run_demo(tmp_path, CARDS)
    assert set(summary) == {d.card for d in DEMO_DATASETS}
    assert all(v["invalid"] == 0 for v in summary.values())
    tokens = {v["embodiment_token"] for v in summary.values()}
    assert len(tokens) == len(DEMO_DATASETS)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and p.name != "summary.json"}
    again = run_demo(tmp_path, CARDS)
    assert again == json.loads((tmp_path / "summary.json").read_text()) == summary
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing recorded or registered again
