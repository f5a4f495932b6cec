"""The registry: atomic writes, content hashes, a stable shared vocabulary, did-you-mean."""

import json
import multiprocessing as mp

import numpy as np
import pytest
from support import CARDS

from unified_action.cards import load_card, parse_card
from unified_action.errors import DataError, RegistryError
from unified_action.tokenization import Registry
from unified_action.tokenization.registry import REGISTRY_ENV, default_registry_path
from unified_action.tokenization.vocabulary import BPE_BASE, EMBODIMENT_BASE, SECTIONS


def _card(name):
    return load_card(CARDS / f"{name}.md")


def test_fixed_sections_do_not_overlap():
    fixed = [s for s in SECTIONS if s.size]
    for a, b in zip(fixed, fixed[1:]):
        assert a.stop == b.start
    assert fixed[-1].stop == BPE_BASE


def test_registered_files_and_hash(registry):
    d = registry.root / "gym_aloha_insertion"
    assert sorted(p.name for p in d.iterdir()) == ["bpe.model", "card.md", "manifest.json", "spec.json", "stats.json"]
    assert (d / "card.md").read_text() == (CARDS / "gym_aloha_insertion.md").read_text()
    tok = registry.load("gym_aloha_insertion")
    assert tok.content_hash == json.loads((d / "manifest.json").read_text())["content_hash"]
    assert not any(p.name.startswith(".tmp") for p in registry.root.iterdir())


def test_new_embodiments_never_change_existing_ids_or_outputs(tmp_path, sim_episodes):
    reg = Registry(tmp_path)
    aloha = reg.register(_card("gym_aloha_insertion"), sim_episodes["gym_aloha_insertion"])
    chunks = np.stack([aloha.card.mapping.to_unified(e[:50])[0] for e in sim_episodes["gym_aloha_insertion"][:4]])
    before = aloha.encode(chunks).tokens.copy()
    vocab_before = reg.vocabulary()
    reg.register(_card("carracing"), sim_episodes["carracing"])
    reg.register(_card("ale_pong"), sim_episodes["ale_pong"])
    # a second fast tokenizer gets its own BPE block after the first
    text = (CARDS / "gym_aloha_insertion.md").read_text().replace("name: gym_aloha_insertion", "name: aloha_copy")
    text = text.replace(f"embodiment: {aloha.spec.embodiment}", "embodiment: aloha_copy")
    copy = reg.register(parse_card(text, "aloha_copy.md"),
                        sim_episodes["gym_aloha_insertion"][::-1])
    after = reg.load("gym_aloha_insertion")
    np.testing.assert_array_equal(after.encode(chunks).tokens, before)
    assert after.content_hash == aloha.content_hash
    vocab = reg.vocabulary()
    name = aloha.spec.embodiment
    assert vocab.embodiments[name] == vocab_before.embodiments[name] == EMBODIMENT_BASE
    assert len(set(vocab.embodiments.values())) == 4
    assert copy.spec.bpe_start >= aloha.spec.bpe_start + aloha.spec.bpe_size
    assert vocab.size == copy.spec.bpe_start + copy.spec.bpe_size


def test_same_embodiment_shares_its_token(tmp_path, sim_episodes):
    reg = Registry(tmp_path)
    a = reg.register(_card("ale_pong"), sim_episodes["ale_pong"])
    text = (CARDS / "ale_pong.md").read_text().replace("name: ale_pong", "name: ale_breakout")
    b = reg.register(parse_card(text, "ale_breakout.md"), sim_episodes["ale_pong"])
    assert a.spec.embodiment_token == b.spec.embodiment_token


def test_existing_name_needs_force_and_keeps_its_ids(tmp_path, sim_episodes):
    reg = Registry(tmp_path)
    first = reg.register(_card("gym_aloha_insertion"), sim_episodes["gym_aloha_insertion"])
    with pytest.raises(RegistryError, match="already registered; pass --force"):
        reg.register(_card("gym_aloha_insertion"), sim_episodes["gym_aloha_insertion"])
    again = reg.register(_card("gym_aloha_insertion"), sim_episodes["gym_aloha_insertion"][:10], force=True)
    assert again.spec.embodiment_token == first.spec.embodiment_token
    assert again.spec.bpe_start == first.spec.bpe_start
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "gym_aloha_insertion"]


def test_failed_registration_leaves_nothing_behind(tmp_path):
    reg = Registry(tmp_path)
    bad = [np.array([[3.0], [40.0]])]  # 40 is no Atari action
    with pytest.raises(DataError, match="outside the card's action table"):
        reg.register(_card("ale_pong"), bad)
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]
    assert reg.names() == []


def test_edited_files_are_refused(tmp_path, sim_episodes):
    reg = Registry(tmp_path)
    reg.register(_card("carracing"), sim_episodes["carracing"])
    stats = tmp_path / "carracing" / "stats.json"
    d = json.loads(stats.read_text())
    d["q99"][0] += 0.5
    stats.write_text(json.dumps(d))
    with pytest.raises(RegistryError, match=r"carracing/stats.json: changed since registration"):
        reg.load("carracing")


def test_unknown_name_suggests(registry):
    with pytest.raises(RegistryError, match="no tokenizer named 'carracin' .*did you mean 'carracing'"):
        registry.load("carracin")


def test_registry_location_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(REGISTRY_ENV, str(tmp_path / "x"))
    assert default_registry_path() == tmp_path / "x"
    monkeypatch.delenv(REGISTRY_ENV)
    assert str(default_registry_path()) == "tokenizers"


def _register_in_child(root, name, episodes, queue):
    text = (CARDS / "ale_pong.md").read_text().replace("name: ale_pong", f"name: {name}")
    text = text.replace("embodiment: atari_gamepad", f"embodiment: {name}")
    tok = Registry(root).register(parse_card(text, f"{name}.md"), episodes)
    queue.put(tok.spec.embodiment_token)


def test_concurrent_registrations_get_distinct_ids(tmp_path, sim_episodes):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_register_in_child, args=(tmp_path, f"game_{i}", sim_episodes["ale_pong"], queue)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    ids = sorted(queue.get(timeout=5) for _ in procs)
    assert ids == [EMBODIMENT_BASE, EMBODIMENT_BASE + 1]
    Registry(tmp_path).vocabulary()  # consistent afterwards
