"""The action-conditioned video world model: a pixel-space diffusion transformer over frame CHANGES, in one file.

Reads top to bottom: config and size table, the transformer's parts, the model, its loss. Why each piece is
there, with the measurements that chose it and what was tried and dropped: docs/world_model.md.

What it predicts. Frame f is the previous frame plus a change: frame_f = frame_{f-1} + delta_f. The
transformer sees the previous frame (clean: real in training, its own output in a rollout) and a noisy
delta_f, and predicts delta_f itself (x0-prediction) through an output layer initialised to zero, so the
untrained model IS the copy-last-frame baseline and training can only add motion. Rectified flow on the
delta: x_t = (1 - t) delta + t eps, an independent t per frame (Diffusion Forcing), loss = pixel MSE of the
predicted delta (= of the predicted frame: what PSNR measures). One sampling step gives the conditional mean.

Why pixels: patches of pixels (8x8 at 64x64, as DIAMOND works on pixels) give the transformer as many tokens
per frame as a latent would, with no codec error, nothing to forget when a new robot is fine-tuned, and a loss
that is the metric (a jointly trained autoencoder reconstructed below copy-last). At 256 px, use patch_size 16.

How actions get in (a world model that ignores its actions is the field's most reported failure):
- a frame's action chunk is exactly the actions between the previous frame and it (the loader's frame stride
  is the tokenizer's chunk length); the frame interval is an input;
- each action token is embedded by id, slot, step, embodiment and value (action_encoder.py);
- pooled action queries join every frame's patch tokens ("concat", HMA) and the noise-level embedding of
  every block's adaLN ("modulate", DIAMOND, Cosmos); the summary is also added to every patch token, and as an
  "action field" proj(patch position) * proj(summary), so "the target is left of this patch" is linear;
- each frame also sees the chunk before its own (action history);
- actions are dropped for a share of clips (a learned null): classifier-free guidance over actions at rollout;
- some clips are trained with temporal attention cut to each frame alone (the motion must come from the
  actions), and the frames a rollout generates are trained from inputs blended toward the frame before
  (rollout blur: a rollout's own frames are faint where it was unsure);
- clips are weighted by 1 / (mean squared change + balance_eps), so a scrolling road does not own the gradient;
- a scene with several agents (max_agents > 0): each agent's tokens pooled on their own into a frame token and a
  term of the conditioning vector, per agent slot (models/agents.py).

Blocks: spatial attention within a frame, then causal temporal attention across frames at each token
position (rotary positions, a sliding window of max_frames - 1 frames: the KV cache keeps it at rollout),
then an MLP; every sublayer adaLN-Zero-modulated per frame (IRASim: per-frame beats per-clip).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from unified_action.errors import ConfigError, UnifiedActionError, did_you_mean
from unified_action.models.action_encoder import ActionEncoder
from unified_action.models.agents import AgentConditioning
from unified_action.models.batch import ACTION_KEYS
from unified_action.models.spec import ModelSpec, register_model
from unified_action.tokenization.vocabulary import MAX_AGENTS

# Parameter counts (the test holds them to these ranges): tiny ~2.7M, small ~50M, base ~260M, large ~1.0B.
MODEL_SIZES: dict[str, dict] = {
    # trains on a 2-core CPU in minutes (the demo); >= 20 frames/s rollout there at 64x64
    "tiny": dict(width=128, depth=4, heads=4, patch_size=8, action_width=64, action_queries=2),
    "small": dict(width=384, depth=12, heads=6, patch_size=8, action_width=192, action_queries=4),
    "base": dict(width=768, depth=16, heads=12, patch_size=8, action_width=384, action_queries=4),
    "large": dict(width=1280, depth=24, heads=20, patch_size=8, action_width=640, action_queries=4),
}
_ARCH = tuple(MODEL_SIZES["tiny"])  # the fields a size fills in


@dataclass(frozen=True)
class ModelConfig:
    size: str = "tiny"
    image_size: tuple[int, int] = (64, 64)
    vocab_size: int = 8192  # rows of the action-token embedding: Vocabulary.size of the registry
    max_action_tokens: int = 64  # P, tokens per frame's chunk
    max_frames: int = 8  # frames per training clip; the temporal window holds max_frames - 1 predicted frames
    context_frames: int = 2
    # architecture; None = from MODEL_SIZES[size]
    width: int | None = None
    depth: int | None = None
    heads: int | None = None
    patch_size: int | None = None  # pixels per patch side
    action_width: int | None = None  # action-token embedding size: the 8192+ row tables dominate tiny otherwise
    action_queries: int | None = None  # pooled action tokens per frame, appended to its patch tokens
    mlp_ratio: float = 4.0
    rope_base: float = 100.0  # the window is ~10 frames: a small base spends the rotary dims on distances that occur
    # training
    action_dropout: float = 0.1  # share of clips trained with the null action: classifier-free guidance at rollout
    prefix_prob: float = 0.5  # clips trained in the rollout regime: a clean prefix of known changes, noisy frames after
    prefix_loss_weight: float = 0.1  # a clean frame's target is in its input: weigh it down, keep it
    # share of clips trained with temporal attention cut to each frame alone: from its previous frame the motion
    # can only come from the actions (with the whole history, momentum explains most of it, and the actions stay unused)
    isolate_prob: float = 0.5  # measured: 0.5 vs 1.0 at 600 steps (benchmarks/README.md)
    # clips weighted by 1 / (their mean squared change + balance_eps), normalised to mean 1 in the batch (0 = off):
    # CarRacing's scrolling road changes many more pixels than Push-T's dot or Pong's ball, and would otherwise
    # own the gradient; eps (~ a 4-level change everywhere) keeps a frame that does not move from being blown up
    balance_eps: float = 1e-3
    # a per-patch action term that depends on WHERE the patch is: proj(position) * proj(actions), summed by a linear
    # layer. With sin/cos positions, products of a position's and an action's features are features of their
    # difference (cos a cos b = (cos(a-b) + cos(a+b)) / 2): "the target is here" is one linear map away, where
    # an action term added alike to every patch must be routed to the right place by attention first
    action_field: bool = True  # measured: Push-T dPSNR 0.09 -> 0.34 dB, CarRacing kept (benchmarks/README.md)
    # each frame is also conditioned on the chunk BEFORE its own: a paddle or a PD-driven agent answers an action a
    # control step late (Pong's paddle moves with the action one step before as much as with the current one), and
    # a frame trained in isolation sees no other frame's actions
    action_history: bool = True
    # a rollout's own frames are faint where it is unsure (half a dot where it went, half where it was); in training
    # every previous frame is real. Each clip's frames past the context are blended toward the frame before them by
    # a ~ U(0, rollout_blur), and the target is the change from that blended frame: the model learns to finish a
    # faint frame from the actions, as a rollout needs (0 = off; a training setting: rollouts never blend)
    rollout_blur: float = 0.5  # measured: it holds the late horizon steps up (benchmarks/README.md, the world model)
    # scenes with several agents: agent slots the model conditions on one by one (models/agents.py); 0 = none, as
    # every export before them (their files have no key for it); a mixture with a card that lists agents needs
    # the vocabulary's MAX_AGENTS (8)
    max_agents: int = 0
    # with agents: a per-patch term keyed on what the patch shows (which agent is drawn there) x that agent's actions
    # (models/agents.py); measured: benchmarks/README.md, many agents
    agent_field: bool = True

    def __post_init__(self) -> None:
        if self.size not in MODEL_SIZES:
            raise ConfigError(f"model: size: unknown size '{self.size}'{did_you_mean(self.size, MODEL_SIZES)}; "
                              f"sizes: {', '.join(MODEL_SIZES)}")
        for k, v in MODEL_SIZES[self.size].items():
            if getattr(self, k) is None:
                object.__setattr__(self, k, v)
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        problems = []
        if len(self.image_size) != 2 or any(s % self.patch_size for s in self.image_size):
            problems.append(f"image_size {self.image_size} must be 2 sizes divisible by patch_size {self.patch_size}")
        if self.width % self.heads or (self.width // self.heads) % 2:
            problems.append(f"width {self.width} must split into {self.heads} heads of an even size (rotary pairs)")
        if self.action_width % self.heads:
            problems.append(f"action_width {self.action_width} must split into {self.heads} heads")
        if not 0 < self.context_frames < self.max_frames:
            problems.append(f"context_frames {self.context_frames} must be in [1, max_frames={self.max_frames})")
        if not 0 <= self.action_dropout < 1:
            problems.append(f"action_dropout {self.action_dropout} must be in [0, 1)")
        if not 0 <= self.max_agents <= MAX_AGENTS:
            problems.append(f"max_agents {self.max_agents} must be in [0, {MAX_AGENTS}] (the vocabulary's agent section)")
        if not 0 <= self.rollout_blur <= 1:
            problems.append(f"rollout_blur {self.rollout_blur} must be in [0, 1]")
        if problems:
            raise ConfigError("model: " + "; ".join(problems))

    @property
    def tokens_per_frame(self) -> int:
        return (self.image_size[0] // self.patch_size) * (self.image_size[1] // self.patch_size)

    @property
    def window(self) -> int:
        """Predicted frames temporal attention sees: a clip of max_frames frames has max_frames - 1 changes."""
        return self.max_frames - 1

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        unknown = [k for k in d if k not in names]
        if unknown:
            raise ConfigError(f"model config: unknown field '{unknown[0]}'{did_you_mean(unknown[0], names)}")
        # an export from before a field has no key for it, and its weights none of the field's layers
        d = {"action_field": False, "action_history": False, "rollout_blur": 0.0, "agent_field": False, **d}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def model_config(size: str, **overrides) -> ModelConfig:
    """The config of a named size, with any field overridden (`depth=1` for a quick test)."""
    names = [f.name for f in fields(ModelConfig) if f.name != "size"]
    for k in overrides:
        if k not in names:
            raise ConfigError(f"model: overrides: unknown field '{k}'{did_you_mean(k, names)}")
    return ModelConfig(size=size, **overrides)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------- parts
def sinusoidal(x: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """[...] -> [..., dim] sin/cos features (the transformer / DiT timestep embedding), computed in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = x.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class MLPEmbed(nn.Module):
    """Features -> width by Linear-SiLU-Linear (DiT's TimestepEmbedder)."""

    def __init__(self, cin: int, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cin, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.net[0].weight.dtype))


