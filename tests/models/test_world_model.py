"""The world model: loss and gradients, copy-last at init, causality, action conditioning and values, sizes."""

from __future__ import annotations

import json

import pytest
import torch

from unified_action.errors import UnifiedActionError
from unified_action.models import MODEL_SIZES, ModelConfig, WorldModel, count_parameters, model_config
from unified_action.models.action_encoder import token_values, value_features
from unified_action.models.sampling import rollout
from unified_action.tokenization.vocabulary import BIN_BASE


def tiny(**overrides) -> ModelConfig:
    """`tiny` at 32x32 (16 patches a frame) and a 6-frame window: the whole file runs in seconds."""
    kw = dict(image_size=(32, 32), max_action_tokens=12, max_frames=6, context_frames=2)
    return model_config("tiny", **{**kw, **overrides})


def make_batch(cfg: ModelConfig, B: int = 2, frames: int | None = None, P: int = 10, seed: int = 0) -> dict:
    """A loader-shaped batch: per frame a chunk of valid tokens followed by padding (<pad>, slot and step -1)."""
    g = torch.Generator().manual_seed(seed)
    Fr = frames or cfg.max_frames
    mask = torch.arange(P) < torch.randint(3, P + 1, (B, Fr, 1), generator=g)
    return {
        "frames": torch.randint(0, 256, (B, Fr, *cfg.image_size, 3), generator=g, dtype=torch.uint8),
        "action_tokens": torch.randint(BIN_BASE, BIN_BASE + 256, (B, Fr, P), generator=g).where(mask, 0),
        "action_mask": mask,
        "action_slots": torch.randint(0, 4096, (B, Fr, P), generator=g).where(mask, -1),
        "action_steps": torch.randint(0, 64, (B, Fr, P), generator=g).where(mask, -1),
        "embodiment": torch.tensor([16, 17, 18, 19])[:B],
        "control_hz": torch.tensor([10.0, 50.0, 15.0, 4.0])[:B],
        "frame_stride": torch.tensor([2, 5, 2, 1])[:B],
    }


