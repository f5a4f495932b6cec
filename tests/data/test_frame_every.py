"""Frames stored only every k steps (a card's source.frame_every): recorded from a real simulator, written to real
shards without a repeated frame, and cut into clips by the real loader at starts and strides that land on them.

Pong is recorded twice from the same seeds, once with a frame every step and once every 2nd step: the same steps
give identical frames, so every frame the loader shows from the k = 2 dataset must be the k = 1 dataset's frame of
the same step. chunk_length 4 (the frame stride) with clip_stride 5 puts clip starts at 0, 6, 12: multiples of k
that are not multiples of the stride, where repeating frames (an earlier prototype) would show the wrong ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support import CARDS

from unified_action.cards import load_card
from unified_action.data.convert import SourceSpec, WriteSettings, write_dataset
from unified_action.data.dataset import ShardDataset
from unified_action.data.episode import Episode, frame_count
from unified_action.data.loader import ClipLoader, LoaderConfig, MixtureEntry
from unified_action.data.shards import episode_to_sample, iter_samples, sample_meta
from unified_action.errors import DataError
from unified_action.evaluation.truth import simulator_truth
from unified_action.tokenization import Registry

pytestmark = pytest.mark.slow

K, CHUNK, STEPS, EPISODES, SEED = 2, 4, 31, 3, 4  # 31 steps: an odd length, whose last stored frame is step 30


def pong_card(where: Path, every: int | None, chunk: int = CHUNK) -> Path:
    """The real Pong card with its chunk length and (unless None) source.frame_every set."""
    text = (CARDS / "ale_pong.md").read_text()
    assert "  sticky_repeat: 0.6\n" in text and "  chunk_length: 2 " in text
    if every is not None:
        text = text.replace("  sticky_repeat: 0.6\n", f"  sticky_repeat: 0.6\n  frame_every: {every}\n")
    text = text.replace("  chunk_length: 2 ", f"  chunk_length: {chunk} ")
    where.mkdir(parents=True, exist_ok=True)
    (where / "ale_pong.md").write_text(text)
    return where / "ale_pong.md"


def record(card: Path, out: Path) -> ShardDataset:
    spec = SourceSpec(str(card), "sim", episodes=EPISODES, steps=STEPS, seed=SEED)
    return write_dataset(spec, out, workers=1, settings=WriteSettings(image_size=(32, 32), shard_bytes=200 * 1024),
                         progress=False)


@pytest.fixture(scope="module")
def pong(tmp_path_factory):
    root = tmp_path_factory.mktemp("frame_every")
    every = record(pong_card(root / "cards_k", K), root / "pong_k")
    each = record(pong_card(root / "cards_1", None), root / "pong_1")
    reg = Registry(root / "tokenizers")
    reg.register(every.card, list(every.iter_actions()))
    return {"root": root, "k": every, "1": each, "registry": reg}


def test_the_shards_store_each_frame_once_and_read_back_at_its_step(pong):
    ds, full = pong["k"], pong["1"]
    assert ds.frame_every == K and full.frame_every == 1
    assert "one every 2 steps (source.frame_every)" in (ds.root / "ale_pong.md").read_text()  # the dataset's card says so
    for s in ds.shards:
        for sample in iter_samples(s.url):
            meta = sample_meta(sample, s.url)
            assert meta["frame_every"] == K and meta["length"] == STEPS
            blocks = [m for m in sample if m.startswith("screen.") and m.endswith(".blk")]
            assert blocks == ["screen.000000.blk"]  # 16 frames in one block of 32: no frame repeated
    for ep, ep1 in zip(ds.iter_episodes(), full.iter_episodes(), strict=True):
        assert ep.frame_every == K and len(ep) == len(ep1) == STEPS
        assert len(ep.frames["screen"]) == frame_count(STEPS, K) == 16
        assert np.array_equal(ep.frames["screen"], ep1.frames["screen"][::K])  # same seed, same steps: same frames
        for path in ep.actions:
            assert np.array_equal(ep.actions[path], ep1.actions[path])  # everything else is every step
        assert np.array_equal(ep.reward, ep1.reward)


def test_an_old_dataset_has_a_frame_every_step(pong):
    """A card without the key records as before: no frame_every in the samples' meta.json, a frame a step."""
    ds = pong["1"]
    for s in ds.shards:
        for sample in iter_samples(s.url):
            assert "frame_every" not in json.loads(sample["meta.json"])
            assert sample_meta(sample, s.url)["frame_every"] == 1
    ep = next(ds.iter_episodes())
    assert ep.frame_every == 1 and len(ep.frames["screen"]) == len(ep) == STEPS


