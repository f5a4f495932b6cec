"""Round trips (property-based), padding and masks, clipping, torch tensors, corrupted sequences."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from support import unified_chunks

from unified_action.errors import TokenizerError
from unified_action.tokenization import ActionTokenizer
from unified_action.tokenization.codecs import NUM_BINS
from unified_action.tokenization.vocabulary import BOS, EOS, PAD, SEP, UNK

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def in_range_chunks(tok):
    """A strategy of chunk batches [B, T, D] inside the fitted range (q01..q99) for continuous slots and valid
    states for discrete slots."""
    lo, hi = tok.stats.q01, tok.stats.q99
    n = tok.num_classes

    def build(u):
        x = lo + u * (hi - lo)
        disc = n > 0
        x[..., disc] = np.floor(u[..., disc] * n[disc] * 0.999)
        return x

    return st.integers(1, 6).flatmap(
        lambda b: arrays(np.float64, (b, tok.horizon, tok.dim), elements=st.floats(0, 1, allow_nan=False)).map(build))


@pytest.fixture(scope="module")
def toks(registry):
    return {name: registry.load(name) for name in ("gym_aloha_insertion", "carracing", "ale_pong")}


@SETTINGS
@given(data=st.data())
def test_discrete_round_trip_is_exact(toks, data):
    tok = toks["ale_pong"]
    x = data.draw(in_range_chunks(tok))
    dec = tok.decode(tok.encode(x).tokens)
    assert dec.valid.all()
    np.testing.assert_array_equal(dec.actions, x)


@SETTINGS
@given(data=st.data())
def test_bin_error_is_at_most_half_a_bin(toks, data):
    tok = toks["carracing"]
    x = data.draw(in_range_chunks(tok))
    enc = tok.encode(x)
    assert (enc.clipped == 0).all()
    dec = tok.decode(enc.tokens)
    half_bin = (tok.stats.q99 - tok.stats.q01) / NUM_BINS  # half of 2/NUM_BINS in normalized units, in slot units
    assert dec.valid.all()
    assert np.all(np.abs(dec.actions - x) <= half_bin * (1 + 1e-9) + 1e-12)


@SETTINGS
@given(data=st.data())
def test_fast_error_is_bounded_by_the_quantization(toks, data):
    """Each DCT coefficient is off by at most 0.5/scale; the orthonormal inverse keeps the RMS error below
    0.5/scale and each value's error below sqrt(T) * 0.5/scale (normalized units)."""
    tok = toks["gym_aloha_insertion"]
    x = data.draw(in_range_chunks(tok))
    enc = tok.encode(x, length=tok.min_length + 3 * tok.horizon * tok.dim)  # room for white-noise chunks
    dec = tok.decode(enc.tokens)
    assert dec.valid.all() and not enc.overflow.any()
    z, _ = tok.normalizer.normalize(x)
    zd, _ = tok.normalizer.normalize(dec.actions)
    err = zd - z
    step = 0.5 / tok.spec.fast_scale
    assert np.sqrt(np.mean(err**2)) <= step + 1e-9
    assert np.abs(err).max() <= np.sqrt(tok.horizon) * step + 1e-9


def test_fast_on_held_out_simulator_data_meets_its_target(registry, sim_episodes):
    """Measured: the registered report and a fresh measurement agree and meet target_rmse with >=5x fewer
    tokens than one token per value."""
    tok = registry.load("gym_aloha_insertion")
    report = tok.spec.heldout
    assert report["measured_on"] == "held-out episodes" and report["invalid"] == 0
    assert report["rmse_normalized"] <= tok.kind.read_params(tok.card.header.tokenizer.sections).target_rmse * 1.5
    chunks = unified_chunks(tok, sim_episodes["gym_aloha_insertion"][-3:])
    enc = tok.encode(chunks)
    assert enc.mask.sum(1).mean() * 5 <= tok.horizon * tok.dim


