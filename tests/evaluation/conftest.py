"""A real tiny world model exported in the real format, and real simulator datasets to evaluate it on.

The model is trained for 20 plain AdamW steps on the CarRacing clips (no DeepSpeed: seconds, not a
minute), so its rollouts are not noise; Pong is recorded and registered too, but the model is not trained on it.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from data.conftest import record

from unified_action.data.loader import ClipLoader, LoaderConfig, MixtureEntry
from unified_action.models import WorldModel, model_config
from unified_action.models.batch import to_device
from unified_action.tokenization import Registry
from unified_action.training.export import export_meta, write_export

TRAIN_STEPS = 20
HORIZON = 5  # > the model's window of 4 frames: the rollout slides past it
CLIPS = 4


@contextmanager
def one_thread():
    """Tiny tensors on a shared 2-core machine: one torch thread runs them ~4x faster than two threads fighting
    other processes for the cores (measured). Restored after, so other tests keep torch's default."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def train_tiny(registry: Registry, dataset: str, steps: int, episodes=(0, 3), **overrides) -> WorldModel:
    names = registry.names()
    torch.manual_seed(0)
    model = WorldModel(model_config("tiny", image_size=(32, 32), vocab_size=registry.vocabulary().size,
                                    max_action_tokens=max(registry.load(n).spec.max_tokens for n in names),
                                    max_frames=4, context_frames=2, depth=1, **overrides))
    cfg = LoaderConfig(datasets=(MixtureEntry(dataset, episodes=tuple(episodes)),), registry=str(registry.root), context_frames=2,
                       future_frames=2, image_size=(32, 32), batch_size=4, seed=0,
                       max_action_tokens=model.cfg.max_action_tokens)
    loader = ClipLoader(cfg, rank=0, world_size=1)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    done = 0
    while done < steps:
        for batch in loader:
            loss = model(to_device(batch, torch.device("cpu")))["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return model.eval()


@pytest.fixture(scope="session")
def evalsetup(tmp_path_factory):
    """CarRacing (5 episodes) and Pong (2) at 32x32, both registered; a tiny model trained on CarRacing episodes 0-2,
    exported knowing only the CarRacing tokenizer."""
    root = tmp_path_factory.mktemp("eval")
    car = record(root / "carracing", "carracing", episodes=5, steps=60, seed=5, shard_kb=150)  # 12 frames at stride 5
    pong = record(root / "ale_pong", "ale_pong", episodes=2, steps=24, seed=6, shard_kb=150)  # only to be refused
    reg = Registry(root / "tokenizers")
    for ds in (car, pong):
        reg.register(ds.card, list(ds.iter_actions()))
    with one_thread():
        model = train_tiny(reg, str(car.root), TRAIN_STEPS)
    meta = export_meta(model.cfg.to_dict(), reg, ["carracing"], {"config": "tests/evaluation"})
    export = write_export(model.state_dict(), meta, root / "export", trained={"step": TRAIN_STEPS, "run": meta["run"]})
    return {"root": root, "carracing": car, "ale_pong": pong, "registry": reg, "export": export}


@pytest.fixture(scope="session")
def evaluated(evalsetup):
    """One evaluation of the exported model on CarRacing episodes 3-4 (two held-out episodes), shared by the tests."""
    from unified_action.evaluation import evaluate

    s = evalsetup
    with one_thread():
        return evaluate(s["export"], s["registry"], [s["carracing"].root], episodes=(3, 5), context_frames=2,
                        horizon=HORIZON, clips=CLIPS, steps=2, seed=0, examples=2, progress=False)