def loader(pong, **kw) -> ClipLoader:
    cfg = LoaderConfig(datasets=(MixtureEntry(str(pong["k"].root)),), registry=str(pong["registry"].root),
                       context_frames=2, future_frames=2, image_size=(32, 32), batch_size=4, clip_stride=5, seed=0, **kw)
    return ClipLoader(cfg, rank=0, world_size=1)


def clips(pong) -> dict:
    batches = list(loader(pong))
    return {"key": [k for b in batches for k in b["key"]], "frames": np.concatenate([b["frames"].numpy() for b in batches]),
            "frame_stride": np.concatenate([b["frame_stride"].numpy() for b in batches])}


def test_the_loader_shows_the_frames_of_the_steps_it_names(pong):
    data = clips(pong)
    full = {ep.index: ep.frames["screen"] for ep in pong["1"].iter_episodes()}
    starts = set()
    assert (data["frame_stride"] == CHUNK).all()
    for key, frames in zip(data["key"], data["frames"]):
        ep, start = map(int, key.split("/")[1].split("@"))
        starts.add(start)
        steps = start + CHUNK * np.arange(len(frames))
        assert np.array_equal(frames, full[ep][steps]), key
    # clip_stride 5 rounded up to 6: starts are multiples of k; span 16 steps of 31: starts 0, 6, 12
    assert starts == {0, 6, 12} and len(data["key"]) == 3 * EPISODES


def test_the_simulator_truth_replays_only_the_stored_frames(pong):
    """truth.py renders the replay every k steps too: under a clip's own actions it gives back what the loader cut."""
    data = clips(pong)
    C, H = 2, 2
    truth, ok, notes = simulator_truth(pong["k"], data["key"], data["key"], data["frames"][:, C - 1], C, CHUNK, H, (32, 32))
    assert ok.all() and not notes
    assert np.array_equal(truth, data["frames"][:, C:])


def test_a_frame_stride_that_is_not_a_multiple_of_k_is_refused_before_training(pong, tmp_path):
    """A tokenizer of the same actions but a chunk length of 3 (fitted from another card) cannot stride k = 2 frames."""
    reg = Registry(tmp_path / "tokenizers")
    other = load_card(pong_card(tmp_path / "cards", None, chunk=3))
    reg.register(other, list(pong["k"].iter_actions()))
    cfg = LoaderConfig(datasets=(MixtureEntry(str(pong["k"].root)),), registry=str(reg.root), context_frames=2,
                       future_frames=2, image_size=(32, 32), batch_size=4)
    with pytest.raises(DataError, match=rf"^{pong['k'].root}: frame_stride 3 is not a multiple of the dataset's "
                                        rf"frame_every 2 \(its frames are stored every 2 steps\)"):
        ClipLoader(cfg, rank=0, world_size=1)


def test_a_sample_claiming_another_k_than_its_card_is_refused(pong):
    ds = pong["k"]
    ep = next(ds.iter_episodes())
    with pytest.raises(DataError, match="frame_every: 1, the card's source.frame_every is 2"):
        episode_to_sample(Episode(**{**ep.__dict__, "frame_every": 1, "frames": {"screen": ep.frames["screen"][:1].repeat(STEPS, 0)}}),
                          ds.card)


def test_an_episode_with_the_wrong_number_of_frames_is_refused(pong):
    ep = next(pong["k"].iter_episodes())
    bad = Episode(**{**ep.__dict__, "frames": {"screen": ep.frames["screen"][:-1]}})
    with pytest.raises(DataError, match=r"frames.screen: uint8 \[15, 32, 32, 3\], expected uint8 \[16, H, W, 3\] "
                                        r"\(one frame every 2 steps of 31: frame_every 2\)"):
        bad.check(pong["k"].card)


def test_an_rlds_export_of_a_k_dataset_is_refused(pong, tmp_path):
    from unified_action.data.rlds import write_rlds

    with pytest.raises(DataError, match="source.frame_every 2: the episodes have a frame only every 2 steps"):
        write_rlds(pong["k"].card, pong["k"].iter_episodes(), tmp_path / "rlds")
    assert not (tmp_path / "rlds").exists()
