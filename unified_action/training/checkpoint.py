"""Atomic checkpoints over DeepSpeed's non-atomic save, and exact resume.

Layout of a run's `checkpoints/`:

    step_00000100/            a COMPLETE checkpoint: only directories without a suffix are ever loaded
      state/                  DeepSpeed's save_checkpoint (module, ZeRO-partitioned optimizer, LR scheduler)
      rank00000.pt            per process: torch RNG states (CPU and CUDA), tensors only (weights_only load)
      rank00000.loader.json   per process: the ClipLoader state (what this rank's loop consumed)
      COMPLETE.json           written last by rank 0: step, world size, ZeRO stage, model config, tokenizers
    step_00000200.tmp/        being written, or left by a killed run: ignored, deleted on the next start

Every rank writes into `<name>.tmp/`; after a barrier rank 0 writes COMPLETE.json (tmp file + rename),
renames the directory to its final name (atomic on POSIX and on the shared filesystems clusters use for
checkpoints), fsyncs the parent and prunes the oldest complete checkpoints beyond `keep`. A process killed
anywhere before the rename leaves only a `.tmp` directory, so the previous complete checkpoint stays the
latest. (DeepSpeed writes its own `latest` file before its final barrier; we never use it.)

Resume loads every file weights-only (safe_load.py): a checkpoint file holding a pickled object is refused,
naming it. A complete checkpoint that cannot be used (an unreadable COMPLETE.json, a missing optimizer or
rank file) is skipped for the previous complete one and moved aside to `<name>.unusable`, saying so, so the
run re-saves that step and goes on; `uact export` of a run skips it the same way (and moves nothing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch

from unified_action.atomic import atomic_write_json, writing
from unified_action.errors import TrainingError
from unified_action.training import faults, safe_load
from unified_action.training.distributed import DistInfo, barrier

TAG = "state"  # DeepSpeed's tag directory inside a checkpoint
MARKER = "COMPLETE.json"
_NAME = re.compile(r"^step_(\d{8})$")
_OURS = re.compile(r"^step_\d{8}(\.tmp)?$")  # what remove_incomplete may delete (never a moved-aside `.unusable`)
MAX_WORLD = 65_536  # processes a checkpoint may say it was saved by: bounds the files checked for it


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict[str, torch.Tensor]:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def read_meta(path: Path) -> dict:
    """A checkpoint's COMPLETE.json; ValueError when it is not a JSON object."""
    meta = json.loads((path / MARKER).read_text())
    if not isinstance(meta, dict):
        raise ValueError(f"{path / MARKER}: not a JSON object")
    return meta


