"""Open-loop evaluation of an exported world model on held-out clips, one dataset (= one embodiment) at a time.

For every clip: the first `context_frames` real frames and the clip's real actions go in, `horizon` frames come
out, and they are compared with the real future frames step by step. Beside the model, two references:
- copy-last: the last context frame repeated. A world model that does not beat it has learned nothing of
  motion (on slow scenes it is a strong baseline, which is why it is in every table);
- counterfactual: the same context rolled out with the actions of a clip of ANOTHER episode of the same
  embodiment, with the same noise. dPSNR = PSNR(real actions) - PSNR(other actions) measures controllability:
  a model that ignores its actions scores ~0 however good its frames look.

A dataset is encoded by its own tokenizer (the one its card names), or, asked for (`tokenizer=`, `uact eval
--tokenizer`), by another embodiment's whose card maps the same native layout onto the same slots: the zero-shot
probe of an embodiment the model never saw, read as one it knows (that tokenizer's normalization and embodiment
token). The model must know that tokenizer; the dataset keeps its name in the tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from unified_action.data.dataset import open_dataset
from unified_action.data.frames import DEFAULT_ASPECT, check_aspect
from unified_action.errors import DataError, UnifiedActionError
from unified_action.evaluation import metrics as M
from unified_action.evaluation.truth import TRUTHS_DIFFER_DB, has_simulator, simulator_truth, truth_metrics
from unified_action.models.batch import ACTION_KEYS
from unified_action.models.sampling import rollout
from unified_action.tokenization import Registry

# metric -> (column title, higher is better); per clip and horizon step, in this order in tables and metrics.json
METRICS = {
    "psnr": ("PSNR (dB)", True),
    "ssim": ("SSIM", True),
    "baseline_psnr": ("copy-last PSNR", True),
    "baseline_ssim": ("copy-last SSIM", True),
    "counterfactual_psnr": ("other-actions PSNR", False),
    "dpsnr": ("dPSNR (dB)", True),
    # against the simulator's own frames under the other actions (truth.py); NaN for datasets without a simulator
    "cf_psnr": ("PSNR vs simulator, other actions", True),
    "cf_baseline_psnr": ("copy-last vs simulator, other actions", True),
    "action_accuracy": ("action accuracy", True),
}
POOL_FACTOR = 4  # clips read per clip evaluated, to choose them across episodes (see collect_clips)
HELDOUT_FRACTION = 0.2  # the default held-out split: the last 20% of the episodes in manifest order


@dataclass
class Example:
    """One clip's frames for the pictures: uint8 [frames, H, W, 3] each."""

    key: str
    context: np.ndarray
    real: np.ndarray
    generated: np.ndarray
    counterfactual: np.ndarray | None
    counterfactual_key: str | None
    truth: np.ndarray | None = None  # the simulator's frames under the counterfactual actions


@dataclass
class DatasetResult:
    """One embodiment's evaluation: metric -> [clips, horizon] values, and a few example clips."""

    name: str  # the dataset's card name
    path: str
    embodiment: str
    episodes: tuple[int, int]
    keys: list[str]
    counterfactual_keys: list[str | None]
    values: dict[str, np.ndarray]
    examples: list[Example] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tokenizer: str = ""  # the tokenizer that encoded its actions: the card's own (name), or a shared-slot one
    # a scene with several agents (evaluation/agents.py): agent -> {"dpsnr", "action_accuracy": [clips, horizon],
    # "attribution", "share"}, and strips with one agent's actions swapped
    agents: dict = field(default_factory=dict)
    agent_examples: list = field(default_factory=list)

    @property
    def clips(self) -> int:
        return len(self.keys)

    def steps(self) -> dict[str, list[float]]:
        """metric -> its mean at each horizon step (1..H)."""
        return {k: M.per_step(v) for k, v in self.values.items()}

    def overall(self) -> dict[str, float]:
        return {k: M.overall(v) for k, v in self.values.items()}


