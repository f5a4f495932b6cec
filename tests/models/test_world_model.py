"""The world model: loss and gradients, per-frame noise levels, causality, action conditioning, padding, sizes."""

from __future__ import annotations

import json

import pytest
import torch

from unified_action.errors import UnifiedActionError
from unified_action.models import MODEL_SIZES, ModelConfig, WorldModel, count_parameters, model_config


def tiny(**overrides) -> ModelConfig:
    """`tiny` at 32x32 (16 tokens per frame) and a 6-frame window: the whole file runs in seconds."""
    kw = dict(image_size=(32, 32), max_action_tokens=12, max_frames=6, context_frames=2)
    return model_config("tiny", **{**kw, **overrides})


def make_batch(cfg: ModelConfig, B: int = 2, frames: int | None = None, P: int = 10, seed: int = 0) -> dict:
    """A loader-shaped batch: per frame a chunk of valid tokens followed by padding (<pad>, slot and step -1)."""
    g = torch.Generator().manual_seed(seed)
    Fr = frames or cfg.max_frames
    mask = torch.arange(P) < torch.randint(3, P + 1, (B, Fr, 1), generator=g)
    return {
        "frames": torch.randint(0, 256, (B, Fr, *cfg.image_size, 3), generator=g, dtype=torch.uint8),
        "action_tokens": torch.randint(16, cfg.vocab_size, (B, Fr, P), generator=g).where(mask, 0),
        "action_mask": mask,
        "action_slots": torch.randint(0, 4096, (B, Fr, P), generator=g).where(mask, -1),
        "action_steps": torch.randint(0, 64, (B, Fr, P), generator=g).where(mask, -1),
        "embodiment": torch.tensor([16, 17, 18, 19])[:B],
        "control_hz": torch.tensor([10.0, 50.0, 15.0, 4.0])[:B],
    }


