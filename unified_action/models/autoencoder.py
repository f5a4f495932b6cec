"""The frame autoencoder: 64x64x3 uint8 frames <-> a compact tanh-bounded latent (16x16xC at downsample 4).

Why it is trained jointly with the latent DiT, in one run, rather than frozen first (the usual latent-diffusion
recipe):
- one engine, one optimizer, one checkpoint: exact resume is the trainer's one code path, with nothing
  to keep in step between two training stages;
- fine-tuning on a new robot can adapt the autoencoder to that robot's camera and scene, which a frozen,
  pretrained autoencoder cannot;
- the two losses stay independent: the diffusion loss is computed on the STOP-GRADIENT latent, so the DiT
  never pulls the encoder towards latents that are easy to predict (the collapse to a constant latent a
  shared gradient would invite); the autoencoder is shaped by the reconstruction loss alone;
- the latent is bounded by tanh, so its scale stays in [-1, 1] all through training, matched to the unit
  Gaussian noise of flow matching: no scale factor to re-estimate while the encoder moves.
The cost is that the DiT chases a slowly moving target early on; the recon loss converges much faster
than the diffusion loss, so the target settles within the first few thousand steps.

Architecture (a small VQGAN/SD-VAE-style conv net, without the KL/VQ bottleneck): GroupNorm+SiLU residual
blocks, strided convolutions down, pixel-shuffle up (a conv at the low resolution, then PixelShuffle: a
quarter of the cost of upsample-then-conv, which matters for the 20 frames/s CPU rollout target).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _groups(channels: int) -> int:
    """GroupNorm groups: 32 where the channel count allows (the usual choice), else the largest divisor <= 32."""
    return math.gcd(32, channels)


def _conv(cin: int, cout: int, k: int, scale: int, stride: int = 1) -> nn.Conv2d:
    """A conv tagged with the downsample factor of its OUTPUT, so FLOPs can be counted without running it."""
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)
    conv.out_scale = scale  # type: ignore[attr-defined]
    return conv


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, scale: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = _conv(cin, cout, 3, scale)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = _conv(cout, cout, 3, scale)
        self.skip = _conv(cin, cout, 1, scale) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Encoder(nn.Module):
    def __init__(self, channels: int, mults: tuple[int, ...], blocks: int, latent_channels: int):
        super().__init__()
        chs = [channels * m for m in mults]
        self.conv_in = _conv(3, chs[0], 3, 1)
        layers: list[nn.Module] = []
        cin = chs[0]
        for level, c in enumerate(chs):
            scale = 2 ** level
            for _ in range(blocks):
                layers.append(ResBlock(cin, c, scale))
                cin = c
            if level < len(chs) - 1:
                layers.append(_conv(c, c, 3, scale * 2, stride=2))  # strided conv: learned downsampling
        self.body = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(_groups(cin), cin)
        self.conv_out = _conv(cin, latent_channels, 3, 2 ** (len(chs) - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.conv_in(x))
        return torch.tanh(self.conv_out(F.silu(self.norm_out(h))))  # bounded latent: see the module docstring


class Upsample(nn.Module):
    """x2 by a conv to 4x the channels at the low resolution, then PixelShuffle (no checkerboard, a quarter the FLOPs)."""

    def __init__(self, cin: int, cout: int, scale: int):
        super().__init__()
        self.conv = _conv(cin, cout * 4, 3, scale)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))


class Decoder(nn.Module):
    def __init__(self, channels: int, mults: tuple[int, ...], blocks: int, latent_channels: int):
        super().__init__()
        chs = [channels * m for m in mults]
        top = len(chs) - 1
        self.conv_in = _conv(latent_channels, chs[-1], 3, 2 ** top)
        layers: list[nn.Module] = []
        cin = chs[-1]
        for level in range(top, -1, -1):
            scale = 2 ** level
            for _ in range(blocks):
                layers.append(ResBlock(cin, chs[level], scale))
                cin = chs[level]
            if level > 0:
                layers.append(Upsample(cin, chs[level - 1], scale))
                cin = chs[level - 1]
        self.body = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(_groups(cin), cin)
        self.conv_out = _conv(cin, 3, 3, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(self.body(self.conv_in(z)))))


class FrameAutoencoder(nn.Module):
    """uint8 frames [..., H, W, 3] <-> latents [..., C, H/d, W/d] in [-1, 1], d = 2 ** (len(mults) - 1)."""

    def __init__(self, channels: int, mults: tuple[int, ...], blocks: int, latent_channels: int):
        super().__init__()
        self.downsample = 2 ** (len(mults) - 1)
        self.encoder = Encoder(channels, mults, blocks, latent_channels)
        self.decoder = Decoder(channels, mults, blocks, latent_channels)

    @staticmethod
    def to_pixels(frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """uint8 [..., H, W, 3] -> float [..., 3, H, W] in [-1, 1] (the space both the encoder and the recon loss use)."""
        return frames.to(dtype).movedim(-1, -3) / 127.5 - 1.0

    @staticmethod
    def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
        """float [..., 3, H, W] in [-1, 1] -> uint8 [..., H, W, 3], rounded and clamped."""
        return ((pixels.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).movedim(-3, -1)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        lead = pixels.shape[:-3]
        z = self.encoder(pixels.reshape(-1, *pixels.shape[-3:]))
        return z.reshape(*lead, *z.shape[1:])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-3]
        x = self.decoder(z.reshape(-1, *z.shape[-3:]))
        return x.reshape(*lead, *x.shape[1:])

    def macs_per_image(self, height: int, width: int) -> float:
        """Multiply-accumulates of one encode + one decode, from the conv shapes (norms and activations ignored)."""
        total = 0.0
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                s = m.out_scale  # type: ignore[attr-defined]
                k = m.kernel_size[0] * m.kernel_size[1]
                total += (height // s) * (width // s) * m.out_channels * (m.in_channels // m.groups) * k
        return total
