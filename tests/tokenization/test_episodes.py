"""Episode files: .npy and .npz layouts, and one-line errors naming the file and key."""

import numpy as np
import pytest
from support import CARDS

from unified_action.cards import load_card
from unified_action.errors import DataError
from unified_action.tokenization.episodes import chunk_episode, load_episodes


@pytest.fixture
def rt1():
    return load_card(CARDS / "fractal20220817_data.md")


def _rt1_fields(rt1, steps):
    out = {}
    for f in rt1.header.action:
        shape = (steps, *f.shape)
        out[f.path] = np.eye(3)[np.zeros(steps, int) + 1] if f.path.endswith("terminate_episode") else np.zeros(shape)
    return out


def test_npz_dict_action_by_field_path(tmp_path, rt1):
    np.savez(tmp_path / "ep.npz", **_rt1_fields(rt1, 5))
    [ep] = load_episodes(tmp_path / "ep.npz", rt1)
    assert ep.shape == (5, rt1.mapping.native_dim)


def test_missing_key_is_named(tmp_path, rt1):
    fields = _rt1_fields(rt1, 5)
    fields.pop("action/world_vector")
    np.savez(tmp_path / "ep.npz", **fields)
    with pytest.raises(DataError, match=r"ep.npz: key 'action/world_vector' is missing"):
        load_episodes(tmp_path / "ep.npz", rt1)


def test_wrong_shape_is_named(tmp_path, rt1):
    fields = _rt1_fields(rt1, 5)
    fields["action/world_vector"] = np.zeros((5, 4))
    np.savez(tmp_path / "ep.npz", **fields)
    with pytest.raises(DataError, match=r"key 'action/world_vector' has shape \[5, 4\], expected \[T, 3\]"):
        load_episodes(tmp_path / "ep.npz", rt1)


def test_npy_directory_sorted_and_checked(tmp_path):
    card = load_card(CARDS / "carracing.md")
    for i in range(3):
        np.save(tmp_path / f"e{i}.npy", np.full((4, 3), i, dtype=np.float32))
    eps = load_episodes(tmp_path, card)
    assert [e[0, 0] for e in eps] == [0, 1, 2]
    np.save(tmp_path / "e3.npy", np.zeros((4, 2)))
    with pytest.raises(DataError, match=r"e3.npy: array of shape \[4, 2\], expected \[T, 3\]"):
        load_episodes(tmp_path, card)


def test_nan_and_garbage_are_refused(tmp_path):
    card = load_card(CARDS / "carracing.md")
    x = np.zeros((4, 3))
    x[2, 1] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(DataError, match="nan.npy: step 2 holds NaN"):
        load_episodes(tmp_path / "nan.npy", card)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="junk.npy: cannot be read as a numpy file"):
        load_episodes(tmp_path / "junk.npy", card)
    with pytest.raises(DataError, match="no such file or directory"):
        load_episodes(tmp_path / "absent", card)


def test_chunks_cover_the_episode_and_pad_short_ones():
    x = np.arange(10.0)[:, None]
    chunks = chunk_episode(x, 4, 4)
    assert chunks[:, 0, 0].tolist() == [0, 4, 6]
    short = chunk_episode(x[:2], 4, 1)
    assert short[0, :, 0].tolist() == [0, 1, 1, 1]
