"""`uact eval` end to end through the console entry point, on the default held-out split."""

from __future__ import annotations

import json

import pytest
from support import run_cli as run
from support import tree_digest

from unified_action.evaluation.rollouts import episode_of


@pytest.mark.slow
def test_eval_command(monkeypatch, capsys, evalsetup, tmp_path):
    s = evalsetup
    monkeypatch.setenv("UACT_TOKENIZERS", str(s["registry"].root))  # --registry resolved as every command does
    out = tmp_path / "eval"
    code, stdout, err = run(monkeypatch, capsys, "eval", "--model", s["export"], "--data", s["carracing"].root,
                            "--horizon", 5, "--clips", 2, "--steps", 1, "--out", out)
    assert code == 0, err
    assert "carracing" in stdout and "copy-last PSNR" in stdout and "dPSNR" in stdout and f"report: {out / 'report.html'}" in stdout
    m = json.loads((out / "metrics.json").read_text())["datasets"]["carracing"]
    assert m["episodes"] == [4, 5] and m["clips"] == 2  # default: the last 20% of 5 episodes
    assert all(episode_of(k) == "4" for k in m["keys"])
    # one held-out episode: the counterfactual actions come from another episode of the dataset, and it says so
    assert all(episode_of(k) != "4" for k in m["counterfactual_keys"]) and m["notes"]
    assert all(v is not None for v in m["per_step"]["dpsnr"]) and len(m["per_step"]["dpsnr"]) == 5


@pytest.mark.slow
def test_eval_command_errors(monkeypatch, capsys, evalsetup, tmp_path):
    s = evalsetup
    base = ["eval", "--model", s["export"], "--registry", s["registry"].root, "--out", tmp_path / "eval"]
    code, _, err = run(monkeypatch, capsys, *base, "--data", s["ale_pong"].root)
    assert code == 2 and "'ale_pong'" in err and "not trained with" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(monkeypatch, capsys, *base, "--data", s["carracing"].root, "--episodes", "3-5")
    assert code == 2 and err.strip() == "error: --episodes: expected 'lo:hi' (episodes lo..hi-1 in manifest order), got '3-5'"
    code, _, err = run(monkeypatch, capsys, *base, "--data", s["carracing"].root, "--episodes", "4:9")
    assert code == 2 and "episodes: [4, 9)" in err and "5 episodes" in err
    assert not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_eval_never_deletes_what_is_not_its_report(monkeypatch, capsys, evalsetup, tmp_path):
    """-o a user's folder, the evaluated dataset, the model or the registry: refused in one line before any rollout,
    the tree byte-identical; an earlier report is replaced."""
    s = evalsetup
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file")
    (mine / "metrics.json").write_text("{}")  # one name like ours does not make the folder ours
    base = ["eval", "--model", s["export"], "--registry", s["registry"].root, "--data", s["carracing"].root,
            "--horizon", 2, "--clips", 1]
    for out in (mine, s["carracing"].root, s["export"], s["registry"].root, s["carracing"].root.parent):
        before = tree_digest(s["carracing"].root.parent), tree_digest(tmp_path), tree_digest(s["export"])
        code, stdout, err = run(monkeypatch, capsys, *base, "--out", out)
        assert code == 2 and len(err.strip().splitlines()) == 1 and str(out) in err, (out, err)
        assert "Traceback" not in err and "report:" not in stdout
        assert (tree_digest(s["carracing"].root.parent), tree_digest(tmp_path), tree_digest(s["export"])) == before
    report = tmp_path / "report"
    assert run(monkeypatch, capsys, *base, "--out", report)[0] == 0
    first = tree_digest(report)
    code, _, err = run(monkeypatch, capsys, *base, "--out", report, "--seed", 1)
    assert code == 0, err
    assert tree_digest(report).keys() == first.keys() and not report.with_name("report.tmp").exists()