@dataclass
class EvalResult:
    model: str
    context_frames: int
    horizon: int
    steps: int
    seed: int
    datasets: list[DatasetResult]
    guidance: float = 1.0
    min_change: float = 0.0
    clips: int = 0  # the most clips asked for per embodiment (a dataset's own count is its DatasetResult's)

    def to_json(self) -> dict:
        """Everything but the frames; NaN (no value) becomes null so the file is strict JSON."""
        def clean(x):
            return [clean(v) for v in x] if isinstance(x, list) else (None if not math.isfinite(x) else x)

        return {
            "model": self.model, "context_frames": self.context_frames, "horizon": self.horizon,
            "sampling_steps": self.steps, "seed": self.seed, "psnr_cap_db": M.PSNR_CAP_DB,
            # what the rollouts were run with, so a report says how it was made and a rerun can tell it is stale
            "rollout": self.settings(),
            "metrics": {k: title for k, (title, _) in METRICS.items()},
            "datasets": {r.name: {
                "path": r.path, "embodiment": r.embodiment, "tokenizer": r.tokenizer or r.name, "episodes": list(r.episodes), "clips": r.clips,
                "keys": r.keys, "counterfactual_keys": r.counterfactual_keys, "notes": r.notes,
                "overall": {k: clean(v) for k, v in r.overall().items()},
                "per_step": {k: clean(v) for k, v in r.steps().items()},
                **({"agents": {a: {"dpsnr": clean(M.overall(m["dpsnr"])),
                                   "action_accuracy": clean(M.overall(m["action_accuracy"])),
                                   "attribution": clean(m["attribution"]), "share": clean(m["share"]),
                                   "per_step": {k: clean(M.per_step(m[k])) for k in ("dpsnr", "action_accuracy")}}
                               for a, m in r.agents.items()}} if r.agents else {}),
            } for r in self.datasets},
        }


    def settings(self) -> dict:
        return rollout_settings(self.context_frames, self.horizon, self.clips, self.steps, self.guidance,
                                self.min_change, self.seed)


def rollout_settings(context_frames: int, horizon: int, clips: int, steps: int, guidance: float, min_change: float,
                     seed: int) -> dict:
    """The settings an evaluation's numbers depend on, as metrics.json records them under "rollout"."""
    return {"context_frames": context_frames, "horizon": horizon, "clips": clips, "sampling_steps": steps,
            "guidance": float(guidance), "min_change": float(min_change), "seed": seed}


def default_heldout(n_episodes: int) -> tuple[int, int]:
    """The last 20% of the episodes (at least one): training jobs take the first ones when they hold out any."""
    k = max(1, math.ceil(n_episodes * HELDOUT_FRACTION))
    return max(0, n_episodes - k), n_episodes


def episode_of(key: str) -> str:
    """'dataset/episode@start' -> 'episode'."""
    return key.rsplit("/", 1)[-1].split("@", 1)[0]


def collect_clips(path: str | Path, registry: Registry, episodes: tuple[int, int], model, context_frames: int,
                  horizon: int, limit: int, seed: int, batch_size: int = 8, aspect: str = DEFAULT_ASPECT,
                  tokenizer: str | None = None) -> dict:
    """Up to `limit` clips of episodes [lo, hi) of one dataset, as the training loader cuts them, concatenated:
    arrays with a leading clip axis, and 'key' a list of 'dataset/episode@start'. `tokenizer`: encode the actions
    with this registered tokenizer instead of the card's own (MixtureEntry.tokenizer)."""
    from unified_action.data.loader import ClipLoader, LoaderConfig, MixtureEntry

    cfg = LoaderConfig(datasets=(MixtureEntry(str(path), episodes=tuple(episodes), tokenizer=tokenizer),), registry=str(registry.root),
                       context_frames=context_frames, future_frames=horizon, image_size=tuple(model.cfg.image_size),
                       batch_size=max(1, min(batch_size, limit)), seed=seed, max_action_tokens=model.cfg.max_action_tokens,
                       aspect=aspect)
    loader = ClipLoader(cfg, rank=0, world_size=1)
    parts: dict[str, list] = {}
    n = 0
    # The loader yields a shard's clips together, so its first `limit` clips may all come from one episode: read
    # up to POOL_FACTOR times more, then take them round-robin over the episodes (clips of many episodes)
    for batch in loader:  # one epoch: every clip of the range once, in the loader's seeded order
        for k in ("frames", *ACTION_KEYS, "embodiment", "control_hz", "frame_stride", "key"):
            parts.setdefault(k, []).append(batch[k])
        n += len(batch["key"])
        if n >= limit * POOL_FACTOR:
            break
    keys = sum(parts["key"], [])
    pick = spread_over_episodes(keys, limit)
    return {k: [keys[i] for i in pick] if k == "key" else np.concatenate(v)[pick] for k, v in parts.items()}


