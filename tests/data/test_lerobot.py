"""LeRobot v3 reader against datasets written by the format-faithful fixture (image mode exact, video lossy)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import CARDS

from data.lerobot_fixture import CAMERA, write_lerobot_v3
from unified_action.cards import parse_card
from unified_action.data.lerobot import count_episodes, read_episodes
from unified_action.errors import DataError

CARD_TEXT = (CARDS / "lerobot_aloha_sim_insertion_human.md").read_text(encoding="utf-8")
LENGTHS = [21, 17, 25]  # episodes start at frames 0, 21, 38 of the mp4: off any regular keyframe grid
TASKS = ["Insert the peg into the socket.", "Pick up the socket.", "Insert the peg into the socket."]
# Measured with libsvtav1 (crf 30, yuv420p, g=2, 64x64 smooth frames, SVT-AV1 4.1): per-frame PSNR 34.9 dB
# worst, 37.7 median. 30 dB leaves ~5 dB for other encoder versions and CPU paths and stays far above what the
# wrong frame scores: consecutive source frames are only ~25 dB apart (see assert_right_frames).
MIN_PSNR_DB = 30.0


def card(**replace: str):
    """The real card, with its 480x640 camera shrunk to the fixture's 64x64 and any other text replaced."""
    text = CARD_TEXT.replace("height: 480, width: 640", "height: 64, width: 64")
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return parse_card(text, "<test card>")


def smooth(episode: int, t: int, size: int = 64) -> np.ndarray:
    """A smooth colour pattern whose phase moves with t: every frame differs, nothing a codec finds hard."""
    y, x = np.mgrid[0:size, 0:size] / size
    r = 128 + 100 * np.sin(2 * np.pi * x + 0.3 * t + episode)
    g = 128 + 100 * np.cos(2 * np.pi * y - 0.2 * t)
    b = 128 + 60 * np.sin(np.pi * (x + y) + episode)
    return np.stack([r, g, b], -1).round().astype(np.uint8)


def make_episodes(lengths=LENGTHS, reward: bool = False) -> list[dict]:
    rng = np.random.default_rng(0)
    eps = []
    for e, T in enumerate(lengths):
        ep = dict(frames=np.stack([smooth(e, t) for t in range(T)]),
                  action=rng.normal(size=(T, 14)).astype(np.float32),
                  state=rng.normal(size=(T, 14)).astype(np.float32), task=TASKS[e % len(TASKS)])
        if reward:
            ep["reward"] = rng.random(T).astype(np.float32)
            ep["done"] = np.arange(T) == T - 1
        eps.append(ep)
    return eps


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def episodes():
    return make_episodes()


@pytest.fixture(scope="module")
def image_ds(tmp_path_factory, episodes):
    return write_lerobot_v3(tmp_path_factory.mktemp("img") / "ds", episodes, video=False)


@pytest.fixture(scope="module")
def video_ds(tmp_path_factory, episodes):
    return write_lerobot_v3(tmp_path_factory.mktemp("vid") / "ds", episodes, video=True, codec="libsvtav1")


def test_image_mode_reads_back_exactly(image_ds, episodes):
    c = card()
    assert count_episodes(c, image_ds) == 3
    got = list(read_episodes(c, image_ds))
    assert [e.index for e in got] == [0, 1, 2]
    for src, ep in zip(episodes, got, strict=True):
        T = len(src["action"])
        assert len(ep) == T and ep.card == c.name and ep.source == f"{image_ds} episode {ep.index}"
        np.testing.assert_array_equal(ep.frames["top"], src["frames"])
        assert ep.frames["top"].dtype == np.uint8
        np.testing.assert_array_equal(ep.actions["action"], src["action"])
        np.testing.assert_array_equal(ep.proprio["observation.state"], src["state"])
        assert ep.instruction == src["task"]
        assert ep.is_first.tolist() == [True] + [False] * (T - 1)
        assert ep.is_last.tolist() == [False] * (T - 1) + [True]
        assert not ep.is_terminal.any() and not ep.reward.any()  # no next.done / next.reward in this dataset
        assert ep.native_actions(c).shape == (T, 14)


def test_start_stop_slicing(image_ds, episodes):
    c = card()
    assert [e.index for e in read_episodes(c, image_ds, 1, 3)] == [1, 2]
    assert [e.index for e in read_episodes(c, image_ds, start=2)] == [2]
    assert [e.index for e in read_episodes(c, image_ds, 0, 1)] == [0]
    assert list(read_episodes(c, image_ds, 3)) == []
    (ep,) = read_episodes(c, image_ds, 1, 2)
    np.testing.assert_array_equal(ep.actions["action"], episodes[1]["action"])
    assert ep.instruction == TASKS[1]


def test_root_may_be_the_parent_named_by_the_card(tmp_path, episodes):
    ds = write_lerobot_v3(tmp_path / "lerobot" / "aloha_sim_insertion_human", episodes[:1], video=False)
    assert count_episodes(card(), tmp_path) == 1 == count_episodes(card(), ds)
    (ep,) = read_episodes(card(), tmp_path)
    assert ep.source == f"{ds} episode 0"


