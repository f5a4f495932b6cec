"""RLDS reading and writing against real TFDS builds: the published RT-1 and Bridge schemas, in both record formats."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow_datasets as tfds  # noqa: E402  (installed by the rlds extra: a missing one must fail, not skip)
import tree  # noqa: E402
from support import CARDS

from data.openx import BRIDGE_INSTRUCTIONS, RT1_INSTRUCTIONS, build_bridge_like, build_rt1_like
from unified_action.cards import load_card, parse_card
from unified_action.data.episode import Episode
from unified_action.data.rlds import builder_dir, count_episodes, read_episodes, step_path_of_camera, write_rlds
from unified_action.errors import DataError

pytestmark = pytest.mark.tensorflow  # run in their own process by `make test` (Makefile)

FORMATS = ["tfrecord", "array_record"]
SCHEMAS = {"rt1": (build_rt1_like, "fractal20220817_data"), "bridge": (build_bridge_like, "bridge_dataset")}
N_EPISODES = 4


def tfds_episodes(bdir, split="train"):
    """Every episode of the split as tfds itself decodes it, step by step: (steps stacked over time, the rest)."""
    builder = tfds.builder_from_directory(str(bdir))
    stack = lambda steps: tree.map_structure(lambda *xs: np.stack(xs), *steps)  # noqa: E731
    if builder.info.file_format.value == "array_record":
        for ep in builder.as_data_source(split):
            yield stack([ep["steps"][j] for j in range(len(ep["steps"]))]), {k: v for k, v in ep.items() if k != "steps"}
    else:
        ds = builder.as_dataset(split, shuffle_files=False, read_config=tfds.ReadConfig(interleave_cycle_length=1))
        for ep in ds:
            rest = tree.map_structure(lambda t: t.numpy(), {k: v for k, v in ep.items() if k != "steps"})
            yield stack(list(tfds.as_numpy(ep["steps"]))), rest


def dig(d, path):
    for part in path.split("/"):
        d = d[part]
    return d


@pytest.fixture(scope="module", params=[(s, f) for s in SCHEMAS for f in FORMATS], ids=lambda p: f"{p[0]}-{p[1]}")
def openx(request, tmp_path_factory):
    """A small build of one schema in one format, with its card and what tfds decodes from it."""
    schema, fmt = request.param
    build, card_name = SCHEMAS[schema]
    root = tmp_path_factory.mktemp(f"{schema}_{fmt}")
    bdir = build(root, episodes=N_EPISODES, steps=5, seed=1, file_format=fmt)
    card = load_card(CARDS / f"{card_name}.md")
    return SimpleNamespace(schema=schema, fmt=fmt, root=root, bdir=bdir, card=card, expected=list(tfds_episodes(bdir)))


def test_read_equals_what_tfds_decodes(openx):
    card, bdir = openx.card, openx.bdir
    assert builder_dir(card, openx.root) == bdir and builder_dir(card, bdir) == bdir
    assert count_episodes(card, openx.root) == N_EPISODES
    episodes = list(read_episodes(card, openx.root))
    assert len(episodes) == len(openx.expected) == N_EPISODES
    assert len({len(e) for e in episodes}) > 1, "fixture episodes should vary in length"
    for i, (ep, (steps, rest)) in enumerate(zip(episodes, openx.expected)):
        T = len(steps["is_first"])
        assert (ep.card, ep.index, len(ep)) == (card.name, i, T)
        ep.check(card)
        for cam in card.header.cameras:
            assert ep.frames[cam.name].dtype == np.uint8 and ep.frames[cam.name].shape == (T, cam.height, cam.width, 3)
            assert np.array_equal(ep.frames[cam.name], dig(steps, cam.key))
        for f in card.header.action:
            want = dig(steps, f.path)
            assert ep.actions[f.path].dtype == want.dtype == np.dtype(f.dtype), f.path
            assert np.array_equal(ep.actions[f.path], want.reshape(T, *f.shape)), f.path
        for p in card.header.proprio:
            assert np.array_equal(ep.proprio[p.path], dig(steps, p.path))
        for flag in ("reward", "is_first", "is_last", "is_terminal"):
            assert np.array_equal(getattr(ep, flag), steps[flag]), flag
        assert ep.reward.dtype == np.float32 and ep.is_last.dtype == bool and ep.is_last[-1] and ep.is_first[0]
        assert ep.instruction == dig(steps, card.header.instruction.path)[0].decode()
        if openx.schema == "rt1":
            assert ep.discount is None and ep.source == f"{bdir}[{i}]"  # RT-1 has neither discount nor episode_metadata
            assert ep.instruction in RT1_INSTRUCTIONS
            assert ep.actions["action/terminate_episode"].dtype == np.int32
            assert ep.actions["action/terminate_episode"][-1].tolist() == [1, 0, 0]
            assert ep.native_actions(card).shape == (T, 13)
        else:
            assert np.array_equal(ep.discount, steps["discount"]) and ep.discount.dtype == np.float32
            assert ep.source == rest["episode_metadata"]["file_path"].decode()
            assert ep.instruction in BRIDGE_INSTRUCTIONS
            assert set(ep.frames) == {"over_shoulder", "cam_1", "cam_2", "cam_3"}


def test_start_stop_slices_the_full_read(openx):
    card, root = openx.card, openx.root
    full = list(read_episodes(card, root))
    for start, stop in [(1, 3), (0, 1), (3, None), (2, 99), (4, None), (7, 9), (2, 2)]:
        part = list(read_episodes(card, root, start, stop))
        assert [e.index for e in part] == [e.index for e in full[start:stop]], (start, stop)
        for a, b in zip(part, full[start:stop]):
            assert all(np.array_equal(a.frames[k], b.frames[k]) for k in b.frames)
            assert all(np.array_equal(a.actions[k], b.actions[k]) for k in b.actions)
            assert a.instruction == b.instruction and a.source == b.source


def test_many_shards_read_in_one_order_in_both_formats(tmp_path):
    """Several record files: each format reads in the order tfds decodes, and both agree episode by episode."""
    card = load_card(CARDS / "fractal20220817_data.md")
    reads = {}
    for fmt in FORMATS:
        root = tmp_path / fmt
        bdir = build_rt1_like(root, episodes=6, steps=3, seed=2, file_format=fmt, shards=3)
        assert len(tfds.builder_from_directory(str(bdir)).info.splits["train"].shard_lengths) == 3
        reads[fmt] = list(read_episodes(card, root))
        for ep, (steps, _) in zip(reads[fmt], tfds_episodes(bdir), strict=True):
            assert np.array_equal(ep.actions["action/world_vector"], steps["action"]["world_vector"])
        assert [e.index for e in read_episodes(card, root, 2, 5)] == [2, 3, 4]
        assert all(np.array_equal(a.frames["main"], b.frames["main"]) for a, b in zip(read_episodes(card, root, 2, 5), reads[fmt][2:5]))
    for a, b in zip(*reads.values(), strict=True):
        assert a.instruction == b.instruction and np.array_equal(a.actions["action/world_vector"], b.actions["action/world_vector"])


def test_missing_action_path_names_it(openx):
    if openx.schema == "rt1":
        bad, missing, sibling = "path: action/world_vector", "action/world_vectr", "world_vector"
    else:
        bad, missing, sibling = "key: observation/image_3", "observation/image_4", "image_3"
    card = parse_card(openx.card.text.replace(bad, bad.split(": ")[0] + ": " + missing))
    with pytest.raises(DataError) as e:
        next(read_episodes(card, openx.root))
    msg = str(e.value)
    assert f"'{missing}' is missing" in msg and sibling in msg and str(openx.bdir) in msg and "episode 0" in msg
    assert "\n" not in msg


def test_split_from_card(tmp_path):
    build_bridge_like(tmp_path, episodes=2, steps=3, file_format="array_record")
    card = load_card(CARDS / "bridge_dataset.md")
    val = parse_card(card.text.replace("split: train", "split: val"))
    assert count_episodes(card, tmp_path) == 2 and count_episodes(val, tmp_path) == 1
    (ep,) = read_episodes(val, tmp_path)
    assert "/val/" in ep.source
    with pytest.raises(DataError, match=r"no split 'test' \(have \['train', 'val'\]\)"):
        read_episodes(parse_card(card.text.replace("split: train", "split: test")), tmp_path)


def test_missing_builder_dir_names_it(tmp_path):
    card = load_card(CARDS / "fractal20220817_data.md")
    for call in (lambda: read_episodes(card, tmp_path), lambda: count_episodes(card, tmp_path)):
        with pytest.raises(DataError, match="fractal20220817_data/0.1.0: no TFDS build") as e:
            call()
        assert str(tmp_path) in str(e.value) and "dataset_info.json" in str(e.value)
    with pytest.raises(DataError, match="no TFDS build"):
        read_episodes(load_card(CARDS / "gym_pusht.md"), tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------


def random_episode(card, index: int, T: int, rng: np.random.Generator, size=(20, 28)) -> Episode:
    """An episode that fits the card: small frames, actions of the card's dtypes, float32 proprio."""
    actions = {}
    for f in card.header.action:
        shape = (T, *f.shape)
        t = f.as_parts()[0].transform if len(f.as_parts()) == 1 else None  # a table maps a whole field
        if t is not None and t.type == "table" and t.input == "index":
            actions[f.path] = rng.integers(0, len(t.rows), shape).astype(f.dtype)
        elif t is not None and t.type == "table":
            actions[f.path] = np.eye(len(t.rows), dtype=f.dtype)[rng.integers(0, len(t.rows), T)]
        else:
            actions[f.path] = rng.uniform(-1, 1, shape).astype(f.dtype)
    inst = card.header.instruction
    return Episode(
        card=card.name, index=index,
        frames={c.name: rng.integers(0, 256, (T, *size, 3), dtype=np.uint8) for c in card.header.cameras},
        actions=actions,
        reward=rng.normal(size=T).astype(np.float32),
        is_first=np.arange(T) == 0, is_last=np.arange(T) == T - 1, is_terminal=rng.random(T) < 0.3,
        instruction=inst.text if inst is not None and inst.location == "constant" else f"task {index}",
        proprio={p.path: rng.normal(size=(T, *(p.shape or [4]))).astype(np.float32) for p in card.header.proprio},
        discount=rng.random(T).astype(np.float32) if index % 2 else None,
        source=f"test seed {index}",
    )


