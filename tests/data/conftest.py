"""Small real shard datasets recorded from real simulators, with their tokenizers registered."""

from __future__ import annotations

import pytest
from support import CARDS

from data.layouts import to_layout1
from unified_action.data.convert import SourceSpec, WriteSettings, write_dataset
from unified_action.data.dataset import open_dataset
from unified_action.tokenization import Registry


def record(out, card: str, episodes: int, steps: int, seed: int = 0, shard_kb: float = 120, size=(32, 32), workers: int = 1):
    spec = SourceSpec(str(CARDS / f"{card}.md"), "sim", episodes=episodes, steps=steps, seed=seed)
    return write_dataset(spec, out, workers=workers, settings=WriteSettings(image_size=size, shard_bytes=int(shard_kb * 1024)),
                         progress=False)


@pytest.fixture(scope="session")
def shard_data(tmp_path_factory):
    """CarRacing (6 episodes, 2 per shard) and Pong (4 episodes), tokenizers registered from the shards."""
    root = tmp_path_factory.mktemp("shards")
    car = record(root / "carracing", "carracing", episodes=6, steps=48, seed=11, shard_kb=60)  # 2 episodes a shard
    pong = record(root / "ale_pong", "ale_pong", episodes=4, steps=40, seed=3)
    reg = Registry(root / "tokenizers")
    for ds in (car, pong):
        reg.register(ds.card, list(ds.iter_actions()))
    car1 = to_layout1(car.root, root / "carracing_layout1")  # the same episodes as layout 1 wrote them
    return {"root": root, "carracing": open_dataset(car.root), "ale_pong": open_dataset(pong.root), "registry": reg,
            "carracing_layout1": open_dataset(car1)}