def test_video_mode_actions_exact_frames_within_tolerance(video_ds, episodes):
    c = card()
    info = json.loads((video_ds / "meta/info.json").read_text())
    assert info["features"][CAMERA]["dtype"] == "video" and info["features"][CAMERA]["info"]["video.codec"] == "av1"
    got = list(read_episodes(c, video_ds))
    assert [len(e) for e in got] == LENGTHS  # the right count for the 2nd and 3rd episodes of one mp4 too
    for src, ep in zip(episodes, got, strict=True):
        np.testing.assert_array_equal(ep.actions["action"], src["action"])
        np.testing.assert_array_equal(ep.proprio["observation.state"], src["state"])
        assert ep.instruction == src["task"]
        worst = min(psnr(a, b) for a, b in zip(ep.frames["top"], src["frames"], strict=True))
        assert worst >= MIN_PSNR_DB, f"episode {ep.index}: worst frame PSNR {worst:.1f} dB"


def assert_right_frames(got, episodes, lengths=LENGTHS, min_psnr=MIN_PSNR_DB):
    """Right count per episode, every frame within tolerance, and each decoded frame nearest its own source
    frame by a clear margin (no off-by-one where an episode starts inside the mp4)."""
    assert [len(e) for e in got] == [lengths[e.index] for e in got]
    for ep in got:
        src = episodes[ep.index]["frames"]
        assert ep.frames["top"].shape == src.shape and ep.frames["top"].dtype == np.uint8
        for t, frame in enumerate(ep.frames["top"]):
            scores = [psnr(frame, s) for s in src]
            assert scores[t] >= min_psnr, f"episode {ep.index} frame {t}: PSNR {scores[t]:.1f} dB"
            assert int(np.argmax(scores)) == t
            assert all(scores[t] - scores[n] > 5 for n in (t - 1, t + 1) if 0 <= n < len(src))


def test_video_frames_are_the_right_ones(video_ds, episodes):
    assert_right_frames(list(read_episodes(card(), video_ds)), episodes)


def test_video_episodes_starting_between_keyframes(tmp_path, episodes):
    """One encoder run, keyframes every 12 frames: episode 1 starts at frame 21, episode 2 at 38."""
    ds = write_lerobot_v3(tmp_path / "ds", episodes, video=True, one_encoder_run=True)
    assert_right_frames(list(read_episodes(card(), ds, 1)), episodes)


def test_h264_video_reads_too(tmp_path, episodes):
    ds = write_lerobot_v3(tmp_path / "ds", episodes, video=True, codec="libx264")
    assert_right_frames(list(read_episodes(card(), ds, 1)), episodes, min_psnr=28)  # measured: 30.8 dB worst


def test_reward_and_done_columns(tmp_path):
    eps = make_episodes([6, 4], reward=True)
    ds = write_lerobot_v3(tmp_path / "ds", eps, video=False)
    for src, ep in zip(eps, read_episodes(card(), ds), strict=True):
        np.testing.assert_array_equal(ep.reward, src["reward"])
        assert ep.reward.dtype == np.float32
        np.testing.assert_array_equal(ep.is_terminal, src["done"])


def test_constant_instruction(image_ds):
    c = card(**{"instruction: {location: step, path: task}": "instruction: {location: constant, text: do it}"})
    assert {e.instruction for e in read_episodes(c, image_ds)} == {"do it"}


def test_missing_info_json(tmp_path):
    with pytest.raises(DataError, match=r"meta/info\.json: file not found"):
        count_episodes(card(), tmp_path)


def test_v21_dataset_says_how_to_convert(tmp_path, episodes):
    ds = write_lerobot_v3(tmp_path / "ds", episodes[:1], video=False, version="v2.1")
    with pytest.raises(DataError) as e:
        list(read_episodes(card(), ds))
    msg = str(e.value)
    assert "info.json" in msg and "'v2.1'" in msg and "v3" in msg and "convert_dataset_v21_to_v30" in msg
    assert "\n" not in msg


def test_missing_feature_names_file_and_field(tmp_path, episodes):
    ds = write_lerobot_v3(tmp_path / "ds", episodes[:1], video=False)
    with pytest.raises(DataError, match=r"info\.json: features: proprio 'observation\.qpos' is missing"):
        list(read_episodes(card(**{"path: observation.state": "path: observation.qpos"}), ds))
    with pytest.raises(DataError, match=r"info\.json: features: camera 'top' key 'observation\.images\.front' is missing"):
        list(read_episodes(card(**{"key: observation.images.top": "key: observation.images.front"}), ds))


def test_bad_shapes_and_missing_files(tmp_path, episodes):
    ds = write_lerobot_v3(tmp_path / "ds", episodes[:2], video=True)
    with pytest.raises(DataError, match=r"features\.observation\.images\.top\.shape: \[64, 64, 3\] is 64x64, but .* 48x64"):
        list(read_episodes(card(**{"height: 64, width: 64": "height: 48, width: 64"}), ds))
    info = json.loads((ds / "meta/info.json").read_text())
    info["features"]["action"]["shape"] = [7]
    (ds / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match=r"features\.action\.shape: \[7\], expected \[14\]"):
        list(read_episodes(card(), ds))
    info["features"]["action"]["shape"] = [14]
    (ds / "meta/info.json").write_text(json.dumps(info))
    (ds / "videos" / CAMERA / "chunk-000" / "file-000.mp4").unlink()
    with pytest.raises(DataError, match=r"file-000\.mp4: file not found \(episode 0"):
        list(read_episodes(card(), ds))
