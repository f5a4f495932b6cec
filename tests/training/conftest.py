"""Real shard datasets of two embodiments, a job config writer, and a runner of real `uact pretrain` processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from data.conftest import record
from support import ROOT

from unified_action.tokenization import Registry

PRETRAIN_TIMEOUT = 600


@pytest.fixture(scope="session")
def mixture(tmp_path_factory):
    """CarRacing (vehicle, 4 episodes) and Pong (game, 4 episodes) at 32x32, tokenizers registered."""
    root = tmp_path_factory.mktemp("mixture")
    car = record(root / "carracing", "carracing", episodes=4, steps=40, seed=5, shard_kb=150)
    pong = record(root / "ale_pong", "ale_pong", episodes=4, steps=40, seed=6, shard_kb=150)
    reg = Registry(root / "tokenizers")
    for ds in (car, pong):
        reg.register(ds.card, list(ds.iter_actions()))
    return {"root": root, "datasets": [str(car.root), str(pong.root)], "registry": str(reg.root)}


def job(mixture: dict, out: Path, **train) -> dict:
    """A tiny job on the mixture: 32x32 clips of 2+2 frames, a 1-block model, fp32, ZeRO-1, no loader workers."""
    return {
        "name": "test",
        "out": str(out),
        "model": {"size": "tiny", "overrides": {"depth": 1}},
        "data": {"registry": mixture["registry"], "datasets": [{"path": p} for p in mixture["datasets"]],
                 "context_frames": 2, "future_frames": 2, "image_size": [32, 32], "num_workers": 0},
        "optim": {"lr": 2e-3, "warmup_steps": 2},
        "train": {"steps": 6, "micro_batch": 2, "deepspeed": str(ROOT / "pretrain/ds/zero1.json"), "checkpoint_every": 3,
                  "keep_checkpoints": 2, "log_every": 2, "precision": "fp32", **train},
    }


def write_job(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_pretrain(config: Path, *args, fault: str = "", nproc: int = 1) -> subprocess.CompletedProcess:
    """`uact pretrain` in fresh processes, as a user runs it (torchrun for nproc > 1)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["UACT_FAULT"] = fault
    cmd = [sys.executable, "-m", "unified_action.cli", "pretrain", "--config", str(config), "--nproc", str(nproc), *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=PRETRAIN_TIMEOUT, cwd=ROOT)


def losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]


def tensorboard_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of a TensorBoard log, read by tensorboard's own reader in a child process: the reader imports
    TensorFlow when it is installed, and TensorFlow must not enter a test process that renders MuJoCo."""
    code = ("import json, sys\n"
            "from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n"
            "ev = EventAccumulator(sys.argv[1]); ev.Reload()\n"
            "print(json.dumps({t: [(e.step, e.value) for e in ev.Scalars(t)] for t in ev.Tags()['scalars']}))\n")
    r = subprocess.run([sys.executable, "-c", code, str(logdir)], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert r.returncode == 0, r.stderr[-2000:]
    return {k: [tuple(x) for x in v] for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items()}


def checkpoints(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())
