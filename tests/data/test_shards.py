"""Layout 2 samples: exact round trips at and across block boundaries, other per-step arrays, deterministic bytes,
and layout 1 datasets still read, giving the very clips layout 2 gives."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
from support import CARDS

from data.test_loader import config, run, same_batches
from unified_action.cards import load_card
from unified_action.cards.schema import Crop
from unified_action.data.blocks import block_member
from unified_action.data.convert import SourceSpec, WriteSettings, write_dataset
from unified_action.data.episode import Episode
from unified_action.data.loader import ClipLoader, MixtureEntry
from unified_action.data.shards import LAYOUT_VERSION, episode_to_sample, sample_frames, sample_steps, sample_to_episode
from unified_action.errors import DataError

CARD = load_card(CARDS / "carracing.md")


def _episode(T: int, seed: int = 0, **arrays) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(CARD.name, seed, {"top_down": rng.integers(0, 255, (T, 16, 16, 3), dtype=np.uint8)},
                   {f.path: rng.uniform(0, 1, (T, *f.shape)).astype(np.float32) for f in CARD.header.action},
                   rng.standard_normal(T).astype(np.float32), np.arange(T) == 0, np.arange(T) == T - 1, np.zeros(T, bool),
                   instruction="Drive.", arrays=arrays)


@pytest.mark.parametrize("T", [1, 7, 8, 9, 70])
def test_round_trip_is_exact_at_every_block_boundary(T):
    lat = np.random.default_rng(1).standard_normal((T, 4, 2)).astype(np.float16)
    ep = _episode(T, latents=lat)
    s = episode_to_sample(ep, CARD, block_steps=8)
    blocks = sorted(k for k in s if k.endswith(".blk"))
    assert blocks == sorted([block_member("top_down", t0) for t0 in range(0, T, 8)] +
                            [block_member("latents", t0) for t0 in range(0, T, 8)])
    back = sample_to_episode(s, CARD, "x")
    assert np.array_equal(back.frames["top_down"], ep.frames["top_down"])
    assert np.array_equal(back.arrays["latents"], lat) and back.arrays["latents"].dtype == np.float16
    assert np.array_equal(back.native_actions(CARD), ep.native_actions(CARD)) and np.array_equal(back.reward, ep.reward)
    assert back.instruction == "Drive." and np.array_equal(back.is_last, ep.is_last)


def test_steps_spanning_two_blocks_decode_only_those_blocks():
    ep = _episode(40)
    s = episode_to_sample(ep, CARD, block_steps=8)
    steps = [6, 7, 8, 9, 13]
    assert np.array_equal(sample_frames(s, "top_down", steps, "x"), ep.frames["top_down"][steps])
    assert set(s["__blocks__"]) == {("top_down", 0), ("top_down", 8)}  # parsed: only the two blocks asked for
    with pytest.raises(DataError, match="step 40 of 'top_down' is outside the episode's 40 steps"):
        sample_steps(s, "top_down", [40], "x")
    del s[block_member("top_down", 16)]
    with pytest.raises(DataError, match="key 'top_down.000016.blk' is missing"):
        sample_frames(s, "top_down", [17], "x")


def test_a_cameras_crop_is_cut_before_the_frames_are_fitted():
    """The card's region of interest (crop) is what the shards keep: cut from the native frame, then resized."""
    cam = CARD.header.cameras[0].model_copy(update={"crop": Crop(top=2, bottom=6, left=4)})
    card = replace(CARD, header=CARD.header.model_copy(update={"cameras": [cam]}))
    ep = _episode(3)
    s = episode_to_sample(ep, card, image_size=(8, 12))
    back = sample_to_episode(s, card, "x")
    assert np.array_equal(back.frames["top_down"], ep.frames["top_down"][:, 2:10, 4:16])  # 8x12 region: no resize
    assert json.loads(s["meta.json"])["cameras"] == {"top_down": [8, 12]}


def test_array_names_are_checked():
    with pytest.raises(DataError, match="arrays: name 'top_down' must match"):
        episode_to_sample(_episode(4, top_down=np.zeros((4, 2))), CARD)
    with pytest.raises(DataError, match=r"arrays.latents: .* expected a numeric array \[4, ...\]"):
        episode_to_sample(_episode(4, latents=np.zeros((3, 2))), CARD)