def assert_same(written: list[Episode], read: list[Episode], card) -> None:
    assert [e.index for e in read] == list(range(len(written)))
    for a, b in zip(written, read):
        assert len(a) == len(b) and a.instruction == b.instruction and a.source == b.source
        assert set(b.frames) == set(a.frames) and all(np.array_equal(a.frames[k], b.frames[k]) for k in a.frames)
        for f in card.header.action:
            assert b.actions[f.path].dtype == np.dtype(f.dtype) and np.array_equal(a.actions[f.path], b.actions[f.path]), f.path
        assert set(b.proprio) == set(a.proprio) and all(np.array_equal(a.proprio[k], b.proprio[k]) for k in a.proprio)
        for flag in ("reward", "is_first", "is_last", "is_terminal"):
            assert np.array_equal(getattr(a, flag), getattr(b, flag)), flag
        assert np.array_equal(b.discount, np.ones(len(a), np.float32) if a.discount is None else a.discount)


# carracing: camera key 'observation' (the frame is the observation); highway_fast: camera 'render', proprio
# 'observation'; gym_aloha_insertion: a nested camera key; ale_pong: a scalar int64 action.
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["gym_pusht", "ale_pong", "carracing", "highway_fast", "gym_aloha_insertion"])
def test_write_rlds_round_trip(tmp_path, name, fmt):
    card = load_card(CARDS / f"{name}.md")
    rng = np.random.default_rng(len(name))
    episodes = [random_episode(card, i, 3 + 2 * i, rng) for i in range(3)]
    bdir = write_rlds(card, iter(episodes), tmp_path, file_format=fmt)
    assert bdir == tmp_path / name / "1.0.0" and os.listdir(tmp_path) == [name]  # the temporary build is gone
    builder = tfds.builder_from_directory(str(bdir))
    assert builder.info.file_format.value == fmt and builder.name == name
    steps = builder.info.features["steps"]
    for cam in card.header.cameras:  # frames land under observation/, at their written size
        assert dig(steps.feature, step_path_of_camera(cam)).shape == (20, 28, 3)
    assert count_episodes(card, tmp_path) == 3
    assert_same(episodes, list(read_episodes(card, tmp_path)), card)


