"""The simulator's truth under other actions (truth.py): replayed from the recorded seed and actions, it matches the
recorded frames exactly under a clip's own actions, and scores a rollout under another clip's actions."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.conftest import CLIPS, HORIZON
from unified_action.data.dataset import open_dataset
from unified_action.evaluation import metrics as M
from unified_action.evaluation.report import strip
from unified_action.evaluation.rollouts import collect_clips
from unified_action.evaluation.truth import TRUTHS_DIFFER_DB, has_simulator, simulator_truth, truth_metrics
from unified_action.models.pretrained import load_pretrained

pytestmark = pytest.mark.slow


def test_under_its_own_actions_the_truth_is_the_clips_real_future(evalsetup):
    """The alignment check: each clip's own key as its partner gives back, frame for frame, what the loader cut."""
    s = evalsetup
    ds = open_dataset(s["carracing"].root)
    assert has_simulator(ds)
    model, _ = load_pretrained(s["export"], s["registry"])
    data = collect_clips(ds.root, s["registry"], (3, 5), model, 2, HORIZON, CLIPS, seed=0)
    keys = data["key"]
    truth, ok, notes = simulator_truth(ds, keys, keys, data["frames"][:, 1], 2, int(data["frame_stride"][0]), HORIZON,
                                       tuple(model.cfg.image_size))
    assert ok.all() and not notes
    assert np.array_equal(truth, data["frames"][:, 2:])
    # a second model on the same clips: the same truth, from the cache (a copy: writing to it changes no later call)
    from unified_action.evaluation import truth as T

    replays = len(T._CACHE)
    again, ok_again, _ = simulator_truth(ds, keys, keys, data["frames"][:, 1], 2, int(data["frame_stride"][0]), HORIZON,
                                         tuple(model.cfg.image_size))
    assert len(T._CACHE) == replays and np.array_equal(again, truth) and ok_again.all()
    again[:] = 0
    assert np.array_equal(simulator_truth(ds, keys, keys, data["frames"][:, 1], 2, int(data["frame_stride"][0]), HORIZON,
                                          tuple(model.cfg.image_size))[0], truth)
    # another clip's actions from the last context frame on: the same start, another future
    other = keys[1:] + keys[:1]
    truth2, ok2, _ = simulator_truth(ds, keys, other, data["frames"][:, 1], 2, int(data["frame_stride"][0]), HORIZON,
                                     tuple(model.cfg.image_size))
    assert ok2.all() and not np.array_equal(truth2, truth)


def test_action_accuracy_counts_which_truth_a_rollout_is_closer_to():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 255, (3, 2, 8, 8, 3), dtype=np.uint8)
    truth = rng.integers(0, 255, (3, 2, 8, 8, 3), dtype=np.uint8)
    truth[2] = real[2]  # truths that do not differ: not counted
    m = truth_metrics(real, truth, truth, real)  # a rollout that is the truth
    assert np.array_equal(m["action_accuracy"][:2], np.ones((2, 2))) and np.isnan(m["action_accuracy"][2]).all()
    assert (M.psnr(real[:2], truth[:2]) < TRUTHS_DIFFER_DB).all()
    assert (truth_metrics(real, real, truth, real)["action_accuracy"][:2] == 0).all()  # one that ignores its actions


def test_evaluation_reports_truth_metrics_and_a_simulator_row(evaluated):
    r = evaluated.datasets[0]
    for k in ("cf_psnr", "cf_baseline_psnr"):
        assert np.isfinite(r.values[k]).all(), k
    acc = r.values["action_accuracy"]
    assert np.isfinite(acc).any() and set(np.unique(acc[np.isfinite(acc)])) <= {0.0, 1.0}
    assert any("action accuracy over" in n for n in r.notes)
    ex = r.examples[0]
    assert ex.truth is not None and ex.truth.shape == ex.real.shape
    rows = [strip(ex).height]
    ex.truth = None
    rows.append(strip(ex).height)
    assert rows[0] > rows[1]  # a fourth row: the simulator under the other actions
