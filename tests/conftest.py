"""Shared fixtures: cards from data_cards/, realistic actions from the real simulators, fitted tokenizers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import CARDS, small_tmpfs

from unified_action.cards import load_card
from unified_action.sims import record_actions
from unified_action.tokenization import Registry

os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(scope="session")
def cards_dir() -> Path:
    return CARDS


@pytest.fixture(scope="session")
def sim_episodes():
    """Native action episodes per card: ALOHA from its real action space (stepping renders at ~7 steps/s),
    the others by stepping the real simulators under seeded behaviour policies."""
    specs = {
        "gym_aloha_insertion": dict(episodes=24, steps=300, step_env=False, style="waypoint"),
        "carracing": dict(episodes=8, steps=120, step_env=True),
        "ale_pong": dict(episodes=6, steps=120, step_env=True),
        "highway_fast": dict(episodes=4, steps=30, step_env=True),
    }
    return {name: record_actions(load_card(CARDS / f"{name}.md"), seed=7, **kw) for name, kw in specs.items()}


@pytest.fixture(scope="session")
def registry(tmp_path_factory, sim_episodes) -> Registry:
    """One registry holding a fast (ALOHA), a bin (CarRacing) and a discrete (Pong) tokenizer."""
    reg = Registry(tmp_path_factory.mktemp("registry"))
    for name in ("gym_aloha_insertion", "carracing", "ale_pong"):
        reg.register(load_card(CARDS / f"{name}.md"), sim_episodes[name])
    return reg



@pytest.fixture()
def small_disk(tmp_path):
    """A real 1 MiB tmpfs under tmp_path: a disk that fills (grow it with `mount -o remount,size=20m`)."""
    with small_tmpfs(tmp_path / "small") as mnt:
        yield mnt