def wake(model: WorldModel, std: float = 0.05) -> WorldModel:
    """Give adaLN-Zero's zero-initialised layers weights, as training soon does: conditioning then matters."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for lin in [*(b.ada for b in model.blocks), model.final.ada, model.final.linear]:
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * std)
    return model


def denoise_inputs(model: WorldModel, batch: dict, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    B, Fr = batch["frames"].shape[:2]
    pix = batch["frames"].float().movedim(-1, -3) / 127.5 - 1
    x_t = torch.randn(B, Fr - 1, 3, *model.cfg.image_size, generator=g)
    t = torch.rand(B, Fr - 1, generator=g)
    return pix[:, :-1], x_t, t, model.conditioning(batch)


# ----------------------------------------------------------------------------------------- loss, gradients
def test_forward_backward_shapes_and_finite_loss():
    torch.manual_seed(0)
    model = WorldModel(tiny())
    out = model(make_batch(model.cfg))
    assert set(out) == {"loss", "per_sample"}
    assert out["loss"].shape == () and out["per_sample"].shape == (2,)
    assert all(torch.isfinite(v).all() for v in out.values()) and not out["per_sample"].requires_grad
    assert torch.allclose(out["per_sample"].mean(), out["loss"].detach())
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_the_untrained_model_is_exactly_copy_last():
    """Zero-initialised output: the predicted change is 0, so every generated frame is the last real one."""
    torch.manual_seed(0)
    model = WorldModel(tiny(balance_eps=0.0, rollout_blur=0.0)).eval()  # the loss check below is the plain one
    batch = make_batch(model.cfg, frames=5)
    acts = {k: batch[k] for k in ("action_tokens", "action_mask", "action_slots", "action_steps")}
    for steps in (1, 3):
        out = rollout(model, batch["frames"][:, :2], acts, batch["embodiment"], batch["control_hz"], horizon=3,
                      steps=steps, frame_stride=batch["frame_stride"])
        assert torch.equal(out, batch["frames"][:, 1:2].expand(-1, 3, -1, -1, -1))
    # and its training loss is the mean squared change between consecutive frames (what copy-last scores)
    pix = batch["frames"].float().movedim(-1, -3) / 127.5 - 1
    d = pix[:, 1:] - pix[:, :-1]
    change = d.pow(2).mean(dim=(2, 3, 4))
    g = torch.Generator().manual_seed(0)
    t, w = model.sample_noise_levels(2, 4, torch.device("cpu"), torch.Generator().manual_seed(0))
    expected = (change * w).sum(1) / w.sum(1)
    assert torch.allclose(model.losses(batch, generator=g), expected, atol=1e-6)


def test_rollout_blur_blends_only_the_frames_a_rollout_generates_toward_the_frame_before():
    """What a rollout feeds back is its own frame; with rollout_blur the model trains on such faint frames: each
    previous frame past the context is pulled toward the one before it, the context stays real."""
    from unified_action.models.world_model import blend_generated_frames

    pix = torch.randn(2, 6, 3, 8, 8)
    amount = torch.tensor([0.0, 0.5])
    prev = blend_generated_frames(pix, context_frames=2, amount=amount)
    assert prev.shape == (2, 5, 3, 8, 8)
    assert torch.equal(prev[0], pix[0, :-1])  # amount 0: the real frames
    assert torch.equal(prev[1, :2], pix[1, :2])  # the context: what a rollout is given
    for j in (2, 3, 4):  # the frames a rollout generates: halfway back to the frame before
        assert torch.allclose(prev[1, j], (pix[1, j] + pix[1, j - 1]) / 2, atol=1e-6)
    # and the training loss of a model whose change is 0 is then the change from the blended frame
    torch.manual_seed(0)
    model = WorldModel(tiny(balance_eps=0.0, rollout_blur=1.0, isolate_prob=0.0, action_dropout=0.0))
    batch = make_batch(model.cfg, frames=5)
    batch["frames"] = (torch.arange(5) * 40).to(torch.uint8).view(1, 5, 1, 1, 1).expand_as(batch["frames"]).clone()
    plain = WorldModel(tiny(balance_eps=0.0, rollout_blur=0.0, isolate_prob=0.0, action_dropout=0.0))
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    # a steady change: from a blended frame it is larger
    assert (model.losses(batch, generator=g1) > plain.losses(batch, generator=g2)).all()


def test_one_step_moves_every_part_including_the_actions():
    """From the zero init, a few optimizer steps open the gates: the action encoder's value MLP, its token table
    and the blocks all get a gradient (the old model's action path stayed at exactly 0 for its first steps)."""
    torch.manual_seed(0)
    model = WorldModel(tiny())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = make_batch(model.cfg)
    for _ in range(3):
        opt.zero_grad()
        model(batch)["loss"].backward()
        opt.step()
    parts = {"blocks": model.blocks, "final": model.final, "token": model.actions.token, "value": model.actions.value,
             "pool": model.actions.kv_proj, "action_tokens": model.action_tokens, "action_vector": model.action_vector,
             "interval": model.interval_embed, "t_embed": model.t_embed,
             **({"field": model.field_act} if model.cfg.action_field else {})}
    for name, m in parts.items():
        assert sum(float(p.grad.abs().sum()) for p in m.parameters() if p.grad is not None) > 0, name


def test_the_action_field_depends_on_where_a_patch_is():
    """Changing the actions changes the field's term differently at different patches (cond_in's term changes alike
    at all of them): the field is an interaction of position and action, not a sum."""
    torch.manual_seed(0)
    model = WorldModel(tiny(action_field=True)).eval()
    a, b = make_batch(model.cfg, seed=0), make_batch(model.cfg, seed=1)
    b["frames"] = a["frames"]
    va, vb = model.conditioning(a).vector, model.conditioning(b).vector
    change = model.position_action_term(va) - model.position_action_term(vb)  # [B, F, N, W]
    spread = (change - change.mean(dim=2, keepdim=True)).abs().amax()
    assert spread > 0.05 * change.abs().amax() > 0
    off = WorldModel(tiny(action_field=False))
    assert not any(n.startswith("field_") for n, _ in off.named_parameters())


def test_a_frame_is_conditioned_on_its_chunk_and_the_one_before():
    """With action_history, predicted frame f (chunk f-1) also reads chunk f-2 and no later chunk; without it, only
    its own chunk."""
    torch.manual_seed(0)
    for history, reach in ((True, {1, 2}), (False, {1})):
        model = WorldModel(tiny(action_history=history)).eval()
        a = make_batch(model.cfg, seed=0)
        b = {k: v.clone() for k, v in a.items()}
        b["action_tokens"][:, 0] = (a["action_tokens"][:, 0] + 1).where(a["action_mask"][:, 0], 0)  # another chunk 0
        with torch.no_grad():
            va, vb = model.conditioning(a).vector, model.conditioning(b).vector  # [B, F-1, W]: frames 1..F-1
        moved = {f + 1 for f in range(va.shape[1]) if not torch.allclose(va[:, f], vb[:, f])}
        assert moved == reach, (history, moved)
    # an export from before the history has no key for it and no history layers: it loads without them
    older = {k: v for k, v in tiny().to_dict().items() if k != "action_history"}
    assert tiny().action_history and not ModelConfig.from_dict(older).action_history
    assert not any(n.startswith("history_") for n, _ in WorldModel(tiny(action_history=False)).named_parameters())


def test_bf16_forward_as_under_deepspeed():
    torch.manual_seed(0)
    model = wake(WorldModel(tiny())).to(torch.bfloat16)
    out = model(make_batch(model.cfg))
    assert torch.isfinite(out["loss"]) and out["loss"].dtype == torch.float32


def test_noise_levels_are_independent_per_frame_and_reproducible():
    model = WorldModel(tiny(prefix_prob=0.0))
    t, w = model.sample_noise_levels(64, 5, torch.device("cpu"), torch.Generator().manual_seed(3))
    t2, _ = model.sample_noise_levels(64, 5, torch.device("cpu"), torch.Generator().manual_seed(3))
    assert torch.equal(t, t2) and torch.all(w == 1)
    assert t.std(dim=1).mean() > 0.15  # frames of one clip get different levels (Diffusion Forcing)
    model = WorldModel(tiny(prefix_prob=1.0))
    t, w = model.sample_noise_levels(64, 5, torch.device("cpu"), torch.Generator().manual_seed(3))
    assert torch.all(t[:, 0] == 0) and torch.all(w[:, 0] == model.cfg.prefix_loss_weight)  # context_frames - 1 = 1


@pytest.mark.parametrize("k", [1, 3])
def test_temporal_attention_is_causal(k):
    """Changing frame k changes the predictions for frames k.. (predicted frame k and later) and none before."""
    torch.manual_seed(0)
    model = wake(WorldModel(tiny())).eval()
    batch = make_batch(model.cfg)
    prev, x_t, t, cond = denoise_inputs(model, batch)
    base = model.denoise(prev, x_t, t, cond)[0]
    prev2 = prev.clone()
    prev2[:, k] += 0.5  # frame k is the previous frame of predicted frame k + 1 (position k)
    out = model.denoise(prev2, x_t, t, cond)[0]
    diff = (out - base).abs().amax(dim=(0, 2, 3, 4))
    assert torch.all(diff[:k] == 0) and torch.all(diff[k:] > 0), diff


def test_a_frames_action_chunk_conditions_the_next_frame_and_the_last_chunk_is_unused():
    torch.manual_seed(0)
    model = wake(WorldModel(tiny())).eval()
    batch = make_batch(model.cfg)
    prev, x_t, t, _ = denoise_inputs(model, batch)
    base = model.denoise(prev, x_t, t, model.conditioning(batch))[0]
    for chunk in (2, batch["frames"].shape[1] - 1):
        other = {**batch, "action_tokens": batch["action_tokens"].clone()}
        other["action_tokens"][:, chunk] = torch.where(batch["action_mask"][:, chunk], BIN_BASE + 7, 0)
        diff = (model.denoise(prev, x_t, t, model.conditioning(other))[0] - base).abs().amax(dim=(0, 2, 3, 4))
        if chunk == batch["frames"].shape[1] - 1:  # the last frame's chunk leads past the clip
            assert torch.all(diff == 0)
        else:  # chunk c leads to frame c + 1, predicted at position c
            assert torch.all(diff[:chunk] == 0) and torch.all(diff[chunk:] > 0), diff


def test_dropped_actions_make_the_prediction_independent_of_them():
    torch.manual_seed(0)
    model = wake(WorldModel(tiny())).eval()
    a, b = make_batch(model.cfg, seed=0), make_batch(model.cfg, seed=1)
    b["frames"] = a["frames"]
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(model.losses(a, g(), drop_actions=True), model.losses(b, g(), drop_actions=True))
    assert not torch.equal(model.losses(a, g(), drop_actions=False), model.losses(b, g(), drop_actions=False))


def test_action_padding_is_ignored():
    torch.manual_seed(0)
    model = wake(WorldModel(tiny())).eval()
    batch = make_batch(model.cfg)
    noisy = {**batch}
    pad = ~batch["action_mask"]
    noisy["action_tokens"] = batch["action_tokens"].where(~pad, BIN_BASE + 3)
    noisy["action_slots"] = batch["action_slots"].where(~pad, 5)
    prev, x_t, t, _ = denoise_inputs(model, batch)
    a = model.denoise(prev, x_t, t, model.conditioning(batch))[0]
    b = model.denoise(prev, x_t, t, model.conditioning(noisy))[0]
    assert torch.allclose(a, b, atol=1e-6)


def test_a_frame_without_any_action_token_is_well_defined():
    torch.manual_seed(0)
    model = wake(WorldModel(tiny()))
    batch = make_batch(model.cfg)
    batch["action_mask"][:, 1] = False
    assert torch.isfinite(model(batch)["loss"])


def test_token_values_give_bins_their_centres_and_neighbours_similar_features():
    value, has = token_values(8192)
    assert value[BIN_BASE].item() == pytest.approx(-1 + 1 / 256) and value[BIN_BASE + 255].item() == pytest.approx(1 - 1 / 256)
    assert has[BIN_BASE:BIN_BASE + 256].all() and not has[:BIN_BASE].any() and has.sum() == 258  # + binary off/on
    f = value_features(value[BIN_BASE:BIN_BASE + 256])
    near, far = (f[100] - f[101]).norm(), (f[100] - f[200]).norm()
    assert near < 0.3 * far


def test_inputs_beyond_the_model_are_refused():
    model = WorldModel(tiny())
    with pytest.raises(UnifiedActionError, match="max_frames=6"):
        model(make_batch(model.cfg, frames=7))
    with pytest.raises(UnifiedActionError, match="room for 12"):
        model(make_batch(model.cfg, P=13))


def test_resize_vocab_and_action_tokens_keep_rows_and_behaviour():
    torch.manual_seed(0)
    model = wake(WorldModel(tiny())).eval()
    batch = make_batch(model.cfg)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    before = model.losses(batch, g(), drop_actions=False)
    model.resize_vocab(9000)
    model.resize_action_tokens(40)
    assert model.actions.token.weight.shape[0] == 9000 and model.actions.token_value.shape == (9000,)
    assert model.cfg.vocab_size == 9000 and model.cfg.max_action_tokens == 40
    assert torch.allclose(model.losses(batch, g(), drop_actions=False), before)
    with pytest.raises(UnifiedActionError, match="only grows"):
        model.resize_vocab(100)
    with pytest.raises(UnifiedActionError, match="fewer than the 40 tokens"):
        model.resize_action_tokens(12)


def test_flops_per_clip():
    model = WorldModel(tiny())
    assert 0 < model.flops_per_clip(4) < model.flops_per_clip(8)
    assert 1e7 < model.flops_per_clip(6) < 1e10


# ----------------------------------------------------------------------------------------- config and sizes
PARAMETER_RANGES = {"tiny": (2e6, 4e6), "small": (30e6, 60e6), "base": (150e6, 350e6), "large": (0.7e9, 1.2e9)}


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
    assert again == cfg and isinstance(again.image_size, tuple)
    assert ModelConfig(size="base").width == MODEL_SIZES["base"]["width"]
    # an export written before the action field existed has no such key and no such layers: it loads without them
    older = {k: v for k, v in cfg.to_dict().items() if k != "action_field"}
    assert cfg.action_field and not ModelConfig.from_dict(older).action_field


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
    with pytest.raises(UnifiedActionError, match="action_dropout"):
        model_config("tiny", action_dropout=1.0)


def test_balanced_loss_weighs_clips_by_their_change():
    """balance_eps: a clip's loss is scaled by 1 / (its mean squared change + eps), normalised to mean 1."""
    torch.manual_seed(0)
    plain = wake(WorldModel(tiny(balance_eps=0.0, rollout_blur=0.0)))
    balanced = WorldModel(tiny(balance_eps=1e-3, rollout_blur=0.0))
    balanced.load_state_dict(plain.state_dict())
    batch = make_batch(plain.cfg, B=3)
    batch["frames"][0] = batch["frames"][0, :1]  # a clip that does not move
    batch["frames"][1, 1:] = batch["frames"][1, :1] + 4  # one that moves a little
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    lp, lb = plain.losses(batch, g()), balanced.losses(batch, g())
    pix = batch["frames"].float() / 127.5
    energy = (pix[:, 1:] - pix[:, :-1]).pow(2).mean(dim=(1, 2, 3, 4))
    w = 1 / (energy + 1e-3)
    assert torch.allclose(lb, lp * w / w.mean(), rtol=1e-4)
    assert w[0] > w[1] > w[2]  # the still clip weighs most, the random one least
    # measurements (the monitor's fixed comparisons) stay unweighted
    assert torch.allclose(plain.losses(batch, g(), drop_actions=False), balanced.losses(batch, g(), drop_actions=False))
