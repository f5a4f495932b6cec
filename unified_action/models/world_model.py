"""The action-conditioned video world model: a frame autoencoder and a latent diffusion transformer, in one file.

Reads top to bottom: config and size table, the transformer's parts, the model, its loss.

- Frames are encoded by the jointly trained autoencoder (autoencoder.py: why jointly, why stop-gradient,
  why tanh) into latents [C, H/4, W/4], patchified into (H/4/p) x (W/4/p) tokens per frame.
- Each block is factorized space-time (as in Latte/Genie/IRASim): spatial self-attention within a frame
  (learned 2D positional embedding), then temporal self-attention across frames at each spatial position,
  CAUSAL and limited to a window of `max_frames` frames, with rotary positions (relative, so a sliding
  window in rollout keeps every distance it was trained on), then an MLP.
- Conditioning is PER FRAME (IRASim: per-frame beats per-clip) through adaLN-Zero (DiT): a vector c[b, f]
  gives every block's shift/scale/gate for frame f; gates start at zero so each block starts as identity.
  c[b, f] = noise-level embedding of frame f + embedding of the action chunk that LEADS to frame f (the
  loader's chunk of frame f-1; frame 0 gets a learned "no previous action" vector) + control-frequency
  embedding (Fourier features of log Hz, as RDT).
- Diffusion Forcing with rectified flow: every frame gets its own noise level t in [0, 1],
  x_t = (1 - t) x0 + t eps, the model predicts v = eps - x0; few Euler steps sample (sampling.py).
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
from unified_action.models.autoencoder import FrameAutoencoder
from unified_action.models.sampling import KVCache, rollout

# Parameter counts (the test holds them to these ranges): tiny ~1.9M, small ~45M, base ~260M, large ~1.0B.
MODEL_SIZES: dict[str, dict] = {
    # trains on a 2-core CPU in minutes; ~25 frames/s rollout there at 64x64, 4 steps
    "tiny": dict(width=128, depth=4, heads=4, patch_size=2, latent_channels=4,
                 ae_channels=32, ae_mults=(1, 2, 2), ae_blocks=1, action_width=32, action_queries=1),
    "small": dict(width=384, depth=12, heads=6, patch_size=2, latent_channels=8,
                  ae_channels=64, ae_mults=(1, 2, 4), ae_blocks=2, action_width=192, action_queries=2),
    "base": dict(width=768, depth=16, heads=12, patch_size=2, latent_channels=8,
                 ae_channels=128, ae_mults=(1, 2, 4), ae_blocks=2, action_width=384, action_queries=4),
    "large": dict(width=1280, depth=24, heads=20, patch_size=2, latent_channels=16,
                  ae_channels=128, ae_mults=(1, 2, 4), ae_blocks=2, action_width=640, action_queries=4),
}
_ARCH = tuple(MODEL_SIZES["tiny"])  # the fields a size fills in


@dataclass(frozen=True)
class ModelConfig:
    size: str = "tiny"
    image_size: tuple[int, int] = (64, 64)
    vocab_size: int = 8192  # rows of the action-token embedding: Vocabulary.size of the registry
    max_action_tokens: int = 64  # P, tokens per frame's chunk
    max_frames: int = 8  # frames per training clip = temporal attention window at rollout
    context_frames: int = 2
    # architecture; None = from MODEL_SIZES[size]
    width: int | None = None
    depth: int | None = None
    heads: int | None = None
    patch_size: int | None = None
    latent_channels: int | None = None
    ae_channels: int | None = None
    ae_mults: tuple[int, ...] | None = None  # channel multiplier per AE level; downsample = 2 ** (levels - 1)
    ae_blocks: int | None = None
    action_width: int | None = None  # action-token embedding size: the 8192+ row tables dominate tiny otherwise
    action_queries: int | None = None
    mlp_ratio: float = 4.0
    rope_base: float = 100.0  # the window is ~10 frames: a small base spends the rotary dims on distances that occur
    # loss
    recon_weight: float = 1.0
    recon_l1: float = 0.5  # L1 beside MSE: sharper edges, less of MSE's blur
    prefix_prob: float = 0.5  # clips trained in the rollout regime: a clean(ish) prefix, noisy frames after it
    prefix_noise: float = 0.1  # prefix frames get t ~ U(0, this) or 0: robust to imperfect generated context
    prefix_loss_weight: float = 0.1  # their v-target is nearly unpredictable noise: weigh it down, keep it

    def __post_init__(self) -> None:
        if self.size not in MODEL_SIZES:
            raise ConfigError(f"model: size: unknown size '{self.size}'{did_you_mean(self.size, MODEL_SIZES)}; "
                              f"sizes: {', '.join(MODEL_SIZES)}")
        for k, v in MODEL_SIZES[self.size].items():
            if getattr(self, k) is None:
                object.__setattr__(self, k, v)
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        object.__setattr__(self, "ae_mults", tuple(int(m) for m in self.ae_mults))
        cell = 2 ** (len(self.ae_mults) - 1) * self.patch_size
        problems = []
        if len(self.image_size) != 2 or any(s % cell for s in self.image_size):
            problems.append(f"image_size {self.image_size} must be 2 sizes divisible by {cell} (AE downsample x patch)")
        if self.width % self.heads or (self.width // self.heads) % 2:
            problems.append(f"width {self.width} must split into {self.heads} heads of an even size (rotary pairs)")
        if self.action_width % self.heads:
            problems.append(f"action_width {self.action_width} must split into {self.heads} heads")
        if not 0 <= self.context_frames < self.max_frames:
            problems.append(f"context_frames {self.context_frames} must be in [0, max_frames={self.max_frames})")
        if problems:
            raise ConfigError("model: " + "; ".join(problems))

    @property
    def latent_size(self) -> tuple[int, int]:
        d = 2 ** (len(self.ae_mults) - 1)
        return self.image_size[0] // d, self.image_size[1] // d

    @property
    def tokens_per_frame(self) -> int:
        h, w = self.latent_size
        return (h // self.patch_size) * (w // self.patch_size)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        unknown = [k for k in d if k not in names]
        if unknown:
            raise ConfigError(f"model config: unknown field '{unknown[0]}'{did_you_mean(unknown[0], names)}")
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


def control_hz_features(hz: torch.Tensor) -> torch.Tensor:
    """[B] Hz -> [B, 17]: log Hz and its sin/cos at 8 octaves (Fourier features of log frequency, as RDT)."""
    x = torch.log(hz.float().clamp_min(1e-3))
    freqs = 2.0 ** torch.arange(-3, 5, device=hz.device, dtype=torch.float32)
    return torch.cat([x[:, None], torch.sin(x[:, None] * freqs), torch.cos(x[:, None] * freqs)], dim=-1)


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
        self.window = cfg.max_frames
        self.norms = nn.ModuleList([nn.LayerNorm(W, elementwise_affine=False, eps=1e-6) for _ in range(3)])
        self.spatial = Attention(W, cfg.heads)
        self.temporal = Attention(W, cfg.heads)
        hidden = int(W * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(W, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, W))
        self.ada = nn.Linear(W, 9 * W)  # shift, scale, gate for each of the three sublayers; zero-initialised

    def forward(self, x: torch.Tensor, c: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor], start: int,
                cache: KVCache | None = None, layer: int = 0) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x [B, F, N, W], frames at positions start..start+F-1; c [B, F, W]; rot: their rotary angles.
        With a cache (one frame at a time), its temporal K/V go into the cache's window and attend over it.
        -> (x, temporal (k, v) of these frames)."""
        B, Fr, N, W = x.shape
        m = self.ada(F.silu(c))[:, :, None].chunk(9, dim=-1)  # each [B, F, 1, W]: per frame, over its tokens

        h = modulate(self.norms[0](x), m[0], m[1]).reshape(B * Fr, N, W)
        o = F.scaled_dot_product_attention(*self.spatial.split(h))
        x = x + m[2] * self.spatial.merge(o).reshape(B, Fr, N, W)

        h = modulate(self.norms[1](x), m[3], m[4]).transpose(1, 2).reshape(B * N, Fr, W)  # per spatial position
        q, k, v = self.temporal.split(h)
        q, k = rope(q, rot), rope(k, rot)
        if cache is None:
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


