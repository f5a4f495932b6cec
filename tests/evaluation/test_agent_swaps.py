"""Per-agent evaluation of a scene with several agents (evaluation/agents.py): a real cooperative-pong recording, a
tiny model with agent conditioning trained on it, one paddle's actions swapped at a time against the simulator."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data.conftest import record

from evaluation.conftest import one_thread, train_tiny
from unified_action.evaluation import evaluate
from unified_action.evaluation.agents import attribution, region_mask, swap_agent
from unified_action.evaluation.report import write_report
from unified_action.models.batch import ACTION_KEYS
from unified_action.tokenization import Registry
from unified_action.training.export import export_meta, write_export


def test_swapping_one_agent_takes_only_its_tokens():
    agents = np.array([[[-1, -1, 0, 0, 0, 1, 1, 1, -1]]])
    mine = {k: np.arange(9)[None, None] * (i + 1) for i, k in enumerate(ACTION_KEYS)}
    mine["action_agents"] = agents
    other = {k: v + 100 for k, v in mine.items()}
    other["action_agents"] = agents
    out = swap_agent(mine, other, 1)
    assert out["action_tokens"][0, 0].tolist() == [0, 1, 2, 3, 4, 105, 106, 107, 8]
    assert np.array_equal(out["action_agents"], agents)


def test_attribution_says_where_the_change_lands():
    from unified_action.cards.schema import Region

    gen = np.zeros((1, 1, 4, 4, 3), np.uint8)
    swapped = gen.copy()
    swapped[..., :, :2, :] = 10  # the change: the left half only
    mask = region_mask(Region(left=0, top=0, right=0.5, bottom=1), (4, 4))
    ratio, share = attribution(gen, swapped, mask)
    assert ratio == float("inf") and share == 1.0
    swapped[..., :, 2:, :] = 5
    ratio, share = attribution(gen, swapped, mask)
    assert ratio == pytest.approx(4.0) and share == pytest.approx(0.8)


@pytest.mark.slow
def test_each_paddle_is_swapped_alone_and_judged_against_the_simulator(tmp_path):
    ds = record(tmp_path / "pong", "pettingzoo_cooperative_pong", episodes=6, steps=40, seed=3)
    reg = Registry(tmp_path / "tokenizers")
    reg.register(ds.card, list(ds.iter_actions()))
    with one_thread():
        model = train_tiny(reg, str(ds.root), 10, episodes=(0, 4), max_agents=8)
        meta = export_meta(model.cfg.to_dict(), reg, [ds.name], {"config": "tests/evaluation"})
        export = write_export(model.state_dict(), meta, tmp_path / "export", trained={"step": 10, "run": meta["run"]})
        result = evaluate(export, reg, [ds.root], episodes=(4, 6), context_frames=2, horizon=3, clips=4, steps=1,
                          seed=0, examples=1, progress=False)
    r = result.datasets[0]
    assert list(r.agents) == ["paddle_0", "paddle_1"]
    for m in r.agents.values():
        assert m["dpsnr"].shape == (r.clips, 3) and np.isfinite(m["dpsnr"]).any()
        assert np.isfinite(m["attribution"]) and 0 <= m["share"] <= 1  # both cards' paddles have a region
        assert m["action_accuracy"].shape == (r.clips, 3)
    assert [a for a, _ in r.agent_examples] == ["paddle_0", "paddle_1"]
    assert all(ex.truth is not None for _, ex in r.agent_examples)  # the simulator under one paddle's swap
    report = write_report(result, tmp_path / "report")
    metrics = json.loads((report.parent / "metrics.json").read_text())
    assert set(metrics["datasets"][ds.name]["agents"]) == {"paddle_0", "paddle_1"}
    assert (report.parent / f"{ds.name}_agent_paddle_0_clip0.png").is_file()
