"""`evaluate` on a real exported model and real held-out simulator clips: metrics per horizon step, the copy-last
baseline and the counterfactual by hand, and the refusals."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from evaluation.conftest import CLIPS, HORIZON
from unified_action.errors import DataError, TrainingError
from unified_action.evaluation import evaluate
from unified_action.evaluation.rollouts import METRICS, default_heldout, episode_of, pick_counterfactuals
from unified_action.tokenization import Registry


def hand_psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mse = ((a.astype(float) - b.astype(float)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0 ** 2 / mse)


def test_default_heldout_is_the_last_fifth_at_least_one():
    assert default_heldout(10) == (8, 10) and default_heldout(4) == (3, 4) and default_heldout(1) == (0, 1)


def test_counterfactual_partner_is_the_next_clip_of_another_episode():
    keys = ["d/3@0", "d/3@8", "d/4@0"]
    assert pick_counterfactuals(keys, keys) == [2, 2, 0]
    assert pick_counterfactuals(["d/3@0"], ["d/3@0"]) == [None]


@pytest.mark.slow
def test_metrics_per_horizon_step(evaluated):
    assert evaluated.horizon == HORIZON and len(evaluated.datasets) == 1
    r = evaluated.datasets[0]
    assert r.name == "carracing" and r.episodes == (3, 5) and r.clips == CLIPS
    assert {episode_of(k) for k in r.keys} <= {"3", "4"}  # held-out episodes only
    steps = r.steps()
    assert set(steps) == set(METRICS)
    for key, values in steps.items():
        assert len(values) == HORIZON and all(math.isfinite(v) for v in values), key
    assert all(0 < v < 1 for v in steps["ssim"])
    assert 5 < r.overall()["psnr"] < 60  # a trained model's frames: neither noise nor a copy of the truth


@pytest.mark.slow
def test_baseline_and_model_psnr_match_a_hand_computation(evaluated):
    r = evaluated.datasets[0]
    ex = r.examples[0]
    i = r.keys.index(ex.key)
    assert ex.real.shape == (HORIZON, 32, 32, 3) and ex.context.shape == (2, 32, 32, 3)
    copy_last = np.repeat(ex.context[-1:], HORIZON, axis=0)
    assert np.allclose(r.values["baseline_psnr"][i], hand_psnr(ex.real, copy_last))
    assert np.allclose(r.values["psnr"][i], hand_psnr(ex.real, ex.generated))
    assert np.allclose(r.values["counterfactual_psnr"][i], hand_psnr(ex.real, ex.counterfactual))


@pytest.mark.slow
def test_dpsnr_uses_actions_of_another_episode(evaluated):
    r = evaluated.datasets[0]
    assert len({episode_of(k) for k in r.keys}) == 2  # both held-out episodes among the clips
    for key, other in zip(r.keys, r.counterfactual_keys):
        assert other is not None and other in r.keys and episode_of(other) != episode_of(key)
    assert np.allclose(r.values["dpsnr"], r.values["psnr"] - r.values["counterfactual_psnr"])
    ex = r.examples[0]
    assert not np.array_equal(ex.generated, ex.counterfactual)  # other actions, same noise: other frames
    assert [n for n in r.notes if not n.startswith("action accuracy over")] == []  # nothing went amiss


@pytest.mark.slow
def test_dataset_of_an_unknown_embodiment_is_refused(evalsetup):
    s = evalsetup
    with pytest.raises(DataError) as e:
        evaluate(s["export"], s["registry"], [s["carracing"].root, s["ale_pong"].root], progress=False)
    msg = str(e.value)
    assert "\n" not in msg and str(s["ale_pong"].root) in msg and "'ale_pong'" in msg and "carracing" in msg


@pytest.mark.slow
def test_changed_tokenizer_is_refused(evalsetup, tmp_path):
    s = evalsetup
    reg = Registry(shutil.copytree(s["registry"].root, tmp_path / "tokenizers"))
    car = s["carracing"]
    reg.register(car.card, list(car.iter_actions())[:2], force=True)  # other statistics: another content hash
    with pytest.raises(TrainingError, match=r"tokenizer 'carracing' .* has hash .* the model was trained with"):
        evaluate(s["export"], reg, [car.root], progress=False)


def test_clips_are_spread_over_episodes():
    from unified_action.evaluation.rollouts import spread_over_episodes

    keys = ["d/4@0", "d/4@8", "d/4@16", "d/3@0", "d/3@8"]
    assert spread_over_episodes(keys, 3) == [0, 3, 1] and spread_over_episodes(keys, 9) == [0, 3, 1, 4, 2]


def test_held_out_frames_are_fitted_as_the_training_job_fitted_them():
    from unified_action.evaluation.rollouts import trained_aspect

    job = lambda aspect: {"trained": {"run": {"job": {"data": {"aspect": aspect}}}}}  # noqa: E731
    assert trained_aspect(job("crop")) == "crop" and trained_aspect(job("stretch")) == "stretch"
    assert trained_aspect({"trained": {"step": 3}}) == "pad"  # an export from before the option: the default
    assert trained_aspect({"trained": {"run": "not a mapping"}}) == "pad"
    with pytest.raises(DataError, match=r"trained\.run\.job\.data\.aspect: 'squash'.*expected one of"):
        trained_aspect(job("squash"))