# ----------------------------------------------------------------------------------------- the model
class WorldModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        W, p, C = cfg.width, cfg.patch_size, cfg.latent_channels
        self.ae = FrameAutoencoder(cfg.ae_channels, cfg.ae_mults, cfg.ae_blocks, C)
        self.actions = ActionEncoder(cfg.vocab_size, cfg.action_width, W, cfg.heads, cfg.max_action_tokens, cfg.action_queries)
        self.no_action = nn.Parameter(torch.zeros(W))  # frame 0's "action": nothing led to it
        self.t_embed = MLPEmbed(256, W)
        self.hz_embed = MLPEmbed(17, W)
        self.patch_in = nn.Linear(C * p * p, W)
        self.pos_embed = nn.Parameter(torch.zeros(cfg.tokens_per_frame, W))
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.final = FinalLayer(W, C * p * p)
        self._init_weights()

    def _init_weights(self) -> None:
        """DiT's init: xavier linears, zero biases, N(0, 0.02) embeddings, adaLN and output zeroed (blocks start as identity)."""
        for m in [*self.blocks.modules(), *self.t_embed.modules(), *self.hz_embed.modules(), self.patch_in,
                  self.final.linear, self.actions.q_proj, self.actions.kv_proj, self.actions.out]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.actions.init_weights()
        nn.init.normal_(self.no_action, std=0.02)
        h, w = self.cfg.latent_size
        with torch.no_grad():
            self.pos_embed.copy_(sincos_2d(h // self.cfg.patch_size, w // self.cfg.patch_size, self.cfg.width))
        for lin in [*(b.ada for b in self.blocks), self.final.ada, self.final.linear]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_in.weight.dtype  # bf16 under DeepSpeed's bf16 mode, float32 otherwise

    # -- latents <-> tokens
    def patchify(self, z: torch.Tensor) -> torch.Tensor:
        """[B, F, C, h, w] -> [B, F, N, C*p*p]."""
        B, Fr, C, h, w = z.shape
        p = self.cfg.patch_size
        z = z.reshape(B, Fr, C, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)
        return z.reshape(B, Fr, (h // p) * (w // p), C * p * p)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        B, Fr = x.shape[:2]
        p, C = self.cfg.patch_size, self.cfg.latent_channels
        h, w = self.cfg.latent_size
        x = x.reshape(B, Fr, h // p, w // p, C, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(B, Fr, C, h, w)

    # -- conditioning
    def conditioning(self, actions: dict[str, torch.Tensor], embodiment: torch.Tensor, control_hz: torch.Tensor):
        """Everything in c[b, f] but the noise level: [B, F, W]. Frame f gets frame f-1's chunk (the one leading to it)."""
        a = self.actions(actions["action_tokens"], actions["action_mask"], actions["action_slots"],
                         actions["action_steps"], embodiment)
        a = torch.cat([self.no_action.to(a.dtype).expand(a.shape[0], 1, -1), a[:, :-1]], dim=1)
        return a + self.hz_embed(control_hz_features(control_hz))[:, None]

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, start: int = 0,
                 cache: KVCache | None = None) -> tuple[torch.Tensor, list]:
        """The DiT. x_t [B, F, C, h, w] at noise levels t [B, F] (frames at positions start..), cond [B, F, W]
        -> (predicted v = eps - x0 in float32, per block the temporal (k, v) of these frames)."""
        cfg = self.cfg
        x = self.patch_in(self.patchify(x_t.to(self.dtype))) + self.pos_embed.to(self.dtype)
        c = cond.to(self.dtype) + self.t_embed(sinusoidal(t * 1000, 256))  # t*1000: DiT's timestep scale
        rot = rope_angles(start, x.shape[1], cfg.width // cfg.heads, cfg.rope_base, x.device)
        presents = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, c, rot, start, cache, i)
            presents.append(kv)
        return self.unpatchify(self.final(x, c)).float(), presents

    # -- training
    def sample_noise_levels(self, batch: int, frames: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Diffusion Forcing: an independent t ~ U(0, 1) per frame -> (t [B, F], loss weight [B, F]).

        With probability prefix_prob a clip is put in the rollout regime instead: its first k frames
        (k uniform in [context_frames, F-1]) get a light level (0 or U(0, prefix_noise)), the rest stay
        independent: clean past, noisy future, as autoregressive sampling sees it. Uniform t (not SD3's
        logit-normal) because few-step sampling evaluates t = 1, 3/4, ... equally often. All draws come from
        torch's global RNG, in a fixed order, so restoring the RNG state resumes bit-exactly."""
        cfg = self.cfg
        t = torch.rand(batch, frames, device=device)
        prefix = torch.rand(batch, device=device) < cfg.prefix_prob
        k = torch.randint(min(cfg.context_frames, frames - 1), frames, (batch,), device=device)
        light = cfg.prefix_noise * torch.rand(batch, frames, device=device)
        light = light * (torch.rand(batch, frames, device=device) < 0.5)  # half exactly clean, as rollout's context
        in_prefix = prefix[:, None] & (torch.arange(frames, device=device)[None] < k[:, None])
        weight = torch.where(in_prefix, cfg.prefix_loss_weight, 1.0)
        return torch.where(in_prefix, light, t), weight

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        frames = batch["frames"]
        B, Fr = frames.shape[:2]
        if Fr > cfg.max_frames:
            raise UnifiedActionError(f"model: clips of {Fr} frames, the model's window is max_frames={cfg.max_frames}")
        pixels = FrameAutoencoder.to_pixels(frames, self.dtype)  # [B, F, 3, H, W] in [-1, 1]
        z = self.ae.encode(pixels)
        err = self.ae.decode(z).float() - pixels.float()
        recon = err.pow(2).mean(dim=(1, 2, 3, 4)) + cfg.recon_l1 * err.abs().mean(dim=(1, 2, 3, 4))  # [B]

        x0 = z.detach().float()  # stop-gradient: the DiT does not shape the latent (autoencoder.py)
        t, weight = self.sample_noise_levels(B, Fr, frames.device)
        eps = torch.randn_like(x0)
        tt = t[:, :, None, None, None]
        x_t = (1 - tt) * x0 + tt * eps
        cond = self.conditioning(batch, batch["embodiment"], batch["control_hz"])
        v_hat, _ = self.velocity(x_t, t, cond)
        per_frame = (v_hat - (eps - x0)).pow(2).mean(dim=(2, 3, 4))  # [B, F]
        diffusion = (per_frame * weight).sum(1) / weight.sum(1)

        per_sample = cfg.recon_weight * recon + diffusion
        return {"loss": per_sample.mean(), "per_sample": per_sample.detach(), "recon": recon.mean().detach(),
                "diffusion": diffusion.mean().detach()}

    # -- inference
    @torch.no_grad()
    def rollout(self, context: torch.Tensor, actions: dict[str, torch.Tensor], embodiment, control_hz, horizon: int,
                steps: int = 4, cache: bool = True) -> torch.Tensor:
        """context uint8 [B, C, H, W, 3], actions [B, C+horizon, P] each (frame f's chunk, as in training)
        -> uint8 [B, horizon, H, W, 3]; see sampling.py."""
        return rollout(self, context, actions, embodiment, control_hz, horizon, steps, cache)

    # -- bookkeeping
    def flops_per_clip(self, frames: int) -> float:
        """Approximate training FLOPs (forward + backward = 3x forward) of one clip, for MFU."""
        cfg = self.cfg
        W, N, L = cfg.width, cfg.tokens_per_frame, cfg.depth
        per_token = L * (8 * W * W + 2 * cfg.mlp_ratio * W * W) + 2 * W * cfg.latent_channels * cfg.patch_size ** 2
        attention = L * (2 * N * W + (frames + 1) * W)  # spatial over N tokens, causal temporal over ~F/2 frames
        per_frame = L * 9 * W * W + 2 * W * W + cfg.max_action_tokens * 3 * cfg.action_width ** 2  # adaLN, final, action pooling
        macs = frames * (N * (per_token + attention) + per_frame + self.ae.macs_per_image(*cfg.image_size))
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
