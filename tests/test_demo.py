"""`uact demo` end to end on real simulators (a small plan): every stage runs, and a second run reuses them all."""

import dataclasses
import json

import pytest
import torch
from support import CARDS, run_cli, tree_digest

from unified_action.demo import MARKER, DemoDataset, DemoPlan, _ds_json, claim_output, heldout_split, run_demo
from unified_action.tokenization import Registry

SMALL = DemoPlan(
    pretrain=(DemoDataset("gym_pusht", 3, 30), DemoDataset("ale_pong", 3, 30), DemoDataset("carracing", 3, 30)),
    heldout=DemoDataset("metaworld_pick_place", 4, 90, style="waypoint"), shots=2, image_size=32,  # 11 frames at its stride 8
    future_frames=2, micro_batch=2, pretrain_steps=4, finetune_steps=3, model_overrides={"depth": 1},
    eval_horizon=3, eval_clips=2, new_embodiment_init="unchanged")  # Meta-World shares no slot with Push-T, Pong, CarRacing


def test_heldout_split_matches_the_evaluation_default():
    assert heldout_split(10) == ((0, 8), (8, 10))
    assert heldout_split(3) == ((0, 2), (2, 3))


def test_demo_refuses_a_directory_it_did_not_write(tmp_path, monkeypatch, capsys):
    """It would write beside a user's files, train with their zero1.json and replace a report: refused in one line,
    before anything is written; a new or empty directory (or a demo's, marked) is taken."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "zero1.json").write_text('{"zero_optimization": {"stage": 3}, "train_batch_size": 4096}')
    (mine / "thesis.tex").write_text("a user's file")
    (tmp_path / "file").write_text("x")
    for out in (mine, tmp_path / "file"):
        before = tree_digest(tmp_path)
        code, _, err = run_cli(monkeypatch, capsys, "demo", "--out", out, "--cards", CARDS)
        assert code == 2 and len(err.strip().splitlines()) == 1 and str(out) in err and "Traceback" not in err, err
        assert tree_digest(tmp_path) == before
    claim_output(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    claim_output(tmp_path / "empty")
    assert (tmp_path / "new" / MARKER).is_file() and (tmp_path / "empty" / MARKER).is_file()
    (tmp_path / "new" / "thesis.tex").write_text("the user's, in the demo's directory")
    claim_output(tmp_path / "new")  # marked: the demo's, whatever else is there
    # a demo's DeepSpeed config is its own: an edited one is written again, never trained with
    (tmp_path / "new" / "zero1.json").write_text('{"zero_optimization": {"stage": 3}}')
    assert json.loads(_ds_json(tmp_path / "new").read_text()) == {"zero_optimization": {"stage": 1}}


def test_the_demo_plans_clip_stride_reaches_the_loader_of_its_jobs(tmp_path):
    """DemoPlan.clip_stride (`uact demo --clip-stride`) is every job's data.clip_stride, and the loader cuts clips that
    many steps apart; unset, the loader's default (half a clip's span) stays."""
    from data.conftest import record

    from unified_action.data.loader import ClipLoader
    from unified_action.demo import _job
    from unified_action.training.trainer import loader_config

    car = record(tmp_path / "data" / "carracing", "carracing", episodes=1, steps=40, seed=3)  # chunks of 5 steps
    Registry(tmp_path / "tokenizers").register(car.card, list(car.iter_actions()))
    span = (SMALL.context_frames + SMALL.future_frames) * 5
    for stride in (None, 3):
        cfg = _job(dataclasses.replace(SMALL, clip_stride=stride), tmp_path, "pretrain", [{"path": str(car.root)}], 2, 1e-3)
        assert cfg.data.clip_stride == stride
        plan = ClipLoader(loader_config(cfg), rank=0, world_size=1).plans[0]
        starts = sorted(s for items in plan.items for _, s in items)
        assert starts == list(range(0, 40 - span + 1, stride or span // 2))


@pytest.mark.slow
def test_demo_runs_every_stage_and_reuses_them(tmp_path):
    summary = run_demo(tmp_path, CARDS, SMALL)
    names = {"gym_pusht", "ale_pong", "carracing", "metaworld_pick_place"}
    assert set(summary["metrics"]) == names
    assert all(m["psnr"] is not None and m["baseline_psnr"] is not None for m in summary["metrics"].values())
    for m in summary["metrics"].values():  # the margin over copy-last at each horizon step, and the truth's figures
        assert len(m["margin_per_step"]) == SMALL.eval_horizon and {"cf_psnr", "action_accuracy"} <= set(m)
    assert set(summary["forgetting_db"]) == names - {"metaworld_pick_place"} and summary["seconds"] > 0
    assert set(summary["finetuned_metrics"]) == names

    # one vocabulary: four embodiments, and the pretrained three kept their ids through the few-shot registration
    pre = json.loads((tmp_path / "pretrain/export/config.json").read_text())
    tuned = json.loads((tmp_path / "finetune_lora/export/config.json").read_text())
    assert set(pre["tokenizers"]) == names - {"metaworld_pick_place"} and set(tuned["tokenizers"]) == names
    # on CPU pretrained by `uact pretrain --nproc 2`; a GPU machine trains it in one process
    assert SMALL.pretrain_procs == 2
    assert pre["trained"]["run"]["world_size"] == (1 if torch.cuda.is_available() else 2)
    assert all(tuned["embodiments"][n] == pre["embodiments"][n] and tuned["tokenizers"][n] == pre["tokenizers"][n]
               for n in pre["tokenizers"])
    assert tuned["trained"]["run"]["finetune"]["episodes"] == 2
    assert len(Registry(tmp_path / "tokenizers").names()) == 4

    # pretraining never saw the held-out episodes: the registry fitted each tokenizer on the training episodes only
    metrics = json.loads((tmp_path / "report/metrics.json").read_text())
    assert {n: tuple(r["episodes"]) for n, r in metrics["datasets"].items()} == {n: (2, 3) for n in names - {"metaworld_pick_place"}} | {"metaworld_pick_place": (3, 4)}
    html = (tmp_path / "report/report.html").read_text()
    assert html.count("data:image/png;base64,") >= 8 and all(n in html for n in names)
    assert "Side by side" in html and metrics["reference"]["label"] == "pretrained"  # the pretrained model beside it
    # both evaluations say what their rollouts were run with
    assert metrics["rollout"] == metrics["reference"]["rollout"] == {
        "context_frames": 2, "horizon": 3, "clips": 2, "sampling_steps": 1, "guidance": SMALL.guidance,
        "min_change": SMALL.min_change, "seed": 0}

    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and p.name != "summary.json"}
    again = run_demo(tmp_path, CARDS, SMALL)
    assert {**again, "seconds": 0} == {**summary, "seconds": 0}
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing recorded, trained or evaluated again

    # other rollout settings: only the evaluation runs again (its report would otherwise be stale), not the training
    changed = run_demo(tmp_path, CARDS, dataclasses.replace(SMALL, guidance=2.0))
    metrics = json.loads((tmp_path / "report/metrics.json").read_text())
    assert metrics["rollout"]["guidance"] == metrics["reference"]["rollout"]["guidance"] == 2.0
    assert "guidance 2," in (tmp_path / "report/report.html").read_text()
    assert changed["pretrained"] == summary["pretrained"] and changed["finetuned"] == summary["finetuned"]
    weights = [p for p in stamps if p.name == "model.safetensors"]
    assert len(weights) == 2 and all(p.stat().st_mtime_ns == stamps[p] for p in weights)