def test_write_rlds_rt1_card_round_trip(tmp_path):
    """RT-1 episodes read from the published schema, written again with the same card, read back identical."""
    card = load_card(CARDS / "fractal20220817_data.md")
    build_rt1_like(tmp_path / "src", episodes=2, steps=4, seed=5, file_format="array_record")
    episodes = list(read_episodes(card, tmp_path / "src"))
    bdir = write_rlds(card, episodes, tmp_path / "out")
    assert bdir == tmp_path / "out" / "fractal20220817_data" / "1.0.0"
    back = list(read_episodes(card, bdir))
    for ep in episodes:
        ep.source = f"{tmp_path / 'src' / 'fractal20220817_data' / '0.1.0'}[{ep.index}]"
    assert_same(episodes, back, card)
    assert back[0].actions["action/terminate_episode"].dtype == np.int32
    assert {e.instruction for e in back} <= set(RT1_INSTRUCTIONS)


def test_write_rlds_is_atomic_and_refuses_to_overwrite(tmp_path):
    card = load_card(CARDS / "gym_pusht.md")
    rng = np.random.default_rng(0)

    def failing():
        yield random_episode(card, 0, 4, rng)
        raise RuntimeError("recorder crashed")

    with pytest.raises(RuntimeError, match="recorder crashed"):
        write_rlds(card, failing(), tmp_path, file_format="array_record")
    assert os.listdir(tmp_path) == []  # nothing that looks like a build, no temporary directory left
    write_rlds(card, [random_episode(card, 0, 4, rng)], tmp_path, file_format="array_record")
    with pytest.raises(DataError, match="already exists"):
        write_rlds(card, [random_episode(card, 0, 4, rng)], tmp_path, file_format="array_record")
    write_rlds(card, [random_episode(card, i, 4, rng) for i in range(2)], tmp_path, file_format="array_record", overwrite=True)
    assert count_episodes(card, tmp_path) == 2 and os.listdir(tmp_path) == ["gym_pusht"]


def test_write_rlds_refuses_mismatched_episodes(tmp_path):
    card = load_card(CARDS / "gym_pusht.md")
    rng = np.random.default_rng(0)
    bigger = random_episode(card, 1, 4, rng, size=(24, 28))
    with pytest.raises(DataError, match=r"episode 1: frames.top: \[24, 28, 3\], expected \[20, 28, 3\]"):
        write_rlds(card, [random_episode(card, 0, 4, rng), bigger], tmp_path, file_format="array_record")
    with pytest.raises(DataError, match="no episodes"):
        write_rlds(card, [], tmp_path)
    assert os.listdir(tmp_path) == []
