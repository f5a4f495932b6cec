"""One player's rollout: a held-out episode's context, the streaming session, the controls, and what was played.

`Player` loads the export once and checks it against the registry and the datasets (one line on a mismatch);
`Player.session(name, seed)` starts a `PlaySession` from a random held-out clip of that embodiment's dataset
(evaluation.rollouts.default_heldout: episodes no training stage saw), cut by the training loader so its frames
and action tokens are exactly what the model was trained on. Each `step(keys, pad)` turns the input into one
chunk of native actions (controls.py), encodes it as the loader encodes recorded data, and returns the next frame.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unified_action.data.dataset import open_dataset
from unified_action.errors import DataError, UnifiedActionError
from unified_action.models.batch import ACTION_KEYS
from unified_action.models.streaming import StreamingSession
from unified_action.play.controls import Controls
from unified_action.tokenization import Registry
from unified_action.tokenization.tokenizer import ActionTokenizer

MAX_RECORDED = 3000  # frames kept for "download this session" (64x64: ~37 MB); older ones are dropped


@dataclass(frozen=True)
class Embodiment:
    """A dataset the model can be driven on."""

    name: str  # the dataset's card name = its tokenizer's
    embodiment: str
    path: Path
    tokenizer: ActionTokenizer
    heldout: tuple[int, int]
    frame_rate: float  # frames per second at the card's control rate: control_hz / chunk_length

    def to_json(self) -> dict:
        return {"name": self.name, "embodiment": self.embodiment, "frame_rate": self.frame_rate,
                "heldout": list(self.heldout), "chunk_length": self.tokenizer.horizon}


class Player:
    """An export, its registry and the datasets to start from, checked together once."""

    def __init__(self, export: str | Path, registry: str | Path | Registry | None, data: list[str | Path], *,
                 device: str = "cpu", steps: int = 1, guidance: float = 1.5, min_change: float = 3.0):
        from unified_action.evaluation.rollouts import default_heldout, trained_aspect
        from unified_action.models.pretrained import load_pretrained

        if steps < 1:
            raise UnifiedActionError(f"play: steps: expected >= 1, got {steps}")
        if not 0 <= guidance <= 10 or not min_change >= 0:
            raise UnifiedActionError(f"play: guidance ({guidance}) must be in [0, 10] and min_change ({min_change}) >= 0")
        self.registry = registry if isinstance(registry, Registry) else Registry(registry)
        model, self.config = load_pretrained(export, self.registry)  # refuses tokenizers whose hash changed
        self.export = Path(export)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.steps, self.guidance, self.min_change = steps, float(guidance), float(min_change)
        self.aspect = trained_aspect(self.config)
        known = self.config["tokenizers"]
        self.embodiments: dict[str, Embodiment] = {}
        for p in data:
            ds = open_dataset(p)
            if ds.name not in known:
                raise DataError(f"{p}: dataset of '{ds.name}', which the model was not trained with (it knows "
                                f"{', '.join(known)})")
            if ds.name in self.embodiments:
                raise DataError(f"{p}: a second dataset of '{ds.name}' (the first: {self.embodiments[ds.name].path})")
            tok = self.registry.load(ds.name)
            hz = float(ds.card.header.control_frequency_hz)
            self.embodiments[ds.name] = Embodiment(ds.name, tok.spec.embodiment, Path(ds.root), tok,
                                                   default_heldout(ds.episodes), hz / tok.horizon)
        if not self.embodiments:
            raise DataError(f"play: no dataset of an embodiment the model knows ({', '.join(known)}): pass --data DIR "
                            f"(a shard dataset, e.g. runs/demo/data/<card>)")

    def session(self, name: str, seed: int | None = None, simulator: bool = False) -> PlaySession:
        """A new session on a random held-out clip; `simulator`: the simulator's own frames beside the model's, where
        the dataset came from one (`PlaySession.sim_note` says why not otherwise)."""
        if name not in self.embodiments:
            raise UnifiedActionError(f"play: embodiment '{name}': expected one of {', '.join(self.embodiments)}")
        return PlaySession(self, self.embodiments[name], int(seed if seed is not None else time.time_ns() % 2**31),
                           simulator)


class PlaySession:
    """One tab's rollout. `step(keys, pad)` -> the next frame uint8 [H, W, 3]; `reset()` back to the start."""

    def __init__(self, player: Player, emb: Embodiment, seed: int, simulator: bool = False):
        from unified_action.evaluation.rollouts import collect_clips

        self.player, self.emb, self.seed = player, emb, seed
        model = player.model
        C = model.cfg.context_frames
        try:
            data = collect_clips(emb.path, player.registry, emb.heldout, model, C, 1, 8, seed, batch_size=8,
                                 aspect=player.aspect)
        except DataError as e:
            raise DataError(f"play: {emb.name}: no held-out clip to start from ({e})") from None
        i = int(np.random.default_rng(seed).integers(len(data["key"])))  # a random held-out clip
        self.key = data["key"][i]
        self.context = data["frames"][i, :C]  # uint8 [C, H, W, 3]
        self.context_actions = {k: data[k][i:i + 1, :max(0, C - 1)] for k in ACTION_KEYS}
        self.control_hz = float(data["control_hz"][i])
        self.frame_stride = int(data["frame_stride"][i])
        start = None
        if C > 1:  # the last recorded action before the start: where position controls rest
            last = emb.tokenizer.decode_native(data["action_tokens"][i, C - 2:C - 1])
            if bool(np.asarray(last.valid)[0]):
                start = np.asarray(last.actions)[0, -1]
        self.controls = Controls(emb.tokenizer.card, emb.tokenizer.stats, start_native=start,
                                 chunk_length=emb.tokenizer.horizon)
        self.guidance = player.guidance
        self.sim, self.sim_note = None, ""
        if simulator:
            from unified_action.play.simulator import SimView

            try:
                self.sim = SimView(emb.path, self.key, C, self.frame_stride, self.context[-1], player.aspect)
            except DataError as e:  # the model still plays; the page says why the simulator does not
                self.sim_note = str(e)
        self.sim_frame = self.sim.frame if self.sim is not None else None
        self.reset()

    def close(self) -> None:
        """Free the simulator (the caches go with the session object)."""
        if self.sim is not None:
            self.sim.close()
            self.sim = None

    def reset(self) -> None:
        """Back to the start: the same context, the same noise, controls at rest."""
        p = self.player
        self.controls.reset()
        if self.sim is not None:
            self.sim.restart()
            self.sim_frame = self.sim.frame
        self.stream = StreamingSession(
            p.model, torch.from_numpy(self.context[None]).to(p.device),
            {k: torch.from_numpy(v).to(p.device) for k, v in self.context_actions.items()},
            self.emb.tokenizer.spec.embodiment_token, self.control_hz, self.frame_stride, steps=p.steps,
            guidance=self.guidance, min_change=p.min_change, generator=torch.Generator(p.device).manual_seed(self.seed))
        self.frames: list[np.ndarray] = [f for f in self.context]
        self.actions: list[dict] = []

    def set_guidance(self, value: float) -> None:
        if not 0 <= value <= 10:
            raise UnifiedActionError(f"play: guidance: expected a number in [0, 10], got {value}")
        self.guidance = float(value)
        self.stream.guidance = self.guidance

    def step(self, keys=(), pad: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """-> (the next frame uint8 [H, W, 3], the chunk's native actions [chunk_length, native_dim])."""
        native, _ = self.controls.chunk(keys, pad)
        tb = self.emb.tokenizer.encode_native(native[None], self.player.model.cfg.max_action_tokens)
        dev = self.player.device
        chunk = {"action_tokens": tb.tokens, "action_mask": tb.mask, "action_slots": tb.slots, "action_steps": tb.steps,
                 "action_agents": tb.agents}
        frame = self.stream.step({k: torch.from_numpy(np.ascontiguousarray(v)).to(dev) for k, v in chunk.items()})[0]
        frame = frame.cpu().numpy()
        if self.sim is not None:
            self.sim_frame = self.sim.step(native)  # None once the simulator's episode has ended
        self.frames.append(frame)
        self.actions.append({"frame": self.stream.frames, "keys": sorted(keys), "native": native.tolist(),
                             "guidance": self.guidance})
        if len(self.frames) > MAX_RECORDED:
            del self.frames[0]
            del self.actions[0]
        return frame, native

    def gif(self) -> bytes:
        """The frames so far (context first) as an animated GIF at the embodiment's frame rate."""
        from PIL import Image

        images = [Image.fromarray(f) for f in self.frames]
        buf = io.BytesIO()
        ms = max(20, int(round(1000 / max(self.emb.frame_rate, 1e-3))))
        images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=ms, loop=0)
        return buf.getvalue()

    def record(self) -> str:
        """What was played, as JSON: the start, the settings and every frame's keys and native actions."""
        return json.dumps({
            "model": str(self.player.export), "embodiment": self.emb.name, "start": self.key, "seed": self.seed,
            "context_frames": len(self.context), "frame_rate": self.emb.frame_rate, "steps": self.player.steps,
            "min_change": self.player.min_change, "native_slots": [t[0] for t in self.controls.mapping.native_targets()],
            "actions": self.actions}, indent=1)


def png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG", compress_level=1)  # speed over size: a 64x64 frame is ~10 KB
    return buf.getvalue()