def spread_over_episodes(keys: list[str], limit: int) -> list[int]:
    """Indices of up to `limit` keys taken round-robin over their episodes (first seen first), in that order."""
    by_episode: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        by_episode.setdefault(episode_of(k), []).append(i)
    queues = list(by_episode.values())
    out: list[int] = []
    for rank in range(max(map(len, queues), default=0)):
        out += [q[rank] for q in queues if rank < len(q)]
    return out[:limit]


def pick_counterfactuals(keys: list[str], pool_keys: list[str]) -> list[int | None]:
    """For clip i, the index in the pool of the first clip after position i (cyclically) from another episode, or
    None when the pool holds no other episode. The pool starts with the clips themselves, so clip i's partner is
    usually clip i+1: each clip's actions serve once as a counterfactual."""
    out: list[int | None] = []
    for i, key in enumerate(keys):
        ep = episode_of(key)
        n = len(pool_keys)
        out.append(next(((i + o) % n for o in range(1, n + 1) if episode_of(pool_keys[(i + o) % n]) != ep), None))
    return out


ROLLOUT_BATCH = 8  # clips rolled out together


def batch_rollout(model, data: dict, idx: np.ndarray, acts: dict[str, np.ndarray], *, C: int, H: int, steps: int, seed: int,
                  guidance: float, min_change: float, device: torch.device) -> np.ndarray:
    """Clips `idx` of `data` (collect_clips' arrays; one batch, starting at idx[0]) from their first C frames under the
    ACTION_KEYS arrays `acts` -> uint8 [len(idx), H, h, w, 3]. The noise comes from seed + idx[0]: a batch's rollouts
    under the real, the other and one agent's swapped actions all draw the same noise, so they differ by the actions."""
    torch.manual_seed(seed + int(idx[0]))
    on = {k: torch.from_numpy(data[k][idx]).to(device) for k in ("embodiment", "control_hz", "frame_stride")}
    return rollout(model, torch.from_numpy(data["frames"][idx, :C]).to(device),
                   {k: torch.from_numpy(v).to(device) for k, v in acts.items()}, on["embodiment"], on["control_hz"],
                   horizon=H, steps=steps, frame_stride=on["frame_stride"], guidance=guidance,
                   min_change=min_change).cpu().numpy()


