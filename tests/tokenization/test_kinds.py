"""Tokenizer kinds are classes in a registry: a new kind is one class plus a registration, and works end to end
(card check, fit, registry, encode, decode); unknown kinds and misplaced parameters get one line."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
from cards.test_card import BASE, write
from pydantic import Field
from support import run_cli

from unified_action.cards import load_card
from unified_action.errors import CardError, RegistryError, TokenizerError
from unified_action.tokenization import Registry, codecs
from unified_action.tokenization.batches import TokenBatch
from unified_action.tokenization.kinds import (
    KindParams,
    TokenizerKind,
    check_card,
    get_kind,
    kind_names,
    register_kind,
    unregister_kind,
)
from unified_action.tokenization.kinds.base import framed
from unified_action.tokenization.vocabulary import EOS, PAD


class CoarseParams(KindParams):
    levels: int = Field(default=16, ge=2, le=256)


class CoarseKind(TokenizerKind):
    """A small real kind: every continuous value snapped to one of `levels` uniform levels over [-1, 1] and sent
    as the bin token of that level's centre; buttons as their state tokens. Nothing to learn."""

    Params = CoarseParams

    def __init__(self, tok, model):
        super().__init__(tok, model)
        self.levels = self.read_params(tok.card.header.tokenizer.sections).levels if tok.card else CoarseParams().levels

    def _centres(self, z: np.ndarray) -> np.ndarray:
        level = np.clip(np.floor((z + 1.0) / 2.0 * self.levels), 0, self.levels - 1)
        return -1.0 + (level + 0.5) * (2.0 / self.levels)

    @property
    def min_length(self) -> int:
        return self.framing + self.tok.horizon * self.tok.dim

    def encode(self, z, states, length) -> TokenBatch:
        cont = self.tok.continuous
        B, T, D = z.shape
        payload = np.empty((B, T, D), dtype=np.int64)
        payload[..., cont] = codecs.bin_encode(self._centres(z[..., cont]))
        payload[..., ~cont] = states
        tokens, slots, steps = framed(B, length, self.tok.spec.embodiment_token)
        tokens[:, 2: 2 + T * D] = payload.reshape(B, -1)
        tokens[:, 2 + T * D] = EOS
        slots[:, 2: 2 + T * D] = np.tile(self.tok.slot_ids, T)
        steps[:, 2: 2 + T * D] = np.repeat(np.arange(T), D)
        return TokenBatch(tokens, tokens != PAD, slots, steps, np.zeros(B, np.int64), np.zeros(B, bool))

    def decode(self, t, values, fail) -> None:
        cont = self.tok.continuous
        B, T, D = values.shape
        payload = t[:, 2: 2 + T * D].reshape(B, T, D)
        fail(~codecs.is_bin(payload[..., cont]).reshape(B, -1).all(1), "a continuous slot holds a token that is not a value bin")
        values[..., cont] = self._centres(codecs.bin_decode(payload[..., cont]))
        values[..., ~cont] = self.tok.check_states(payload[..., ~cont], fail)
        fail(t[:, 2 + T * D] != EOS, "no <eos> after the values")


@pytest.fixture
def coarse():
    register_kind("coarse")(CoarseKind)
    yield CoarseKind
    unregister_kind("coarse")


def card_with(tmp_path, name="toy_arm", **tokenizer):
    h = copy.deepcopy(BASE)
    h["tokenizer"] = {"chunk_length": 4, **tokenizer}
    return write(tmp_path, h, name=name)


def toy_episodes(n=6, steps=40, seed=0):
    rng = np.random.default_rng(seed)
    return [np.concatenate([rng.uniform(-0.05, 0.05, (steps, 3)), rng.uniform(-1, 1, (steps, 1))], axis=1) for _ in range(n)]


def test_a_new_kind_is_one_class_and_a_registration_end_to_end(coarse, tmp_path, monkeypatch, capsys):
    path = card_with(tmp_path, kind="coarse", coarse={"levels": 8})
    code, out, _ = run_cli(monkeypatch, capsys, "card", "validate", path)
    assert code == 0 and "coarse" in out
    episodes = toy_episodes()
    reg = Registry(tmp_path / "reg")
    reg.register(load_card(path), episodes)
    tok = reg.load("toy_arm")  # card.md parsed back and checked against the registered kind
    assert tok.spec.kind == "coarse" and isinstance(tok.kind, CoarseKind) and tok.kind.levels == 8
    assert tok.spec.max_tokens == tok.min_length == 3 + 4 * tok.dim and tok.spec.heldout["invalid"] == 0
    x = np.stack([tok.card.mapping.to_unified(e[:4])[0] for e in episodes[-1:] + episodes[:1]])
    enc = tok.encode(x)
    dec = tok.decode(enc.tokens)
    assert dec.valid.all()
    z, _ = tok.normalizer.normalize(x)
    zd, _ = tok.normalizer.normalize(dec.actions)
    err = np.abs(zd - z)
    assert err.max() <= 1 / 8 + 1e-9  # half of one of 8 levels over [-1, 1]
    assert err.max() > 1 / 256  # coarser than a bin: the card's `levels` is what encoded
    again = tok.decode(tok.encode(dec.actions).tokens)  # level centres are fixed points
    np.testing.assert_allclose(again.actions, dec.actions, atol=1e-12)
    unregister_kind("coarse")
    with pytest.raises(RegistryError, match=r"toy_arm/spec\.json: kind: unknown tokenizer kind 'coarse'"):
        reg.load("toy_arm")