def test_padding_masks_slots_and_steps(toks):
    tok = toks["carracing"]
    x = np.tile(tok.stats.mean, (3, tok.horizon, 1))
    enc = tok.encode(x, length=tok.min_length + 5)
    assert enc.tokens.shape == (3, tok.min_length + 5)
    np.testing.assert_array_equal(enc.mask, enc.tokens != PAD)
    assert (enc.mask.sum(1) == tok.min_length).all()
    assert (enc.tokens[:, 0] == BOS).all() and (enc.tokens[:, 1] == tok.spec.embodiment_token).all()
    assert (enc.tokens[:, tok.min_length - 1] == EOS).all()
    values = enc.slots >= 0
    assert values.sum(1).tolist() == [tok.horizon * tok.dim] * 3
    assert set(enc.slots[0][values[0]].tolist()) == set(tok.spec.slot_ids)
    assert enc.steps[0][values[0]].tolist() == np.repeat(np.arange(tok.horizon), tok.dim).tolist()
    with pytest.raises(TokenizerError, match="too short"):
        tok.encode(x, length=tok.min_length - 1)


def test_fast_sequence_layout(toks):
    tok = toks["gym_aloha_insertion"]
    x = np.tile(tok.stats.mean, (2, tok.horizon, 1))
    enc = tok.encode(x)
    assert enc.tokens.shape == (2, tok.spec.max_tokens)
    row = enc.tokens[0][enc.mask[0]]
    assert row[0] == BOS and row[1] == tok.spec.embodiment_token and row[-2] == SEP and row[-1] == EOS
    assert tok.kind.bpe.owns(row[2:-2]).all()


def test_values_outside_the_fitted_range_are_clipped_and_counted(toks):
    tok = toks["carracing"]
    x = np.tile(tok.stats.mean, (2, tok.horizon, 1))
    x[1, 0, 0] = tok.stats.q99[0] + 10.0
    enc = tok.encode(x)
    assert enc.clipped.tolist() == [0, 1]
    dec = tok.decode(enc.tokens)
    assert dec.valid.all() and dec.actions[1, 0, 0] <= tok.stats.q99[0]


def test_categorical_out_of_range_is_clipped_and_counted(toks):
    tok = toks["ale_pong"]
    x = np.zeros((1, tok.horizon, tok.dim))
    x[0, 0, 0] = 3.0  # a binary button holding 3
    enc = tok.encode(x)
    assert enc.clipped.tolist() == [1]
    assert tok.decode(enc.tokens).actions[0, 0, 0] == 1.0


def test_non_finite_and_misshapen_actions_are_refused(toks):
    tok = toks["carracing"]
    x = np.zeros((2, tok.horizon, tok.dim))
    x[1, 2, 0] = np.nan
    with pytest.raises(TokenizerError, match="batch item 1 holds NaN"):
        tok.encode(x)
    with pytest.raises(TokenizerError, match=rf"expected actions of shape \[batch, {tok.horizon}, {tok.dim}\]"):
        tok.encode(np.zeros((tok.horizon, tok.dim)))


def test_torch_in_torch_out(toks):
    tok = toks["gym_aloha_insertion"]
    x = torch.from_numpy(np.tile(tok.stats.mean, (2, tok.horizon, 1)))
    enc = tok.encode(x)
    assert isinstance(enc.tokens, torch.Tensor) and enc.tokens.dtype == torch.int64
    dec = tok.decode(enc.tokens)
    assert isinstance(dec.actions, torch.Tensor) and bool(dec.valid.all())


def test_native_round_trip_through_the_card(toks, sim_episodes):
    tok = toks["ale_pong"]
    native = np.stack([e[: tok.horizon] for e in sim_episodes["ale_pong"]])
    enc = tok.encode_native(native)
    assert (enc.clipped == 0).all()
    dec = tok.decode_native(enc.tokens)
    np.testing.assert_array_equal(dec.actions, native)
    native[1, -1, 0] = 25  # no Atari action: clipped into the table, and counted
    assert tok.encode_native(native).clipped.tolist()[:3] == [0, 1, 0]