def evaluate_dataset(model, registry: Registry, path: str | Path, episodes: tuple[int, int] | None, *, context_frames: int,
                     horizon: int, clips: int, steps: int, seed: int, device: torch.device, examples: int = 3,
                     guidance: float = 1.0, min_change: float = 0.0, progress: bool = True, aspect: str = DEFAULT_ASPECT,
                     tokenizer: str | None = None) -> DatasetResult:
    ds = open_dataset(path)
    tok_name = tokenizer or ds.name
    rng = tuple(episodes) if episodes is not None else default_heldout(ds.episodes)
    if not 0 <= rng[0] < rng[1] <= ds.episodes:
        raise DataError(f"{ds.root}: episodes: [{rng[0]}, {rng[1]}) is not a non-empty range within the dataset's "
                        f"{ds.episodes} episodes")
    C, H = context_frames, horizon
    data = collect_clips(path, registry, rng, model, C, H, clips, seed, aspect=aspect, tokenizer=tokenizer)
    keys = data["key"]
    tok = registry.load(tok_name)
    notes = [] if tok_name == ds.name else [
        f"actions encoded by tokenizer '{tok_name}' (embodiment '{tok.spec.embodiment}', token "
        f"{tok.spec.embodiment_token}), not the dataset's own '{ds.name}': its card maps the same slots"]
    # counterfactual actions: another held-out clip of another episode; when the held-out range is one episode,
    # clips of the other episodes of the dataset (their actions only: the frames compared are still held out)
    pool = {k: data[k] for k in (*ACTION_KEYS, "key")}
    if len({episode_of(k) for k in keys}) < 2 and ds.episodes > 1:
        other = (0, rng[0]) if rng[0] > 0 else (rng[1], ds.episodes)
        try:
            extra = collect_clips(path, registry, other, model, C, H, clips, seed + 1, aspect=aspect, tokenizer=tokenizer)
            pool = {k: (pool[k] + extra[k]) if k == "key" else np.concatenate([pool[k], extra[k]]) for k in pool}
            notes.append(f"counterfactual actions from episodes [{other[0]}, {other[1]}): the held-out range is one episode")
        except DataError as e:  # too short to cut a clip from: dPSNR stays undefined, said in the report
            notes.append(f"no counterfactual actions: {e}")
    partner = pick_counterfactuals(keys, pool["key"])
    if any(p is None for p in partner):
        notes.append("dPSNR undefined for clips with no clip of another episode to take actions from")

    N = len(keys)
    vals = {k: np.full((N, H), np.nan) for k in METRICS}
    cf_all = np.zeros_like(data["frames"][:, C:])  # every clip's rollout under the other actions, for the truth
    gen_all = np.zeros_like(cf_all)  # and under the real ones, for the per-agent swaps
    kept: list[Example] = []
    bar = tqdm(total=N, desc=f"rollouts {ds.name}", unit="clip", leave=False, disable=not progress)
    roll = dict(C=C, H=H, steps=steps, seed=seed, guidance=guidance, min_change=min_change, device=device)
    for s in range(0, N, ROLLOUT_BATCH):
        idx = np.arange(s, min(N, s + ROLLOUT_BATCH))
        frames = data["frames"][idx]
        real = frames[:, C:]
        gen = batch_rollout(model, data, idx, {k: data[k][idx] for k in ACTION_KEYS}, **roll)
        vals["psnr"][idx], vals["ssim"][idx] = M.psnr(real, gen), M.ssim(real, gen)
        gen_all[idx] = gen
        last = np.repeat(frames[:, C - 1:C], H, axis=1)
        vals["baseline_psnr"][idx], vals["baseline_ssim"][idx] = M.psnr(real, last), M.ssim(real, last)
        has_cf = np.array([partner[i] is not None for i in idx])
        cf = None
        if has_cf.any():
            src = np.array([partner[i] if partner[i] is not None else 0 for i in idx])
            cf = batch_rollout(model, data, idx, {k: pool[k][src] for k in ACTION_KEYS}, **roll)
            cf_psnr = np.where(has_cf[:, None], M.psnr(real, cf), np.nan)
            vals["counterfactual_psnr"][idx] = cf_psnr
            vals["dpsnr"][idx] = vals["psnr"][idx] - cf_psnr
            cf_all[idx] = cf
        for j, i in enumerate(idx):
            if len(kept) < examples:
                p = partner[i]
                kept.append(Example(keys[i], frames[j, :C], real[j], gen[j], cf[j] if cf is not None and p is not None else None,
                                    pool["key"][p] if p is not None else None))
        bar.update(len(idx))
    bar.close()
    partner_keys = [pool["key"][p] if p is not None else None for p in partner]
    if has_simulator(ds) and any(p is not None for p in partner):
        truth, ok, truth_notes = simulator_truth(ds, keys, partner_keys, data["frames"][:, C - 1], C,
                                                 int(data["frame_stride"][0]), H, tuple(model.cfg.image_size), aspect)
        notes += truth_notes
        if ok.any():
            frames = data["frames"][ok]
            scored = truth_metrics(frames[:, C:], cf_all[ok], truth[ok], np.repeat(frames[:, C - 1:C], H, axis=1))
            for k, v in scored.items():
                vals[k][ok] = v
            counted = int(np.isfinite(vals["action_accuracy"]).sum())
            notes.append(f"action accuracy over {counted} of {int(ok.sum()) * H} clip steps with simulator truth: those "
                         f"where the real future and the truth under the other actions differ (PSNR < {TRUTHS_DIFFER_DB:g} dB)")
        for j, ex in enumerate(kept):
            ex.truth = truth[j] if ok[j] else None
    agents, agent_examples = {}, []
    if tok.agents and any(p is not None for p in partner):  # one agent's actions swapped at a time
        from unified_action.evaluation.agents import evaluate_agents

        agents, agent_examples = evaluate_agents(model, ds, tok, data, pool, partner, roll, gen_all=gen_all,
                                                 examples=min(examples, 1), aspect=aspect, progress_note=notes)
    return DatasetResult(ds.name, str(ds.root), tok.spec.embodiment, rng, list(keys), partner_keys, vals, kept, notes,
                         tokenizer=tok_name, agents=agents, agent_examples=agent_examples)


