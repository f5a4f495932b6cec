"""Aspect modes: a 150x200 camera into 64x64 is letterboxed (pad, the default), centre-cropped or stretched, and
only stretch changes its geometry. Through the writer (meta.json records the mode) and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from support import CARDS, run_cli

from unified_action.data.frames import ASPECTS, DEFAULT_ASPECT, check_aspect, resize_frames
from unified_action.errors import DataError


def _scene() -> np.ndarray:
    """150x200 grey frame with a white 60x60 square in the middle and red 20-pixel strips at the left and right edges."""
    f = np.full((1, 150, 200, 3), 100, np.uint8)
    f[:, 45:105, 70:130] = 255
    f[:, :, :20] = (255, 0, 0)
    f[:, :, -20:] = (255, 0, 0)
    return f


def _square_aspect(out: np.ndarray) -> float:
    """height / width of the white square in a resized frame."""
    ys, xs = np.nonzero((out[0] > 200).all(-1))
    return (ys.max() - ys.min() + 1) / (xs.max() - xs.min() + 1)


def _red(out: np.ndarray) -> np.ndarray:
    r = out[0].astype(int)
    return (r[..., 0] > 200) & (r[..., 1] < 60)


def test_pad_keeps_everything_and_its_shape_on_black_bars():
    out = resize_frames(_scene(), (64, 64), "pad")
    assert out.shape == (1, 64, 64, 3)
    assert (out[0, :8] == 0).all() and (out[0, -8:] == 0).all()  # 150x200 -> 48x64 of content, 8 rows above and below
    assert (out[0, 8:56] > 0).any(-1).all()
    assert _red(out)[:, :3].any() and _red(out)[:, -3:].any()  # both edges survive
    assert abs(_square_aspect(out) - 1) < 0.1


def test_crop_keeps_the_centre_and_its_shape_and_drops_the_sides():
    out = resize_frames(_scene(), (64, 64), "crop")
    assert not _red(out).any()  # the centre 150x150 of 200 columns: the 20-pixel strips are cut off
    assert (out[0] > 0).any(-1).all()  # no bars
    assert abs(_square_aspect(out) - 1) < 0.1


def test_stretch_squashes():
    out = resize_frames(_scene(), (64, 64), "stretch")
    assert _red(out)[:, :3].any() and (out[0] > 0).any(-1).all()
    assert _square_aspect(out) > 1.25  # 60x60 becomes 25.6 rows x 19.2 columns


@pytest.mark.parametrize("aspect", ASPECTS)
def test_same_aspect_and_same_size(aspect):
    f = np.random.default_rng(0).integers(0, 255, (2, 96, 96, 3), dtype=np.uint8)
    assert resize_frames(f, (96, 96), aspect) is f
    a, b = resize_frames(f, (64, 64), aspect), resize_frames(f, (64, 64), "stretch")
    assert np.array_equal(a, b)  # a square camera into a square size: every mode is the same resize


def test_tall_cameras_and_unknown_modes():
    tall = np.full((1, 200, 100, 3), 255, np.uint8)
    out = resize_frames(tall, (64, 64), "pad")
    assert (out[0, :, :16] == 0).all() and (out[0, :, 16:48] == 255).all()  # pillarbox: 64x32 of content
    assert (resize_frames(tall, (32, 64), "crop") == 255).all()
    with pytest.raises(DataError, match="aspect: 'crp' \\(did you mean 'crop'"):
        check_aspect("crp")
    assert DEFAULT_ASPECT == "pad"


def test_the_writer_records_the_mode_and_the_cli_refuses_unknown_ones(tmp_path, monkeypatch, capsys):
    from unified_action.cards import load_card
    from unified_action.data.episode import Episode
    from unified_action.data.shards import episode_to_sample, sample_frames, sample_meta

    card = load_card(CARDS / "carracing.md")
    T = 3
    ep = Episode(card.name, 0, {"top_down": np.repeat(_scene(), T, 0)},
                 {f.path: np.zeros((T, *f.shape), np.float32) for f in card.header.action}, np.zeros(T, np.float32),
                 np.eye(1, T, 0, bool)[0], np.eye(1, T, T - 1, bool)[0], np.zeros(T, bool))
    for aspect in ASPECTS:
        s = episode_to_sample(ep, card, image_size=(64, 64), aspect=aspect)
        assert sample_meta(s, "x")["aspect"] == aspect
        assert np.array_equal(sample_frames(s, "top_down", [1], "x"), resize_frames(_scene(), (64, 64), aspect))
    code, _, err = run_cli(monkeypatch, capsys, "data", "record", CARDS / "carracing.md", "-o", tmp_path / "o", "--aspect", "squash")
    assert code == 2 and "--aspect: 'squash'" in err and len(err.strip().splitlines()) == 1