def checkpoint_problem(path: Path) -> str | None:
    """Why a complete checkpoint cannot be resumed from (or exported), or None."""
    try:
        meta = read_meta(path)
        step, world = int(meta["step"]), int(meta["world_size"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:  # garbage, empty, deeply nested
        return f"{MARKER} is unreadable: {type(e).__name__}"
    if not _NAME.match(path.name) or int(_NAME.match(path.name).group(1)) != step:
        return f"{MARKER} says step {step}"
    if not 1 <= world <= MAX_WORLD:
        return f"{MARKER} says world_size {world}"
    state = path / TAG
    if not any(state.glob("*model_states.pt")):
        return f"no model states in {TAG}/"
    for r in range(world):
        if not any(state.glob(f"*zero_pp_rank_{r}_mp_rank_*_optim_states.pt")):
            return f"no optimizer state of rank {r} in {TAG}/"
        for name in (f"rank{r:05d}.pt", f"rank{r:05d}.loader.json"):
            if not (path / name).is_file():
                return f"{name} is missing"
    return None


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in `root`, oldest first."""
    if not root.is_dir():
        return []
    found = ((_NAME.match(p.name), p) for p in root.iterdir())
    return sorted((int(m.group(1)), p) for m, p in found if m and (p / MARKER).is_file())


def newest_usable(complete: list[tuple[int, Path]]) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest checkpoint without a problem or None, [(newer unusable checkpoint, why)])."""
    skipped = []
    for _, path in reversed(complete):
        why = checkpoint_problem(path)
        if why is None:
            return path, skipped
        skipped.append((path, why))
    return None, skipped


def move_aside(path: Path) -> Path:
    """Rename an unusable checkpoint to `<name>.unusable` (`.unusable-2`, ... when taken) -> its new path."""
    for i in range(1, 1000):
        aside = path.with_name(path.name + (".unusable" if i == 1 else f".unusable-{i}"))
        if not aside.exists():
            os.replace(path, aside)
            return aside
    raise TrainingError(f"{path}: unusable, and 999 earlier unusable copies of it are in the way; remove them")


class CheckpointManager:
    def __init__(self, root: str | Path, keep: int, dist: DistInfo):
        self.root, self.keep, self.dist = Path(root), keep, dist

    # -- finding
    def complete(self) -> list[tuple[int, Path]]:
        return complete_checkpoints(self.root)

    def latest(self) -> Path | None:
        """The newest complete checkpoint that has every file a resume reads. Newer unusable ones are moved aside
        (rank 0, saying so) to `<name>.unusable`, kept for a look but never loaded: left in place, the step they hold
        could never be saved again (the rename onto a full directory fails), so the run could not go on."""
        usable, skipped = newest_usable(self.complete())
        if skipped and usable is None:
            raise TrainingError(f"{self.root}: no usable checkpoint: {'; '.join(f'{p.name} ({why})' for p, why in skipped)}; "
                                f"pass --overwrite to start again")
        if skipped and self.dist.is_main:
            aside = [move_aside(p) for p, _ in skipped]
            print(f"falling back to {usable}: skipped {'; '.join(f'{p.name} ({why})' for p, why in skipped)}; "
                  f"moved aside to {', '.join(a.name for a in aside)}", flush=True)
        return usable

    def problem(self, path: Path) -> str | None:
        return checkpoint_problem(path)

    def remove_incomplete(self) -> list[Path]:
        """Delete what killed runs left behind (`.tmp` directories); rank 0 only, before anyone saves."""
        stale = [p for p in self.root.glob("step_*")
                 if _OURS.match(p.name) and p.is_dir() and not (p / MARKER).is_file()] if self.root.is_dir() else []
        if self.dist.is_main:
            for p in stale:
                shutil.rmtree(p, ignore_errors=True)
        barrier()
        return stale

    # -- saving
    def save(self, engine, step: int, loader_state: dict, meta: dict) -> Path:
        name = f"step_{step:08d}"
        final, tmp = self.root / name, self.root / f"{name}.tmp"
        if self.dist.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        barrier()
        with writing(final, tmp):  # a full disk: one line, and the half-made checkpoint deleted
            engine.save_checkpoint(str(tmp), tag=TAG, client_state={"step": step}, save_latest=False)
            r = self.dist.rank
            torch.save(rng_state(), tmp / f"rank{r:05d}.pt")
            atomic_write_json(tmp / f"rank{r:05d}.loader.json", loader_state)
            barrier()
            faults.maybe_kill("save", step)  # fault injection for tests: SIGKILL with the checkpoint half-made
            if self.dist.is_main:
                atomic_write_json(tmp / MARKER, {"step": step, "world_size": self.dist.world_size, **meta})
        if self.dist.is_main:
            if final.exists():  # a directory of this step that latest() did not pick (it moves the unusable aside)
                print(f"{final} exists and was not resumed from: moved aside to {move_aside(final).name}", flush=True)
            os.replace(tmp, final)
            _fsync_dir(self.root)
            for _, old in self.complete()[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        barrier()
        return final

    # -- loading
    def read_meta(self, path: Path) -> dict:
        return read_meta(path)

    def load(self, engine, path: Path) -> tuple[dict, dict]:
        """Restore engine, optimizer, scheduler and this rank's RNG; -> (COMPLETE.json meta, this rank's loader state)."""
        meta = self.read_meta(path)
        saved = int(meta["world_size"])
        if saved != self.dist.world_size:
            raise TrainingError(
                f"{path}: saved by {saved} processes, this run has {self.dist.world_size}; ZeRO partitions optimizer state "
                f"per process and the loader splits data per process, so resume with {saved} processes (--nproc {saved}), "
                f"or convert the weights and start a new run from them: `uact export {path}` then "
                f"`uact pretrain ... --init-from <export dir>`")
        safe_load.install(engine)  # DeepSpeed's own load unpickles with weights_only=False
        load_path, _ = engine.load_checkpoint(str(path), tag=TAG, load_optimizer_states=True, load_lr_scheduler_states=True)
        if load_path is None:
            raise TrainingError(f"{path}: DeepSpeed could not load {path / TAG}")
        r = self.dist.rank
        set_rng_state(safe_load.weights_only_load(path / f"rank{r:05d}.pt"))
        loader_state = json.loads((path / f"rank{r:05d}.loader.json").read_text())
        return meta, loader_state