def wake(model: WorldModel, std: float = 0.05) -> WorldModel:
    """Give adaLN-Zero's zero-initialised layers weights, as training soon does: conditioning then matters."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for lin in [*(b.ada for b in model.blocks), model.final.ada, model.final.linear]:
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * std)
    return model


def velocity_inputs(model: WorldModel, batch: dict, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    B, Fr = batch["frames"].shape[:2]
    h, w = model.cfg.latent_size
    x_t = torch.randn(B, Fr, model.cfg.latent_channels, h, w, generator=g)
    t = torch.rand(B, Fr, generator=g)
    return x_t, t, model.conditioning(batch, batch["embodiment"], batch["control_hz"])


# ----------------------------------------------------------------------------------------- loss, gradients
def test_forward_backward_shapes_and_finite_loss():
    torch.manual_seed(0)
    model = WorldModel(tiny())
    out = model(make_batch(model.cfg))
    assert set(out) == {"loss", "per_sample", "recon", "diffusion"}
    assert out["loss"].shape == () and out["per_sample"].shape == (2,)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert not out["per_sample"].requires_grad and not out["recon"].requires_grad
    assert torch.allclose(out["per_sample"].mean(), out["loss"].detach())
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_fewer_action_tokens_than_the_maximum_and_extra_batch_keys_are_fine():
    torch.manual_seed(0)
    model = WorldModel(tiny())
    batch = {**make_batch(model.cfg, P=4, frames=4), "dataset": torch.zeros(2, dtype=torch.int64)}
    assert torch.isfinite(model(batch)["loss"])


def _grad_norms(model: WorldModel) -> dict[str, float]:
    parts = {"encoder": model.ae.encoder, "decoder": model.ae.decoder, "blocks": model.blocks, "final": model.final,
             "action_tokens": model.actions.token, "action_pooling": model.actions.kv_proj, "t_embed": model.t_embed,
             "hz_embed": model.hz_embed}
    out = {k: sum(float(p.grad.abs().sum()) for p in m.parameters() if p.grad is not None) for k, m in parts.items()}
    out["no_action"] = float(model.no_action.grad.abs().sum())
    return out


def test_gradients_reach_the_autoencoder_the_dit_and_the_action_encoder():
    torch.manual_seed(0)
    model = WorldModel(tiny())
    batch = make_batch(model.cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):  # zero-init output layer, then zero adaLN: gradient reaches c from the third step on (DiT)
        model(batch)["loss"].backward()
        opt.step()
        opt.zero_grad()
    model(batch)["loss"].backward()
    assert all(v > 0 for v in _grad_norms(model).values()), _grad_norms(model)


def test_diffusion_loss_does_not_reach_the_encoder():
    """Stop-gradient latent: with the recon loss off, the encoder gets no gradient at all."""
    torch.manual_seed(0)
    model = wake(WorldModel(tiny(recon_weight=0.0)))
    model(make_batch(model.cfg))["loss"].backward()
    norms = _grad_norms(model)
    assert norms["encoder"] == 0 and norms["decoder"] == 0 and norms["blocks"] > 0 and norms["action_tokens"] > 0


def test_bf16_forward_as_under_deepspeed():
    torch.manual_seed(0)
    model = WorldModel(tiny()).to(torch.bfloat16)
    out = model(make_batch(model.cfg, B=1, frames=3))
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])


# ----------------------------------------------------------------------------------------- noise levels
def test_noise_levels_are_independent_per_frame_and_reproducible():
    model = WorldModel(tiny())
    torch.manual_seed(3)
    t, weight = model.sample_noise_levels(256, 6, torch.device("cpu"))
    torch.manual_seed(3)
    t2, _ = model.sample_noise_levels(256, 6, torch.device("cpu"))
    assert torch.equal(t, t2)  # from torch's global RNG alone: restoring it resumes exactly
    assert t.shape == weight.shape == (256, 6) and t.min() >= 0 and t.max() <= 1
    assert (t.std(dim=1) > 0.05).float().mean() > 0.9  # levels differ across the frames of a clip
    prefix = weight[:, 0] < 1  # the rollout regime: a clean(ish) prefix of >= context_frames frames
    assert 0.3 < prefix.float().mean() < 0.7
    assert (t[prefix, :2] <= model.cfg.prefix_noise).all() and (t[prefix, :2] == 0).any()


def test_a_frames_noise_level_reaches_that_frame_and_later_ones_only():
    torch.manual_seed(0)
    model = wake(WorldModel(tiny())).eval()
    x_t, t, cond = velocity_inputs(model, make_batch(model.cfg))
    v = model.velocity(x_t, t, cond)[0]
    t2 = t.clone()
    t2[:, 3] = 1 - t2[:, 3]
    v2 = model.velocity(x_t, t2, cond)[0]
    assert torch.allclose(v[:, :3], v2[:, :3], atol=1e-6)
    assert (v[:, 3] - v2[:, 3]).abs().max() > 1e-3


# ----------------------------------------------------------------------------------------- causality, actions
@pytest.mark.parametrize("k", [1, 4])
def test_temporal_attention_is_causal(k):
    torch.manual_seed(0)
    model = wake(WorldModel(tiny())).eval()
    x_t, t, cond = velocity_inputs(model, make_batch(model.cfg))
    v = model.velocity(x_t, t, cond)[0]
    x2 = x_t.clone()
    x2[:, k] += torch.randn_like(x2[:, k])
    v2 = model.velocity(x2, t, cond)[0]
    assert torch.allclose(v[:, :k], v2[:, :k], atol=1e-6)
    assert (v[:, k:] - v2[:, k:]).abs().amax(dim=(0, 2, 3, 4)).min() > 1e-4  # frame k and every later one


def test_a_frames_action_chunk_conditions_the_next_frame():
    """Frame f is conditioned on frame f-1's chunk (the actions leading to it), once the gates are open."""
    torch.manual_seed(0)
    model = WorldModel(tiny()).eval()
    batch = make_batch(model.cfg)
    other = dict(batch, action_tokens=batch["action_tokens"].clone())
    other["action_tokens"][:, 2] = torch.where(batch["action_mask"][:, 2], 5136 + 7, 0)  # a different valid chunk

    def v(m, b):
        x_t, t, cond = velocity_inputs(m, b)
        return m.velocity(x_t, t, cond)[0]

    assert torch.equal(v(model, batch), v(model, other))  # adaLN-Zero: at init no block listens to c
    wake(model)
    a, b = v(model, batch), v(model, other)
    assert torch.allclose(a[:, :3], b[:, :3], atol=1e-6)  # chunk 2 leads to frame 3: frames 0-2 never see it
    assert (a[:, 3] - b[:, 3]).abs().max() > 1e-3


def test_action_padding_is_ignored():
    torch.manual_seed(0)
    model = wake(WorldModel(tiny()))
    batch = make_batch(model.cfg)
    pad = ~batch["action_mask"]
    assert pad.any()
    junk = dict(batch, action_tokens=batch["action_tokens"].where(~pad, 5000),
                action_slots=batch["action_slots"].where(~pad, 123), action_steps=batch["action_steps"].where(~pad, 9))
    c = model.conditioning(batch, batch["embodiment"], batch["control_hz"])
    assert torch.equal(c, model.conditioning(junk, junk["embodiment"], junk["control_hz"]))
    torch.manual_seed(5)
    loss = model(batch)["loss"]
    torch.manual_seed(5)
    assert torch.equal(loss, model(junk)["loss"])


