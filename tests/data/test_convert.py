"""Recording real simulators and converting LeRobot data into shards: exact read-back, parallel parts, kill and
resume, statistics, and registering a tokenizer from shards."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from support import CARDS, ROOT

from data.conftest import record
from unified_action.cards import load_card
from unified_action.data.convert import SourceSpec, WriteSettings, write_dataset
from unified_action.data.dataset import open_dataset
from unified_action.errors import DataError
from unified_action.sims import record_episodes
from unified_action.tokenization import Registry

UACT = os.path.join(os.path.dirname(sys.executable), "uact")  # the console command of this environment


def _record(card: str, episodes: int, steps: int, seed: int) -> list:
    return list(record_episodes(load_card(CARDS / f"{card}.md"), range(episodes), steps, seed))


def record_elsewhere(card: str, episodes: int, steps: int, seed: int) -> list:
    """Record in a spawned process, as `uact data record` does: a MuJoCo GL context and TensorFlow (the RLDS
    tests) must never meet in one process, they crash it."""
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_record, card, episodes, steps, seed).result()


def assert_same_episode(a, b) -> None:
    assert (a.card, a.index, len(a), a.instruction) == (b.card, b.index, len(b), b.instruction)
    assert sorted(a.frames) == sorted(b.frames)
    for k in a.frames:
        assert np.array_equal(a.frames[k], b.frames[k]), k
    for k in a.actions:
        assert a.actions[k].dtype == b.actions[k].dtype and np.array_equal(a.actions[k], b.actions[k]), k
    for k in a.proprio:
        assert np.array_equal(a.proprio[k], b.proprio[k]), k
    for k in ("reward", "is_first", "is_last", "is_terminal"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k


# robot arm / pusher, game, driving; frames kept at their native size so the read-back is exact
@pytest.mark.parametrize("card,steps", [("gym_pusht", 20), ("ale_pong", 30), ("carracing", 25),
                                        pytest.param("metaworld_pick_place", 15, marks=pytest.mark.slow),
                                        pytest.param("highway_fast", 6, marks=pytest.mark.slow)])
def test_record_reads_back_exactly(tmp_path, card, steps):
    c = load_card(CARDS / f"{card}.md")
    truth = record_elsewhere(card, 2, steps, seed=5)
    ds = record(tmp_path / card, card, episodes=2, steps=steps, seed=5, size=None)
    back = list(ds.iter_episodes())
    assert len(back) == 2
    for a, b in zip(truth, back):
        a.frames = {cam.name: cam.cropped(a.frames[cam.name]) for cam in c.header.cameras}  # shards keep the card's crop
        assert_same_episode(a, b)
        assert a.frames[c.header.cameras[0].name].std() > 0  # a real picture, not a blank frame
    both = np.concatenate([e.actions["action"].reshape(len(e), -1) for e in truth])
    assert len(np.unique(both, axis=0)) > 1  # the behaviour policy varies the actions


@pytest.mark.slow
def test_record_aloha_bimanual(tmp_path):
    """gym-aloha renders at a few steps/s on a CPU: a short recording, resized to 64x64."""
    ds = record(tmp_path / "aloha", "gym_aloha_insertion", episodes=1, steps=8, seed=0, size=(64, 64))
    [ep] = list(ds.iter_episodes())
    assert ep.frames["top"].shape == (8, 64, 64, 3) and ep.actions["action"].shape == (8, 14)
    assert ep.proprio["observation/agent_pos"].shape == (8, 14) and ep.frames["top"].std() > 0


def test_parallel_parts_write_the_same_episodes(tmp_path):
    one = record(tmp_path / "one", "carracing", episodes=4, steps=20, seed=2, workers=1)
    two = record(tmp_path / "two", "carracing", episodes=4, steps=20, seed=2, workers=2)
    assert len({sh["part"] for sh in two.manifest["shards"]}) == 2
    for a, b in zip(one.iter_episodes(), two.iter_episodes()):
        assert_same_episode(a, b)
    a, b = (json.loads((d.root / "stats.json").read_text()) for d in (one, two))
    for space in ("native", "unified"):  # equal up to the rounding of merging moments in another grouping
        assert a[space]["slots"] == b[space]["slots"] and a[space]["count"] == b[space]["count"]
        for k in ("mean", "std", "min", "max", "q01", "q99"):
            np.testing.assert_allclose(a[space][k], b[space][k], rtol=1e-12, atol=1e-12)


def test_shards_reconvert_in_parts_to_the_same_episodes(shard_data, tmp_path):
    src = shard_data["carracing"]  # 6 episodes over 3 shards; 2 parts each read only the shards they need
    again = write_dataset(SourceSpec(str(src.root), "shards", root=str(src.root)), tmp_path / "again", workers=2,
                          settings=WriteSettings(image_size=None), progress=False)
    assert again.episodes == src.episodes == 6 and list(src.iter_episodes(2, 4))[0].index == 2
    for a, b in zip(src.iter_episodes(), again.iter_episodes()):
        assert_same_episode(a, b)


def test_statistics_match_numpy_over_all_steps(shard_data):
    ds = shard_data["carracing"]
    x = np.concatenate(list(ds.iter_actions()))
    stats = ds.stats()
    nat, uni = stats["native"], stats["unified"]
    assert nat["count"] == len(x) == ds.manifest["steps"]
    np.testing.assert_allclose(nat["mean"], x.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(nat["std"], x.std(0), rtol=1e-9)
    np.testing.assert_array_equal(nat["min"], x.min(0))
    np.testing.assert_array_equal(nat["q99"], np.quantile(x, 0.99, axis=0))
    assert uni["slots"] == ds.card.mapping.slot_names
    text = (ds.root / f"{ds.name}.md").read_text()
    assert "## This dataset" in text and "vehicle.steer" in text  # the card beside the shards carries them


def test_register_from_shards_uses_their_statistics(shard_data, tmp_path):
    ds = shard_data["carracing"]
    code = subprocess.run([UACT, "tokenizer", "register", str(ds.root / "carracing.md"), "--data", str(ds.root),
                           "--registry", str(tmp_path / "reg")], capture_output=True, text=True)
    assert code.returncode == 0, code.stderr
    tok = Registry(tmp_path / "reg").load("carracing")
    np.testing.assert_allclose(tok.stats.q01, ds.stats()["unified"]["q01"])
    np.testing.assert_allclose(tok.stats.q99, ds.stats()["unified"]["q99"])


def test_other_settings_into_the_same_directory_are_refused(tmp_path):
    record(tmp_path / "d", "carracing", episodes=2, steps=12, seed=1)
    with pytest.raises(DataError, match="settings"):
        record(tmp_path / "d", "carracing", episodes=2, steps=12, seed=1, size=(16, 16))
    again = record(tmp_path / "d", "carracing", episodes=2, steps=12, seed=1)  # same settings: complete, nothing to do
    assert again.episodes == 2


def test_killed_recording_resumes_to_identical_shards(tmp_path):
    """SIGKILL a recording after its first finished shard; the re-run skips finished shards, removes the half
    written one, and ends with byte-identical shards to an uninterrupted run."""
    args = ["data", "record", str(CARDS / "carracing.md"), "-n", "6", "--steps", "40", "--seed", "4", "--size", "32",
            "--shard-mb", "0.05", "-j", "1"]
    uact = UACT
    out = tmp_path / "killed"
    proc = subprocess.Popen([uact, *args, "-o", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "progress").glob("*.tar.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    finished = sorted(p.name for p in (out / "progress").glob("*.tar.json"))
    assert 2 <= len(finished) < 6
    with pytest.raises(DataError, match="no manifest"):
        open_dataset(out)
    subprocess.run([uact, *args, "-o", str(out)], cwd=ROOT, check=True, capture_output=True)
    subprocess.run([uact, *args, "-o", str(tmp_path / "clean")], cwd=ROOT, check=True, capture_output=True)
    resumed, clean = open_dataset(out), open_dataset(tmp_path / "clean")
    assert [(s.name, s.sha256) for s in resumed.shards] == [(s.name, s.sha256) for s in clean.shards]
    assert not list(out.glob("*.tmp")) and sorted(p.name for p in out.glob("*.tar")) == [s.name for s in clean.shards]


def test_lerobot_convert_reads_back_exactly(tmp_path):
    from data.lerobot_fixture import write_lerobot_v3

    rng = np.random.default_rng(0)
    eps = [{"frames": rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8),
            "action": rng.uniform(-1, 1, (n, 14)).astype(np.float32), "state": rng.uniform(-1, 1, (n, 14)).astype(np.float32),
            "task": "Insert the peg into the socket."} for n in (7, 9, 5)]
    root = write_lerobot_v3(tmp_path / "lerobot", eps, video=False)
    card = tmp_path / "lerobot_aloha_sim_insertion_human.md"  # the real card, its camera shrunk to the fixture's
    card.write_text((CARDS / card.name).read_text().replace("height: 480, width: 640", "height: 16, width: 16"))
    ds = write_dataset(SourceSpec(str(card), "lerobot", root=str(root)), tmp_path / "shards", workers=1,
                       settings=WriteSettings(image_size=None), progress=False)
    back = list(ds.iter_episodes())
    assert [len(e) for e in back] == [7, 9, 5]
    for e, src in zip(back, eps):
        assert np.array_equal(e.frames["top"], src["frames"])
        assert np.array_equal(e.actions["action"], src["action"]) and np.array_equal(e.proprio["observation.state"], src["state"])
        assert e.instruction == src["task"]


@pytest.mark.tensorflow
@pytest.mark.parametrize("schema", ["rt1", "bridge"])
@pytest.mark.parametrize("file_format", ["tfrecord", "array_record"])
def test_openx_rlds_convert_reads_back_exactly(tmp_path, schema, file_format):
    """RLDS builds with the published RT-1 (dict action, instruction in the observation) and Bridge (four
    cameras, one action vector) schemas -> shards in 2 processes -> read back equal to what tfds decodes."""
    from data.openx import build_bridge_like, build_rt1_like
    from unified_action.data import rlds

    build = build_rt1_like if schema == "rt1" else build_bridge_like
    card = CARDS / ("fractal20220817_data.md" if schema == "rt1" else "bridge_dataset.md")
    root = tmp_path / "tfds"
    build(root, episodes=3, steps=5, seed=1, file_format=file_format)
    ds = write_dataset(SourceSpec(str(card), "rlds", root=str(root)), tmp_path / "shards", workers=2,
                       settings=WriteSettings(image_size=None, shard_bytes=300_000), progress=False)
    source = list(rlds.read_episodes(load_card(card), root))
    back = list(ds.iter_episodes())
    assert len(back) == len(source) == 3 and len(ds.manifest["shards"]) >= 2
    for a, b in zip(source, back):
        assert_same_episode(a, b)
    assert len(back[0].frames) == (1 if schema == "rt1" else 4)


@pytest.mark.tensorflow
def test_record_with_rlds_output_reads_back(tmp_path):
    from unified_action.data import rlds

    out = tmp_path / "pong"
    subprocess.run([UACT, "data", "record", str(CARDS / "ale_pong.md"), "-o", str(out), "-n", "2", "--steps", "12",
                    "--size", "32", "-j", "1", "--rlds"], check=True, capture_output=True)
    ds = open_dataset(out)
    for a, b in zip(ds.iter_episodes(), rlds.read_episodes(ds.card, out / "rlds")):
        assert_same_episode(a, b)