def log_hz_features(hz: torch.Tensor) -> torch.Tensor:
    """[B] Hz -> [B, 17]: log Hz and its sin/cos at 8 octaves (Fourier features of log frequency, as RDT)."""
    x = torch.log(hz.float().clamp_min(1e-3))
    freqs = 2.0 ** torch.arange(-3, 5, device=hz.device, dtype=torch.float32)
    return torch.cat([x[:, None], torch.sin(x[:, None] * freqs), torch.cos(x[:, None] * freqs)], dim=-1)


def interval_features(control_hz: torch.Tensor, frame_stride: torch.Tensor) -> torch.Tensor:
    """[B] control Hz and frame stride -> [B, 34]: the control rate and the frame rate (Hz / stride) it implies."""
    return torch.cat([log_hz_features(control_hz), log_hz_features(control_hz / frame_stride.float().clamp_min(1))], -1)


def rope_angles(start: int, frames: int, dim: int, base: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [frames, dim/2] of the rotary embedding at positions start.. (float64 angles: exact at long rollouts)."""
    inv = base ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float64) / dim)
    ang = torch.arange(start, start + frames, device=device, dtype=torch.float64)[:, None] * inv
    return ang.cos().float(), ang.sin().float()


def rope(x: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate x [..., T, d] pairwise by the angles of rope_angles."""
    cos, sin = rot[0].to(x.dtype), rot[1].to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class KVCache:
    """Per block, a ring of `window` slots of temporal keys/values [B*N, heads, window, d]; frame at position
    p lives in slot p % window. Writing frame p overwrites frame p - window, the one that just left its window;
    attention over the slots needs no order (rotary positions are already in the keys, and no mask is left)."""

    def __init__(self, depth: int, window: int):
        self.window = window
        self.k: list[torch.Tensor | None] = [None] * depth
        self.v: list[torch.Tensor | None] = [None] * depth

    def _write(self, layer: int, k: torch.Tensor, v: torch.Tensor, start: int) -> None:
        if self.k[layer] is None:
            S, H, _, d = k.shape
            self.k[layer] = k.new_zeros(S, H, self.window, d)
            self.v[layer] = v.new_zeros(S, H, self.window, d)
        for j in range(max(0, k.shape[2] - self.window), k.shape[2]):  # only the last `window` frames matter
            slot = (start + j) % self.window
            self.k[layer][:, :, slot] = k[:, :, j]
            self.v[layer][:, :, slot] = v[:, :, j]

    def load(self, presents: list[tuple[torch.Tensor, torch.Tensor]], start: int) -> None:
        """Store the K/V of consecutive frames from position `start` on (a prefill computed without the cache)."""
        for layer, (k, v) in enumerate(presents):
            self._write(layer, k, v, start)

    def window_kv(self, layer: int, k: torch.Tensor, v: torch.Tensor, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Put frame `pos`'s k, v [S, H, 1, d] in its slot -> the K/V of frames pos-window+1..pos (fewer at the start).
        Denoising steps write their noisy K/V there too; the final clean pass overwrites them."""
        self._write(layer, k, v, pos)
        n = min(pos + 1, self.window)  # positions start at 0, so before the ring wraps slots 0..pos hold them
        return self.k[layer][:, :, :n], self.v[layer][:, :, :n]


class Attention(nn.Module):
    """Multi-head self-attention with QK-RMSNorm (keeps bf16 logits tame in the large sizes)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.q_norm = nn.RMSNorm(width // heads)
        self.k_norm = nn.RMSNorm(width // heads)
        self.proj = nn.Linear(width, width)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[S, T, W] -> q, k, v [S, heads, T, W/heads]."""
        S, T, W = x.shape
        q, k, v = self.qkv(x).reshape(S, T, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        return self.q_norm(q), self.k_norm(k), v

    def merge(self, o: torch.Tensor) -> torch.Tensor:
        S, H, T, d = o.shape
        return self.proj(o.transpose(1, 2).reshape(S, T, H * d))


class Block(nn.Module):
    """Spatial attention -> causal temporal attention -> MLP, each adaLN-Zero-modulated by the frame's c."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        W = cfg.width
        self.window = cfg.window
        self.norms = nn.ModuleList([nn.LayerNorm(W, elementwise_affine=False, eps=1e-6) for _ in range(3)])
        self.spatial = Attention(W, cfg.heads)
        self.temporal = Attention(W, cfg.heads)
        hidden = int(W * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(W, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, W))
        self.ada = nn.Linear(W, 9 * W)  # shift, scale, gate for each of the three sublayers; zero-initialised

    def forward(self, x: torch.Tensor, c: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor], start: int,
                cache: KVCache | None = None, layer: int = 0,
                isolated: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x [B, F, N, W] (a frame's patch and action tokens), frames at positions start..start+F-1; c [B, F, W].
        With a cache (one frame at a time), its temporal K/V go into the cache's window and attend over it.
        -> (x, temporal (k, v) of these frames)."""
        B, Fr, N, W = x.shape
        m = self.ada(F.silu(c))[:, :, None].chunk(9, dim=-1)  # each [B, F, 1, W]: per frame, over its tokens

        h = modulate(self.norms[0](x), m[0], m[1]).reshape(B * Fr, N, W)
        o = F.scaled_dot_product_attention(*self.spatial.split(h))
        x = x + m[2] * self.spatial.merge(o).reshape(B, Fr, N, W)

        h = modulate(self.norms[1](x), m[3], m[4]).transpose(1, 2).reshape(B * N, Fr, W)  # per token position
        q, k, v = self.temporal.split(h)
        q, k = rope(q, rot), rope(k, rot)
        if isolated is not None and isolated.any():  # [B] clips whose frames see only themselves (training only)
            eye = torch.eye(Fr, dtype=torch.bool, device=x.device)
            causal = torch.ones(Fr, Fr, dtype=torch.bool, device=x.device).tril()
            mask = torch.where(isolated.repeat_interleave(N)[:, None, None, None], eye, causal)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif cache is None:
            o = self._temporal_attention(q, k, v, start)
        elif Fr != 1:
            raise UnifiedActionError("model: the KV cache takes one frame at a time")
        else:  # the window holds only frames this one may see, so no mask (key order does not matter either)
            o = F.scaled_dot_product_attention(q, *cache.window_kv(layer, k, v, start))
        x = x + m[5] * self.temporal.merge(o).reshape(B, N, Fr, W).transpose(1, 2)

        h = modulate(self.norms[2](x), m[6], m[7])
        return x + m[8] * self.mlp(h), (k, v)

    def _temporal_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int) -> torch.Tensor:
        """Frame i attends to frames j with i - window < j <= i (causal, sliding window)."""
        frames = q.shape[2]
        if frames <= self.window:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)  # training's case
        pos = torch.arange(start, start + frames, device=q.device)
        allowed = (pos[None] <= pos[:, None]) & (pos[None] > pos[:, None] - self.window)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


class FinalLayer(nn.Module):
    def __init__(self, width: int, out: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Linear(width, 2 * width)
        self.linear = nn.Linear(width, out)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(F.silu(c))[:, :, None].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


def sincos_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """[h*w, dim] fixed 2D sin/cos table: the learned positional embedding's starting point (as MAE/DiT)."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.cat([sinusoidal(ys.flatten(), dim // 2), sinusoidal(xs.flatten(), dim // 2)], dim=-1)


def to_pixels(frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, H, W] in [-1, 1]."""
    return frames.to(dtype).movedim(-1, -3) / 127.5 - 1.0


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """float [..., 3, H, W] in [-1, 1] -> uint8 [..., H, W, 3], rounded and clamped."""
    return ((pixels.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).movedim(-3, -1)


def blend_generated_frames(pix: torch.Tensor, context_frames: int, amount: torch.Tensor) -> torch.Tensor:
    """The previous frames [B, F-1, ...] of a clip's frames pix [B, F, ...], with each frame a rollout would have
    generated (index >= context_frames) blended toward the frame before it by amount [B] (0 = itself, 1 = the frame
    before): what a rollout's own uncertain frames look like, a faint object where it went and where it was."""
    prev = pix[:, :-1]
    generated = (torch.arange(prev.shape[1], device=pix.device) >= context_frames).to(pix.dtype)
    weight = amount[:, None].to(pix.dtype) * generated  # [B, F-1]: 0 for the context
    back = torch.zeros_like(prev)
    back[:, 1:] = pix[:, :-2] - pix[:, 1:-1]
    return prev + weight.reshape(weight.shape + (1,) * (prev.dim() - 2)) * back


@dataclass
class Conditioning:
    """What conditions each predicted frame besides its noise level: the adaLN vector [B, F, W], the action
    tokens [B, F, Q, W] appended to its patch tokens and, with the agent field, each agent's actions [B, F, A, W]."""

    vector: torch.Tensor
    tokens: torch.Tensor
    agent_actions: torch.Tensor | None = None

    def frames(self, lo: int, hi: int) -> Conditioning:
        return Conditioning(self.vector[:, lo:hi], self.tokens[:, lo:hi],
                            None if self.agent_actions is None else self.agent_actions[:, lo:hi])


# ----------------------------------------------------------------------------------------- the model
class WorldModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        W, p, Q = cfg.width, cfg.patch_size, cfg.action_queries
        self.actions = ActionEncoder(cfg.vocab_size, cfg.action_width, cfg.heads, cfg.max_action_tokens, Q, cfg.max_agents)
        if cfg.max_agents:
            self.agents = AgentConditioning(cfg.max_agents, cfg.action_width, W, 3 * p * p, cfg.agent_field)
        self.action_tokens = nn.Linear(cfg.action_width, W)  # each pooled query -> one token beside the patches
        self.action_vector = nn.Linear(Q * cfg.action_width, W)  # all queries -> the adaLN vector's action part
        self.null_tokens = nn.Parameter(torch.zeros(Q, W))  # dropped actions (classifier-free guidance)
        self.null_vector = nn.Parameter(torch.zeros(W))
        self.token_type = nn.Parameter(torch.zeros(Q, W))  # tells action tokens from patches in attention
        self.t_embed = MLPEmbed(256, W)
        self.interval_embed = MLPEmbed(34, W)
        self.patch_in = nn.Linear(2 * 3 * p * p, W)  # the previous frame's patch and the noisy change, side by side
        self.cond_in = nn.Linear(W, W)  # the frame's conditioning added to every patch token: a path open from step 0
        if cfg.action_field:
            self.field_pos, self.field_act, self.field_out = nn.Linear(W, W), nn.Linear(W, W), nn.Linear(W, W)
        if cfg.action_history:  # the previous chunk's pooled queries -> the frame's tokens and vector; a learned start
            self.history_tokens = nn.Linear(cfg.action_width, W)
            self.history_vector = nn.Linear(Q * cfg.action_width, W)
            self.history_start = nn.Parameter(torch.zeros(Q, cfg.action_width))  # a clip's first chunk has none before it
        self.pos_embed = nn.Parameter(torch.zeros(cfg.tokens_per_frame, W))
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.final = FinalLayer(W, 3 * p * p)
        self._init_weights()

    def _init_weights(self) -> None:
        """DiT's init: xavier linears, zero biases, N(0, 0.02) embeddings, adaLN and output zeroed: every block starts
        as the identity and the predicted change as zero, so the untrained model is exactly copy-last."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.actions.init_weights()
        if self.cfg.max_agents:
            self.agents.init_weights()
        for prm in (self.null_tokens, self.null_vector, self.token_type,
                    *((self.history_start,) if self.cfg.action_history else ())):
            nn.init.normal_(prm, std=0.02)
        n = self.cfg.image_size[0] // self.cfg.patch_size, self.cfg.image_size[1] // self.cfg.patch_size
        with torch.no_grad():
            self.pos_embed.copy_(sincos_2d(*n, self.cfg.width))
        for lin in [*(b.ada for b in self.blocks), self.final.ada, self.final.linear]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_in.weight.dtype  # bf16 under DeepSpeed's bf16 mode, float32 otherwise

    # -- pixels <-> tokens
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, F, 3, H, W] -> [B, F, N, 3*p*p]."""
        B, Fr, C, H, W = x.shape
        p = self.cfg.patch_size
        x = x.reshape(B, Fr, C, H // p, p, W // p, p).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(B, Fr, (H // p) * (W // p), C * p * p)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        B, Fr = x.shape[:2]
        p = self.cfg.patch_size
        H, W = self.cfg.image_size
        x = x.reshape(B, Fr, H // p, W // p, 3, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(B, Fr, 3, H, W)

    # -- conditioning
    def conditioning(self, batch: dict[str, torch.Tensor], drop: torch.Tensor | None = None) -> Conditioning:
        """Chunks 0..F-2 of the batch's actions -> the conditioning of predicted frames 1..F-1 (frame f follows
        chunk f-1: the actions between frame f-1 and frame f). drop [B] bool: clips given the null action."""
        acts = {k: batch[k][:, :-1] for k in ACTION_KEYS if k in batch}  # action_agents may be absent: one agent
        q, per_agent = self.actions(acts["action_tokens"], acts["action_mask"], acts["action_slots"], acts["action_steps"],
                                    batch["embodiment"], acts.get("action_agents"))  # [B, F-1, Q, Wa], [B, F-1, A, Wa]
        tokens = self.action_tokens(q) + self.token_type.to(q.dtype)
        vector = self.action_vector(q.flatten(-2))
        if self.cfg.action_history:  # frame f also gets chunk f-2: the actions a control step late still answer
            before = torch.cat([self.history_start.to(q.dtype).expand(q.shape[0], 1, *q.shape[2:]), q[:, :-1]], 1)
            tokens = tokens + self.history_tokens(before)
            vector = vector + self.history_vector(before.flatten(-2))
        if drop is not None:
            d = drop.to(q.dtype)
            tokens = tokens * (1 - d[:, None, None, None]) + (self.null_tokens + self.token_type).to(q.dtype) * d[:, None, None, None]
            vector = vector * (1 - d[:, None, None]) + self.null_vector.to(q.dtype) * d[:, None, None]
        agent_actions = None
        if per_agent is not None:  # a token, a vector term and the field's actions per agent slot (models/agents.py)
            agent_tokens, agent_vector, agent_actions = self.agents(per_agent, acts.get("action_agents"), drop)
            tokens, vector = torch.cat([tokens, agent_tokens], 2), vector + agent_vector
        interval = self.interval_embed(interval_features(batch["control_hz"], batch["frame_stride"]))
        return Conditioning(vector + interval[:, None], tokens, agent_actions)

    def position_action_term(self, vector: torch.Tensor) -> torch.Tensor:
        """The action field: the conditioning vector [B, F, W] -> a per-patch term [B, F, N, W] that depends on where the
        patch is (an interaction of position and action, where cond_in adds the same to every patch)."""
        return self.field_out(self.field_pos(self.pos_embed.to(vector.dtype)) * self.field_act(vector)[:, :, None])

    def denoise(self, prev: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, start: int = 0,
                cache: KVCache | None = None, isolated: torch.Tensor | None = None) -> tuple[torch.Tensor, list]:
        """The transformer. prev [B, F, 3, H, W] the previous frames, x_t [B, F, 3, H, W] their noisy changes at
        levels t [B, F] (predicted frames at positions start..) -> (predicted change in float32, per block the
        temporal (k, v) of these frames)."""
        cfg = self.cfg
        # the noisy change enters scaled by (1 - t): at t = 1 it is pure noise and carries nothing, so it is zeroed
        # instead of left for the network to learn to ignore (after 300 CPU steps it had not: one-step rollouts
        # leaked the noise into the frames, Pong 7 dB below copy-last); for t < 1 the scaling loses nothing (t is known)
        x_in = x_t * (1 - t)[:, :, None, None, None].to(x_t.dtype)
        prev_patches = self.patchify(prev.to(self.dtype))
        patches = torch.cat([prev_patches, self.patchify(x_in.to(self.dtype))], dim=-1)
        vec = cond.vector.to(self.dtype)
        pos = self.pos_embed.to(self.dtype)
        x = self.patch_in(patches) + pos + self.cond_in(vec)[:, :, None]
        if cfg.action_field:
            x = x + self.position_action_term(vec)
        if cond.agent_actions is not None:  # the agent field: which agent this patch shows x its actions
            grid = cfg.image_size[0] // cfg.patch_size, cfg.image_size[1] // cfg.patch_size
            x = x + self.agents.field(prev_patches, pos, cond.agent_actions.to(self.dtype), grid)
        N = x.shape[2]
        x = torch.cat([x, cond.tokens.to(self.dtype)], dim=2)  # [B, F, N + Q, W]
        c = vec + self.t_embed(sinusoidal(t * 1000, 256))  # t*1000: DiT's timestep scale
        rot = rope_angles(start, x.shape[1], cfg.width // cfg.heads, cfg.rope_base, x.device)
        presents = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, c, rot, start, cache, i, isolated)
            presents.append(kv)
        return self.unpatchify(self.final(x[:, :, :N], c)).float(), presents

    # -- training
    def sample_noise_levels(self, batch: int, frames: int, device: torch.device,
                            generator: torch.Generator | None = None, rollout: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Diffusion Forcing: an independent t per predicted frame, t = sqrt(u) with u ~ U(0, 1) (density 2t: more of the
        high levels, where the answer must come from the context and the actions rather than from the noisy input,
        and where a one-step rollout starts) -> (t [B, F], loss weight [B, F]).

        With probability prefix_prob a clip is put in the rollout regime instead: its first k frames (k uniform
        in [context_frames - 1, F - 1]) are clean (t = 0: known changes, as a rollout's context and its finished
        frames are), the rest independent. Uniform t because few-step sampling visits t = 1, 3/4, ... equally.
        Draws come from `generator` (default torch's global RNG), in a fixed order: restoring it resumes exactly.
        rollout: the one-step rollout's levels instead, for measurements: the context's changes clean, the rest t = 1."""
        cfg = self.cfg
        if rollout:
            t = (torch.arange(frames, device=device) >= cfg.context_frames - 1).float().expand(batch, frames)
            return t, torch.where(t > 0, 1.0, 0.0)
        t = torch.rand(batch, frames, device=device, generator=generator).sqrt()
        prefix = torch.rand(batch, device=device, generator=generator) < cfg.prefix_prob
        lo = min(cfg.context_frames - 1, frames - 1)
        k = torch.randint(lo, frames, (batch,), device=device, generator=generator)
        in_prefix = prefix[:, None] & (torch.arange(frames, device=device)[None] < k[:, None])
        weight = torch.where(in_prefix, cfg.prefix_loss_weight, 1.0)
        return torch.where(in_prefix, torch.zeros_like(t), t), weight

    def losses(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None,
               drop_actions: bool | None = None, rollout: bool = False) -> torch.Tensor:
        """Per-clip diffusion loss [B]. drop_actions: None draws the classifier-free-guidance dropout, False/True
        gives every clip its actions / the null action; rollout: the one-step rollout's noise levels (the
        controllability monitor's fixed comparisons)."""
        cfg = self.cfg
        frames = batch["frames"]
        B, Fr = frames.shape[:2]
        if Fr > cfg.max_frames:
            raise UnifiedActionError(f"model: clips of {Fr} frames, the model's window is max_frames={cfg.max_frames}")
        if Fr < 2:
            raise UnifiedActionError(f"model: clips of {Fr} frames; a clip needs at least 2 (a frame and the next)")
        pix = to_pixels(frames)  # [B, F, 3, H, W] float32
        prev, target = pix[:, :-1], pix[:, 1:] - pix[:, :-1]  # the change from each frame to the next
        t, weight = self.sample_noise_levels(B, Fr - 1, frames.device, generator, rollout)
        eps = torch.randn(target.shape, device=frames.device, generator=generator)
        drop = (torch.rand(B, device=frames.device, generator=generator) < cfg.action_dropout) if drop_actions is None \
            else torch.full((B,), bool(drop_actions), device=frames.device)
        isolated = None
        if drop_actions is None and cfg.isolate_prob > 0:  # training only: measurements see the whole history
            isolated = torch.rand(B, device=frames.device, generator=generator) < cfg.isolate_prob
        if drop_actions is None and cfg.rollout_blur > 0 and Fr - 1 > cfg.context_frames:  # training only
            prev = blend_generated_frames(pix, cfg.context_frames,
                                          torch.rand(B, device=frames.device, generator=generator) * cfg.rollout_blur)
            target = pix[:, 1:] - prev
        tt = t[:, :, None, None, None]
        x_t = (1 - tt) * target + tt * eps
        pred, _ = self.denoise(prev, x_t, t, self.conditioning(batch, drop), isolated=isolated)
        per_frame = (pred - target).pow(2).mean(dim=(2, 3, 4))  # [B, F-1]
        per_clip = (per_frame * weight).sum(1) / weight.sum(1)
        if cfg.balance_eps > 0 and drop_actions is None:
            w = 1.0 / (target.pow(2).mean(dim=(1, 2, 3, 4)) + cfg.balance_eps)
            per_clip = per_clip * (w / w.mean())
        return per_clip

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        per_sample = self.losses(batch)
        return {"loss": per_sample.mean(), "per_sample": per_sample.detach()}

    # -- bookkeeping
    def flops_per_clip(self, frames: int) -> float:
        """Approximate training FLOPs (forward + backward = 3x forward) of one clip, for MFU."""
        cfg = self.cfg
        W, N, L = cfg.width, cfg.tokens_per_frame + cfg.action_queries, cfg.depth
        per_token = L * (8 * W * W + 2 * cfg.mlp_ratio * W * W) + 2 * W * 6 * cfg.patch_size ** 2
        attention = L * (2 * N * W + (frames + 1) * W)  # spatial over N tokens, causal temporal over ~F/2 frames
        per_frame = L * 9 * W * W + 2 * W * W + cfg.max_action_tokens * 3 * cfg.action_width ** 2  # adaLN, final, actions
        macs = (frames - 1) * (N * (per_token + attention) + per_frame)
        return 3 * 2 * macs

    def resize_vocab(self, vocab_size: int) -> None:
        """Grow the action-token table to `vocab_size` rows keeping the existing rows (fine-tuning a new embodiment)."""
        if vocab_size < self.cfg.vocab_size:
            raise ConfigError(f"model: resize_vocab: {vocab_size} rows would drop token ids of the "
                              f"{self.cfg.vocab_size} the model was trained with; the vocabulary only grows")
        self.actions.resize(vocab_size)
        self.cfg = dataclasses.replace(self.cfg, vocab_size=vocab_size)

    def resize_action_tokens(self, max_action_tokens: int) -> None:
        """Room for longer action chunks (a new embodiment's tokenizer), keeping the learned position rows."""
        if max_action_tokens < self.cfg.max_action_tokens:
            raise ConfigError(f"model: resize_action_tokens: {max_action_tokens} is fewer than the "
                              f"{self.cfg.max_action_tokens} tokens per chunk the model was trained with")
        self.actions.resize_positions(max_action_tokens)
        self.cfg = dataclasses.replace(self.cfg, max_action_tokens=max_action_tokens)


# ----------------------------------------------------------------------------------------- the spec
def _lora_targets(model: WorldModel) -> list[tuple[nn.Module, str]]:
    """Each block's spatial and temporal qkv and proj, and its MLP's two linears."""
    out: list[tuple[nn.Module, str]] = []
    for block in model.blocks:
        for attn in (block.spatial, block.temporal):
            out += [(attn, "qkv"), (attn, "proj")]
        out += [(block.mlp, str(i)) for i, m in enumerate(block.mlp) if isinstance(m, nn.Linear)]
    return out


register_model(ModelSpec(
    name="world_model",
    config_from_dict=ModelConfig.from_dict,
    build=WorldModel,
    lora_targets=_lora_targets,
    conditioning=lambda m: [*(b.ada for b in m.blocks), m.final.ada],
    action_path=lambda m: [m.actions, m.action_tokens, m.action_vector, m.cond_in,
                           *((m.field_pos, m.field_act, m.field_out) if m.cfg.action_field else ()),
                           *((m.history_tokens, m.history_vector) if m.cfg.action_history else ()),
                           *((m.agents,) if m.cfg.max_agents else ())],
    embeddings=lambda m: {"token": m.actions.token, "slot": m.actions.slot, "step": m.actions.step,
                          "position": m.actions.position},
    output=lambda m: m.final,  # its modulation and its linear, both zero-initialised
))
