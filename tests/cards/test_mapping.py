"""Native actions <-> unified slots: every shipped card's mapping inverts exactly on valid native actions."""

import numpy as np
import pytest
from support import CARDS

from unified_action.cards import load_card
from unified_action.cards.mapping import per_dim

CARD_NAMES = sorted(p.stem for p in CARDS.glob("*.md"))


def valid_native(card, n, rng):
    """Native actions inside each part's range (a field mapped as a whole is one part), in card order."""
    cols = []
    for f in card.header.action:
        for p in f.as_parts():
            t = p.transform
            if t.type == "table":
                idx = rng.integers(0, len(t.rows), n)
                cols.append(np.eye(len(t.rows))[idx] if t.input == "onehot" else idx[:, None].astype(float))
            elif t.type == "rpy_to_rotvec":
                cols.append(rng.uniform(-0.3, 0.3, (n, 3)))
            else:
                lo = per_dim(p.range.low, p.size) if p.range else -np.ones(p.size)
                hi = per_dim(p.range.high, p.size) if p.range else np.ones(p.size)
                cols.append(rng.uniform(lo, hi, (n, p.size)))
    return np.concatenate(cols, axis=1)


@pytest.mark.parametrize("name", CARD_NAMES)
def test_to_native_inverts_to_unified(name):
    card = load_card(CARDS / f"{name}.md")
    native = valid_native(card, 64, np.random.default_rng(0))
    unified, outside = card.mapping.to_unified(native)
    assert not outside.any() and unified.shape == (64, card.mapping.dim)
    back = card.mapping.to_native(unified)
    np.testing.assert_allclose(card.mapping.to_unified(back)[0], unified, atol=1e-9)
    many_to_one = [p for f in card.header.action for p in f.as_parts() if p.transform.type == "table" and p.transform.allow_repeated_rows]
    if not many_to_one:  # else several native values decode to the first that means the same
        np.testing.assert_allclose(back, native, atol=1e-9)


def test_many_to_one_table_decodes_to_the_first_match(cards_dir):
    card = load_card(cards_dir / "fractal20220817_data.md")
    field = next(f for f in card.mapping.fields if f.path == "action/terminate_episode")
    native = np.zeros((3, card.mapping.native_dim))
    native[np.arange(3), field.native_start + np.arange(3)] = 1  # terminate, continue, unused
    unified, _ = card.mapping.to_unified(native)
    back = card.mapping.to_native(unified)[:, field.native]
    assert back.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]


def test_atari_table_onto_buttons(cards_dir):
    card = load_card(cards_dir / "ale_pong.md")
    unified, _ = card.mapping.to_unified(np.array([[0], [1], [17]]))
    # slots in id order: dpad_up, dpad_down, dpad_left, dpad_right, a
    assert unified.tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 1, 1, 0, 1]]
    # up and down at once is no Atari action: decoding picks the nearest legal one
    assert card.mapping.to_native(np.array([[1, 1, 0, 0, 1]]))[0, 0] in (10, 13)


def test_out_of_table_values_are_counted(cards_dir):
    card = load_card(cards_dir / "ale_pong.md")
    _, outside = card.mapping.to_unified(np.array([[18], [-1], [3]]))
    assert outside.tolist() == [1, 1, 0]


def test_wrong_native_width_is_refused(cards_dir):
    card = load_card(cards_dir / "ale_pong.md")
    with pytest.raises(ValueError, match="last dimension 1"):
        card.mapping.to_unified(np.zeros((2, 3)))
