"""The main job on embedded defaults: what exists of the pipeline, end to end, re-using finished stages.

Now: record action episodes from real simulators (a robot arm, a game, a vehicle), register their
tokenizers into one shared vocabulary, and report the round trip. Later issues add frames, pretraining,
few-shot fine-tuning and the HTML report.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from unified_action.cards import load_card
from unified_action.console import make_console
from unified_action.sims import record_actions
from unified_action.tokenization import Registry
from unified_action.tokenization.episodes import load_episodes


@dataclass(frozen=True)
class DemoDataset:
    card: str  # data_cards/<card>.md
    episodes: int
    steps: int
    style: str = "smooth"


# One robot arm, one game, one vehicle: small enough for minutes on a 2-core CPU.
DEMO_DATASETS = (
    DemoDataset("metaworld_pick_place", episodes=30, steps=240, style="waypoint"),
    DemoDataset("ale_pong", episodes=12, steps=200),
    DemoDataset("carracing", episodes=8, steps=150),
)


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)  # a killed run never leaves a half-written episode under the final name


def record_stage(cards_dir: Path, out: Path, console: Console) -> dict[str, Path]:
    dirs = {}
    for ds in tqdm(DEMO_DATASETS, desc="record episodes from simulators", unit="dataset"):
        card = load_card(cards_dir / f"{ds.card}.md")
        d = out / "episodes" / ds.card
        dirs[ds.card] = d
        if (d / "DONE").is_file():
            continue
        d.mkdir(parents=True, exist_ok=True)
        for i, ep in enumerate(record_actions(card, ds.episodes, ds.steps, seed=1000, style=ds.style)):
            _save_npy(d / f"episode_{i:04d}.npy", ep)
        (d / "DONE").write_text(f"{ds.episodes} episodes\n")
        console.log(f"recorded {ds.episodes} episodes of {ds.card} from {card.header.source.env_id}")
    return dirs


def register_stage(cards_dir: Path, dirs: dict[str, Path], registry: Registry, console: Console) -> None:
    for name, d in dirs.items():
        card = load_card(cards_dir / f"{name}.md")
        if name in registry.names() and registry.spec(name).card_sha256 == card.content_hash:
            continue
        registry.register(card, load_episodes(d, card), force=name in registry.names(), log=console.log)


def run_demo(out: Path = Path("runs/demo"), cards_dir: Path = Path("data_cards")) -> dict:
    console = make_console()
    out.mkdir(parents=True, exist_ok=True)
    registry = Registry(out / "tokenizers")
    dirs = record_stage(cards_dir, out, console)
    register_stage(cards_dir, dirs, registry, console)
    table = Table(title="registered tokenizers: held-out round trip")
    for col in ("tokenizer", "embodiment", "token", "kind", "slots", "tokens/chunk", "RMSE (norm.)", "invalid"):
        table.add_column(col, overflow="fold")
    summary = {}
    for name in dirs:
        s = registry.spec(name)
        h = s.heldout
        table.add_row(name, s.embodiment, str(s.embodiment_token), s.kind, str(len(s.slots)), f"{h['tokens_mean']:.1f}",
                      f"{h['rmse_normalized']:.4f}", str(h["invalid"]))
        summary[name] = {"embodiment_token": s.embodiment_token, "content_hash": registry.content_hash(name), **h}
    console.print(table)
    vocab = registry.vocabulary()
    console.print(f"shared vocabulary: layout v{vocab.version}, {vocab.size} ids, {len(vocab.embodiments)} embodiments")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    console.print(f"wrote {out / 'summary.json'}")
    return summary