def check_embodiments(paths: list[Path], config: dict, registry: Registry | None = None,
                      tokenizer: str | None = None) -> None:
    """Refuse a dataset whose tokenizer the model was not trained with (its embodiment token means nothing to it),
    and two datasets of one embodiment (one table per embodiment). With `tokenizer` (another embodiment's, read from
    `registry`), that one must be known to the model and map each dataset's native actions onto the same slots."""
    from unified_action.data.loader import shared_tokenizer

    seen: dict[str, Path] = {}
    if tokenizer is not None and tokenizer not in config["tokenizers"]:
        raise DataError(f"--tokenizer: '{tokenizer}', which the model was not trained with (it knows "
                        f"{', '.join(config['tokenizers'])})")
    for p in paths:
        ds = open_dataset(p)
        name = ds.name
        if tokenizer is not None and tokenizer != name:
            shared_tokenizer(ds, tokenizer, registry if registry is not None else Registry())
        elif name not in config["tokenizers"]:
            raise DataError(f"{p}: dataset of tokenizer '{name}', which the model was not trained with (it knows "
                            f"{', '.join(config['tokenizers'])}); fine-tune it on '{name}' first, or evaluate it through "
                            f"a tokenizer the model knows whose card maps the same slots (--tokenizer)")
        if name in seen:
            raise DataError(f"{p}: a second dataset of '{name}' (the first: {seen[name]}); evaluate one per embodiment")
        seen[name] = p


def trained_aspect(config: dict) -> str:
    """How the model's training job fitted frames of another aspect ratio (data.aspect), so held-out frames are
    fitted the same way; exports from before the option have none: the default."""
    node = config
    for key in ("trained", "run", "job", "data"):
        node = node.get(key) if isinstance(node, dict) else None
    aspect = node.get("aspect", DEFAULT_ASPECT) if isinstance(node, dict) else DEFAULT_ASPECT
    return check_aspect(aspect, "export config.json: trained.run.job.data.aspect")


def evaluate(export_dir: str | Path, registry: str | Path | Registry | None, datasets: list[str | Path], *,
             episodes: tuple[int, int] | None = None, context_frames: int = 2, horizon: int = 6, clips: int = 16,
             steps: int = 1, guidance: float = 1.0, min_change: float = 3.0, seed: int = 0, device: str = "cpu", examples: int = 3,
             progress: bool = True, tokenizer: str | None = None) -> EvalResult:
    """Roll out the exported model on held-out clips of each dataset (default: its last 20% of episodes) and
    measure it per horizon step against the real frames, copy-last and counterfactual actions. `tokenizer`: encode
    every dataset's actions with this tokenizer the model knows (its card must map the same slots) instead of each
    dataset's own: a zero-shot probe of an embodiment the model was not trained on."""
    from unified_action.models.pretrained import load_pretrained

    reg = registry if isinstance(registry, Registry) else Registry(registry)
    model, config = load_pretrained(export_dir, reg)  # refuses tokenizers whose hash changed since training
    if not datasets:
        raise UnifiedActionError("eval: expected at least one dataset")
    for what, v, lo in (("context_frames", context_frames, 1), ("horizon", horizon, 1), ("clips", clips, 1),
                        ("steps", steps, 1), ("examples", examples, 0)):
        if v < lo:
            raise UnifiedActionError(f"eval: {what}: expected >= {lo}, got {v}")
    if context_frames >= model.cfg.max_frames:
        raise UnifiedActionError(f"eval: context_frames: {context_frames}, the model's window holds {model.cfg.max_frames} "
                                 f"frames with the one it generates: use at most {model.cfg.max_frames - 1}")
    paths = [Path(p) for p in datasets]
    check_embodiments(paths, config, reg, tokenizer)
    dev = torch.device(device)
    model = model.to(dev).eval()
    aspect = trained_aspect(config)
    results = [evaluate_dataset(model, reg, p, episodes, context_frames=context_frames, horizon=horizon, clips=clips,
                                steps=steps, seed=seed, device=dev, examples=examples, guidance=guidance,
                                min_change=min_change, progress=progress, aspect=aspect, tokenizer=tokenizer)
               for p in paths]
    return EvalResult(str(export_dir), context_frames, horizon, steps, seed, results, guidance=guidance,
                      min_change=min_change, clips=clips)