BAD_PARAMS = [
    (dict(kind="coarse", coarse={"levels": 1}), r"tokenizer\.coarse\.levels: Input should be greater than or equal to 2"),
    (dict(kind="coarse", coarse={"level": 8}), r"tokenizer\.coarse\.level: unknown field \(did you mean 'levels'\?\)"),
    (dict(kind="coarse", fast={"vocab_size": 512}), r"tokenizer\.fast: parameters of kind 'fast', but this card's kind is 'coarse'"),
    (dict(kind="bin", coarse={"levels": 8}), r"tokenizer\.coarse: parameters of kind 'coarse', but this card's kind is 'bin'"),
    (dict(kind="bin", bin={}), r"tokenizer\.bin: kind 'bin' takes no parameters"),
    (dict(kind="fast", fast=3), r"tokenizer\.fast: expected a mapping of the 'fast' parameters \(scale, target_rmse, vocab_size\), got int"),
    (dict(kind="fast", fast={"vocab_size": 10}), r"tokenizer\.fast\.vocab_size: Input should be greater than or equal to 300"),
    (dict(kind="fast", fast={"scale": -1}), r"tokenizer\.fast\.scale: Value error, expected 'auto' or a number > 0 and <= 10000"),
    (dict(kind="fast", fast={"scale": float("nan")}), r"tokenizer\.fast\.scale: Value error, expected 'auto' or a number"),
]


@pytest.mark.parametrize("tokenizer,expected", BAD_PARAMS, ids=[str(b[0]) for b in BAD_PARAMS])
def test_a_kind_refuses_parameters_it_does_not_take(coarse, tmp_path, tokenizer, expected):
    path = card_with(tmp_path, **tokenizer)
    problems = check_card(load_card(path))
    assert len(problems) == 1 and problems[0].startswith(f"{path}: "), problems
    assert re.search(expected, problems[0]), problems


def test_unknown_kind_gets_did_you_mean(tmp_path, monkeypatch, capsys):
    path = card_with(tmp_path, kind="bins")
    code, _, err = run_cli(monkeypatch, capsys, "card", "validate", path)
    assert code == 2
    assert err.strip() == (f"error: {path}: tokenizer.kind: unknown tokenizer kind 'bins' (did you mean 'bin'?); "
                           f"known: bin, discrete, fast")
    with pytest.raises(TokenizerError, match=r"unknown tokenizer kind 'fsat' \(did you mean 'fast'\?\)"):
        get_kind("fsat")
    with pytest.raises(CardError, match="unknown tokenizer kind 'bins'"):  # registration refuses it before fitting
        Registry(tmp_path / "reg").register(load_card(path), toy_episodes())
    assert not (tmp_path / "reg" / "toy_arm").exists()


def test_registration_is_checked(coarse):
    assert "coarse" in kind_names() and get_kind("coarse") is CoarseKind
    register_kind("coarse")(CoarseKind)  # the same class again: a no-op (a module imported twice)
    with pytest.raises(ValueError, match="already registered by CoarseKind"):
        register_kind("coarse")(type("Other", (TokenizerKind,), {}))
    with pytest.raises(TypeError, match="not a TokenizerKind subclass"):
        register_kind("thing")(dict)
    assert "thing" not in kind_names()


def test_a_registry_with_a_tokenizer_of_an_unregistered_kind_still_lists(coarse, tmp_path):
    """Listing and the vocabulary read spec.json alone; only loading needs the kind's class."""
    reg = Registry(tmp_path / "reg")
    reg.register(load_card(card_with(tmp_path, kind="coarse")), toy_episodes())
    unregister_kind("coarse")
    assert reg.names() == ["toy_arm"] and reg.spec("toy_arm").kind == "coarse"
    assert reg.vocabulary().embodiments == {"toy_arm": 16}
    with pytest.raises(RegistryError, match=r"spec\.json: kind: unknown tokenizer kind 'coarse'"):
        reg.load("toy_arm")