def test_the_same_episodes_give_byte_identical_shards(tmp_path, shard_data):
    src = shard_data["carracing"]
    digests = []
    for run_ in ("a", "b"):
        ds = write_dataset(SourceSpec(str(CARDS / "carracing.md"), "shards", root=str(src.root)), tmp_path / run_, workers=1,
                           settings=WriteSettings(image_size=(32, 32), shard_bytes=60 * 1024), progress=False)
        digests.append([(s.name, s.sha256, s.index) for s in ds.shards])
        assert ds.manifest["layout"] == LAYOUT_VERSION == 2
    assert digests[0] == digests[1]
    # and re-encoding layout 2's frames is lossless: the same bytes as the shards they were read from
    assert [hashlib.sha256((tmp_path / "a" / s.name).read_bytes()).hexdigest() for s in src.shards] == [s.sha256 for s in src.shards]


@pytest.mark.parametrize("workers", [0, 2])
def test_layout1_datasets_are_still_read_and_give_the_same_clips(shard_data, workers):
    v2, v1 = shard_data["carracing"], shard_data["carracing_layout1"]
    assert v1.manifest["layout"] == 1 and all(s.index is None for s in v1.shards)
    cfg = config(shard_data)
    a = run(ClipLoader(cfg, rank=0, world_size=1, num_workers=workers))
    b = run(ClipLoader(replace(cfg, datasets=(MixtureEntry(str(v1.root)),)), rank=0, world_size=1, num_workers=workers))
    same_batches(a, b)
    first = next(iter(v1.iter_episodes()))
    assert np.array_equal(first.frames["top_down"], next(iter(v2.iter_episodes())).frames["top_down"])


def test_clips_cross_block_boundaries_with_small_blocks(shard_data, tmp_path):
    """Blocks of 3 steps: every clip's frames come from several blocks; the clips equal those of 32-step blocks."""
    src = shard_data["carracing"]
    small = write_dataset(SourceSpec(str(CARDS / "carracing.md"), "shards", root=str(src.root)), tmp_path / "b3", workers=1,
                          settings=WriteSettings(image_size=(32, 32), shard_bytes=60 * 1024, block_steps=3), progress=False)
    assert max(s.index[1] for s in small.shards) > max(s.index[1] for s in src.shards)  # many more members

    def clips(root) -> dict:  # key -> (frames, tokens): the shards split otherwise, so the epoch's order differs
        cfg = replace(config(shard_data), datasets=(MixtureEntry(str(root)),))
        return {k: (b["frames"][i].numpy(), b["action_tokens"][i].numpy())
                for b in run(ClipLoader(cfg, rank=0, world_size=1)) for i, k in enumerate(b["key"])}

    a, b = clips(src.root), clips(small.root)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k][0], b[k][0]) and np.array_equal(a[k][1], b[k][1]) for k in a)


def test_a_hostile_length_in_meta_is_refused_before_anything_is_listed():
    import json

    from unified_action.data.shards import check_complete, sample_meta

    s = episode_to_sample(_episode(4), CARD)
    meta = json.loads(s["meta.json"])
    s["meta.json"] = json.dumps(meta | {"length": 10**12}).encode()
    with pytest.raises(DataError, match=r"meta.json: length 1000000000000, expected 1\.\.10000000"):
        check_complete(s, sample_meta(s, "x"), "x")


def test_npy_members_round_trip_and_other_headers_are_refused():
    """npy_load reads np.save's header by a fixed pattern (no ast.literal_eval: cpython#106905 made it fail in a loader
    worker): every dtype and shape stored here round-trips; a header np.save does not write for them is a ValueError."""
    from unified_action.data.shards import npy_bytes, npy_load

    for a in (np.arange(30.0).reshape(10, 3), np.arange(5), np.float32(3).reshape(()), np.zeros((2, 3, 4), np.uint8),
              np.zeros((0, 7)), np.array([True, False]), np.arange(6, dtype=">i4"), np.ones(3, np.float16)):
        b = npy_load(npy_bytes(a))
        assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b) and b.flags.writeable
    for bad in (b"junk", npy_bytes(np.array(["a"])), npy_bytes(np.asfortranarray(np.ones((2, 3)))),
                b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8'}\n"):
        with pytest.raises(ValueError):
            npy_load(bad)