def test_a_frame_without_any_action_token_is_well_defined():
    model = WorldModel(tiny())
    batch = make_batch(model.cfg)
    batch["action_mask"][:, 1] = False
    c = model.conditioning(batch, batch["embodiment"], batch["control_hz"])
    assert torch.isfinite(c).all()


def test_inputs_beyond_the_model_are_refused():
    model = WorldModel(tiny())
    with pytest.raises(UnifiedActionError, match="max_frames=6"):
        model(make_batch(model.cfg, frames=7))
    with pytest.raises(UnifiedActionError, match="max_action_tokens"):
        model(make_batch(model.cfg, P=13))


# ----------------------------------------------------------------------------------------- vocab, flops
def test_resize_vocab_keeps_rows_and_behaviour():
    torch.manual_seed(0)
    model = wake(WorldModel(tiny(vocab_size=6000)))
    batch = make_batch(model.cfg)
    c = model.conditioning(batch, batch["embodiment"], batch["control_hz"])
    model.resize_vocab(9000)
    assert model.cfg.vocab_size == 9000 and model.actions.token.weight.shape[0] == 9000
    assert torch.equal(c, model.conditioning(batch, batch["embodiment"], batch["control_hz"]))
    assert model.state_dict().keys() == WorldModel(model.cfg).state_dict().keys()
    with pytest.raises(UnifiedActionError, match="only grows"):
        model.resize_vocab(100)


def test_resize_action_tokens_keeps_positions_and_behaviour():
    """A new embodiment's longer chunks: the position table grows, what the model did with short chunks stays."""
    torch.manual_seed(0)
    model = wake(WorldModel(tiny()))
    batch = make_batch(model.cfg)
    c = model.conditioning(batch, batch["embodiment"], batch["control_hz"])
    model.resize_action_tokens(40)
    assert model.cfg.max_action_tokens == 40 and model.actions.position.weight.shape[0] == 40
    assert torch.equal(c, model.conditioning(batch, batch["embodiment"], batch["control_hz"]))
    model(make_batch(model.cfg, P=40))  # chunks of 40 tokens now fit
    assert model.state_dict().keys() == WorldModel(model.cfg).state_dict().keys()
    with pytest.raises(UnifiedActionError, match="fewer than the 40 tokens"):
        model.resize_action_tokens(12)


def test_flops_per_clip():
    model = WorldModel(tiny())
    assert 0 < model.flops_per_clip(4) < model.flops_per_clip(8)
    assert 1e9 < model.flops_per_clip(6) < 1e11  # 6 frames at 32x32: ~1.5e9 per frame forward + backward


# ----------------------------------------------------------------------------------------- config and sizes
PARAMETER_RANGES = {"tiny": (1e6, 3e6), "small": (30e6, 60e6), "base": (200e6, 350e6), "large": (0.9e9, 1.2e9)}


@pytest.mark.parametrize("size", list(MODEL_SIZES))
def test_size_table_parameter_counts(size):
    assert set(PARAMETER_RANGES) == set(MODEL_SIZES)
    with torch.device("meta"):
        model = WorldModel(model_config(size))
    lo, hi = PARAMETER_RANGES[size]
    assert lo <= count_parameters(model) <= hi, f"{size}: {count_parameters(model):,}"


def test_config_round_trip_through_json():
    cfg = model_config("small", image_size=[96, 64], depth=3, vocab_size=9000)
    assert cfg.image_size == (96, 64) and cfg.depth == 3 and cfg.width == MODEL_SIZES["small"]["width"]
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and isinstance(again.image_size, tuple) and isinstance(again.ae_mults, tuple)
    assert ModelConfig(size="base").width == MODEL_SIZES["base"]["width"]


def test_config_errors_name_the_problem():
    with pytest.raises(UnifiedActionError, match="unknown size 'tinny'.*did you mean 'tiny'"):
        model_config("tinny")
    with pytest.raises(UnifiedActionError, match="unknown field 'dept'.*did you mean 'depth'"):
        model_config("tiny", dept=2)
    with pytest.raises(UnifiedActionError, match="unknown field 'widht'"):
        ModelConfig.from_dict({**model_config("tiny").to_dict(), "widht": 3})
    with pytest.raises(UnifiedActionError, match="image_size"):
        model_config("tiny", image_size=(60, 64))
    with pytest.raises(UnifiedActionError, match="context_frames"):
        model_config("tiny", context_frames=8, max_frames=8)