def test_overflowing_fast_sequence_is_flagged_not_truncated(toks):
    """White noise needs far more pieces than smooth motion; past max_tokens the item is flagged.

    The fixture's tokenizer is fitted on fewer than FEW_CHUNKS chunks, so it pads to the binned length (4 + T x D),
    where noise fits; padded as a tokenizer fitted on more data would be (a few dozen tokens), noise overflows."""
    fitted = toks["gym_aloha_insertion"]
    assert fitted.spec.max_tokens == 4 + fitted.horizon * fitted.dim  # the few-shot floor (fitting.FEW_CHUNKS)
    tok = ActionTokenizer(replace(fitted.spec, max_tokens=64), fitted.stats, fitted.kind.bpe.sp.serialized_model_proto(),
                          fitted.card)
    rng = np.random.default_rng(0)
    x = tok.stats.q01 + rng.random((2, tok.horizon, tok.dim)) * (tok.stats.q99 - tok.stats.q01)
    x[0] = tok.stats.mean
    enc = tok.encode(x)
    assert enc.overflow.tolist() == [False, True]
    assert enc.tokens[1, :4].tolist() == [BOS, tok.spec.embodiment_token, UNK, EOS]
    dec = tok.decode(enc.tokens)
    assert dec.valid.tolist() == [True, False] and np.isnan(dec.actions[1]).all()
    assert dec.reasons[1] == "the chunk overflowed the padded length at encode"


# ---------------------------------------------------------------- corrupted sequences


def _corrupt(kind, tokens, tok, rng):
    t = tokens.copy()
    n = int((t != PAD).sum())
    if kind == "no_bos":
        t[0] = PAD
    elif kind == "wrong_embodiment":
        t[1] = t[1] + 1
    elif kind == "no_eos":
        t[n - 1] = PAD
    elif kind == "truncated":
        t[n // 2:] = PAD
    elif kind == "token_after_eos":
        t[n] = t[2]
    elif kind == "special_inside":
        t[2 + rng.integers(0, n - 3)] = UNK
    elif kind == "foreign_value":
        t[2 + rng.integers(0, n - 3)] = 5  # the <mask> special: never a value
    elif kind == "all_pad":
        t[:] = PAD
    return t


KINDS = ["no_bos", "wrong_embodiment", "no_eos", "truncated", "token_after_eos", "special_inside", "foreign_value", "all_pad"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(KINDS), which=st.sampled_from(["gym_aloha_insertion", "carracing", "ale_pong"]), seed=st.integers(0, 10**6))
def test_corrupted_sequences_are_flagged_invalid_never_zeros(toks, kind, which, seed):
    tok = toks[which]
    rng = np.random.default_rng(seed)
    x = np.tile(tok.stats.mean, (3, tok.horizon, 1))
    x[..., tok.num_classes > 0] = 1
    enc = tok.encode(x, length=tok.spec.max_tokens + 2)
    tokens = enc.tokens.copy()
    tokens[1] = _corrupt(kind, tokens[1], tok, rng)
    dec = tok.decode(tokens)
    assert dec.valid.tolist() == [True, False, True], (kind, dec.reasons)
    assert dec.reasons[1] and not dec.reasons[0]
    assert np.isnan(dec.actions[1]).all() and not np.isnan(dec.actions[0]).any()


def test_bpe_piece_of_another_block_is_flagged(toks):
    tok = toks["gym_aloha_insertion"]
    x = np.tile(tok.stats.mean, (1, tok.horizon, 1))
    tokens = tok.encode(x).tokens.copy()
    tokens[0, 2] = tok.spec.bpe_start + tok.spec.bpe_size  # first id past this tokenizer's block
    dec = tok.decode(tokens)
    assert not dec.valid[0] and "not a BPE piece of this tokenizer" in dec.reasons[0]
