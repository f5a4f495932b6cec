"""Chunks of scenes with several agents: the agent section of the vocabulary, cards that list agents (and their
refusals), round trips for 1..MAX_AGENTS agents, and single-agent data tokenizing exactly as before."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import CARDS

from unified_action.cards import load_card, parse_card
from unified_action.errors import CardError
from unified_action.tokenization import Registry
from unified_action.tokenization.fitting import fit_tokenizer
from unified_action.tokenization.kinds import check_card
from unified_action.tokenization.vocabulary import AGENT_BASE, BOS, EOS, MAX_AGENTS, SECTIONS

FIELD = """      - path: action
        dtype: int64
        shape: []
        kind: categorical
        units: index
        range: {low: 0, high: 4}
        slots: [gamepad.dpad_up, gamepad.dpad_down, gamepad.dpad_left, gamepad.dpad_right]
        transform: {type: table, input: index, rows: [[0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 1, 0, 0], [1, 0, 0, 0]]}
"""
TOP_LEVEL = "".join(line[4:] + "\n" for line in FIELD.splitlines())  # the same field under a card's `action`
STICK = """      - path: stick
        dtype: float32
        shape: [2]
        kind: continuous
        units: normalized
        slots: [gamepad.left_stick.x, gamepad.left_stick.y]
"""


def scene_card(n: int, kind: str = "discrete", names=None, extra: str = "", field: str = FIELD) -> str:
    names = names or [f"agent_{k}" for k in range(n)]
    agents = "".join(f"  - name: {a}\n    action:\n{field}" for a in names)
    return (f"---\nname: scene\nlicense: mit\nembodiment: scene_agents\nsource: {{type: numpy, path: x}}\n"
            f"control_frequency_hz: 10\n{extra}agents:\n{agents}tokenizer: {{kind: {kind}, chunk_length: 2}}\n---\nbody\n")


def test_the_agent_section_is_appended_and_changes_no_earlier_id():
    s = {x.name: x for x in SECTIONS}
    assert (s["agent"].start, s["agent"].size) == (5650, MAX_AGENTS) == (AGENT_BASE, 8)
    assert s["category"].stop == s["agent"].start and s["agent"].stop == s["reserved"].start
    assert s["reserved"].stop == s["bpe"].start == 8192  # every id after the section as in layout 1


@pytest.mark.parametrize("n", range(1, MAX_AGENTS + 1))
def test_round_trip_with_any_number_of_agents(n):
    card = parse_card(scene_card(n))
    rng = np.random.default_rng(n)
    episodes = [rng.integers(0, 5, (30, n)) for _ in range(3)]
    tok, _ = fit_tokenizer(card, episodes, embodiment_token=20, bpe_start=8192)
    assert tok.agents == tuple(f"agent_{k}" for k in range(n)) and tok.spec.max_tokens == 3 + n + n * 2 * 4
    native = np.stack([e[:2] for e in episodes])  # [3, chunk 2, n agents]
    tb = tok.encode_native(native)
    t = tb.tokens[0]
    assert t[0] == BOS and t[1] == 20 and t[-1] == EOS
    for k in range(n):  # agent k's token, then its 2 x 4 values, all marked as agent k's
        at = 2 + k * 9
        assert t[at] == AGENT_BASE + k and (tb.agents[0, at: at + 9] == k).all()
        assert (tb.slots[0, at + 1: at + 9] >= 0).all() and tb.slots[0, at] == -1
    back = tok.decode_native(tb.tokens)
    assert back.valid.all() and np.array_equal(back.actions, native)
    broken = tb.tokens.copy()
    broken[:, 2] = AGENT_BASE + 7 if n < 8 else AGENT_BASE + 1  # the first agent's token is another agent's
    assert not tok.decode(broken).valid.any()


def test_one_agent_tokenizes_exactly_as_before(tmp_path):
    card = load_card(CARDS / "ale_pong.md")
    eps = [np.random.default_rng(0).integers(0, 18, 40) for _ in range(2)]
    tok = Registry(tmp_path).register(card, [e[:, None] for e in eps])
    spec = json.loads((tmp_path / "ale_pong" / "spec.json").read_text())
    assert "agents" not in spec and tok.agents == ()
    tb = tok.encode_native(np.zeros((1, 2, 1)))
    assert (tb.agents == -1).all() and not np.isin(tb.tokens, range(AGENT_BASE, AGENT_BASE + 8)).any()


@pytest.mark.parametrize("text,message", [
    (scene_card(2, names=["a", "a"]), r"agent name 'a' is used twice"),
    (scene_card(9), r"agents: List should have at most 8 items"),
    (scene_card(2, extra="action:\n" + TOP_LEVEL), r"exactly one of 'action'"),
    (scene_card(2, field=FIELD + FIELD), r"agents\[0\]\.action\[1\]\.path: 'agent_0/action' is mapped twice"),
    (scene_card(2).replace("source: {type: numpy, path: x}", "source: {type: gymnasium, env_id: CarRacing-v3}"),
     r"agents: a gymnasium source has one agent"),
])
def test_a_bad_agents_section_is_one_line(text, message):
    with pytest.raises(CardError, match=message) as e:
        parse_card(text, "scene.md")
    assert all(line.startswith("scene.md: ") for line in e.value.problems)


def test_a_kind_that_cannot_frame_agents_is_refused():
    card = parse_card(scene_card(2, kind="fast", field=STICK), "scene.md")
    assert any("tokenizer.kind: 'fast' cannot frame several agents' chunks; use 'bin' or 'discrete'" in p
               for p in check_card(card))


def test_a_pettingzoo_card_must_list_its_agents():
    text = (CARDS / "pettingzoo_cooperative_pong.md").read_text()
    head = text.split("agents:")[0] + "action:\n" + TOP_LEVEL + "tokenizer:" + text.split("tokenizer:")[1]
    with pytest.raises(CardError, match="agents: required for a pettingzoo source"):
        parse_card(head, "x.md")
