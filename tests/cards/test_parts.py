"""Action fields split into parts: one flat native vector, several runs with their own slots, units, kind and
transform. Round trips native -> unified -> native, the Bridge card, and every malformed part refused in one line."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
from cards.test_card import BASE, write
from scipy.spatial.transform import Rotation
from support import CARDS, run_cli

from unified_action.cards import load_card
from unified_action.data.convert import dataset_section
from unified_action.data.stats import native_labels
from unified_action.errors import CardError
from unified_action.tokenization import Registry

POS = ["right_arm.eef_pos_delta.x", "right_arm.eef_pos_delta.y", "right_arm.eef_pos_delta.z"]
ROT = ["right_arm.eef_rot_delta.x", "right_arm.eef_rot_delta.y", "right_arm.eef_rot_delta.z"]

# xyz delta (m), rpy delta (rad), gripper closedness (-1 open .. +1 closed), terminate flag: one float32[8]
PARTS_FIELD = {
    "path": "action", "dtype": "float32", "shape": [8], "kind": "continuous",
    "parts": [
        {"dims": [0, 3], "slots": POS, "units": "m", "range": {"low": -0.05, "high": 0.05}},
        {"dims": [3, 6], "slots": ROT, "units": "rad", "transform": {"type": "rpy_to_rotvec"}},
        {"dims": [6, 7], "slots": ["right_arm.gripper"], "units": "closedness", "range": {"low": -1, "high": 1},
         "transform": {"type": "affine", "scale": -0.5, "offset": 0.5, "units": "fraction_open"}},
        {"dims": [7, 8], "slots": ["episode.terminate"], "units": "flag", "kind": "binary"},
    ],
}


def parts_header(fn=None) -> dict:
    h = copy.deepcopy(BASE)
    h["action"] = [copy.deepcopy(PARTS_FIELD)]
    if fn is not None:
        fn(h["action"][0])
    return h


def native_actions(n: int, rng) -> np.ndarray:
    """Valid native actions: rpy inside the canonical ranges (roll, yaw in (-pi, pi), pitch in (-pi/2, pi/2)),
    where rpy -> rotation vector -> rpy gives the same three angles back."""
    return np.concatenate([
        rng.uniform(-0.05, 0.05, (n, 3)),
        rng.uniform(-3.0, 3.0, (n, 1)), rng.uniform(-1.5, 1.5, (n, 1)), rng.uniform(-3.0, 3.0, (n, 1)),
        rng.uniform(-1, 1, (n, 1)),
        rng.integers(0, 2, (n, 1)).astype(float),
    ], axis=1)


def test_parts_round_trip_native_unified_native(tmp_path):
    card = load_card(write(tmp_path, parts_header()))
    m = card.mapping
    assert m.native_dim == 8 and m.dim == 8
    assert [(f.native_start, f.native_size, f.transform, f.part) for f in m.fields] == [
        (0, 3, "identity", 0), (3, 3, "rpy_to_rotvec", 1), (6, 1, "affine", 2), (7, 1, "identity", 3)]
    native = native_actions(256, np.random.default_rng(0))
    unified, outside = m.to_unified(native)
    assert not outside.any()
    col = {name: i for i, name in enumerate(m.slot_names)}
    np.testing.assert_allclose(unified[:, [col[s] for s in POS]], native[:, :3])
    np.testing.assert_allclose(unified[:, [col[s] for s in ROT]], Rotation.from_euler("xyz", native[:, 3:6]).as_rotvec())
    np.testing.assert_allclose(unified[:, col["right_arm.gripper"]], 0.5 - 0.5 * native[:, 6])
    np.testing.assert_array_equal(unified[:, col["episode.terminate"]], native[:, 7])
    np.testing.assert_allclose(m.to_native(unified), native, atol=1e-9)  # the rpy inverse included
    # the per-part ranges land on their own dims; the rpy part declared none
    np.testing.assert_array_equal(m.native_low[[0, 1, 2, 6]], [-0.05, -0.05, -0.05, -1])
    assert np.isnan(m.native_low[[3, 4, 5, 7]]).all()


def test_rpy_part_converts_single_axis_rotations_exactly(tmp_path):
    """A rotation about one axis is the same angle in rpy and as a rotation vector; two axes at once are not."""
    m = load_card(write(tmp_path, parts_header())).mapping
    rot = [m.slot_names.index(s) for s in ROT]
    native = np.zeros((4, 8))
    native[0, 3], native[1, 4], native[2, 5] = 0.3, -0.2, 1.0
    native[3, 3:6] = [0.5, 0.5, 0.0]
    u = m.to_unified(native)[0][:, rot]
    np.testing.assert_allclose(u[:3], [[0.3, 0, 0], [0, -0.2, 0], [0, 0, 1.0]], atol=1e-12)
    assert not np.allclose(u[3], [0.5, 0.5, 0.0], atol=1e-3)  # what the unconverted Bridge card used to store


def test_parts_tokenizer_registers_and_decodes_native_actions(tmp_path):
    """Through the registry: card.md with parts is stored, parsed back on load, and native actions come back."""
    h = parts_header()
    path = write(tmp_path, h)
    rng = np.random.default_rng(1)
    episodes = [native_actions(40, rng) for _ in range(6)]
    reg = Registry(tmp_path / "reg")
    reg.register(load_card(path), episodes)
    tok = reg.load("toy_arm")
    x = np.stack([episodes[-1][:4], episodes[-1][4:8]])
    dec = tok.decode_native(tok.encode_native(x).tokens)
    assert dec.valid.all()
    np.testing.assert_array_equal(dec.actions[..., 7], x[..., 7])  # the binary part is exact
    assert np.abs(dec.actions[..., :3] - x[..., :3]).max() < 0.01  # 256 bins over q01..q99 of +-5 cm


def test_bridge_card_converts_rpy_to_a_rotation_vector():
    card = load_card(CARDS / "bridge_dataset.md")
    assert [(f.native_start, f.native_size, f.transform) for f in card.mapping.fields] == [
        (0, 3, "identity"), (3, 3, "rpy_to_rotvec"), (6, 1, "identity")]
    native = np.array([[0.01, -0.02, 0.005, 0.1, -0.15, 0.2, 0.8]])
    unified, _ = card.mapping.to_unified(native)
    col = {name: i for i, name in enumerate(card.mapping.slot_names)}
    np.testing.assert_allclose(unified[0, [col[s] for s in ROT]], Rotation.from_euler("xyz", [0.1, -0.15, 0.2]).as_rotvec())
    assert unified[0, col["right_arm.gripper"]] == 0.8
    np.testing.assert_allclose(card.mapping.to_native(unified), native, atol=1e-12)


def test_native_statistics_table_names_each_parts_slots():
    """What `uact data convert` writes into a dataset's card: one row per native dim with its part's slots."""
    card = load_card(CARDS / "bridge_dataset.md")
    assert native_labels(card) == [f"action[{i}]" for i in range(7)]
    stats = {"native": {k: [0.0] * 7 for k in ("mean", "std", "min", "max", "q01", "q99")}}
    plan = {"episodes": 1, "settings": {"image_format": "png", "image_size": None}}
    text = dataset_section(card, [{"lengths": [5], "bytes": 100}], stats, plan)
    assert "| `action[0]` | right_arm.eef_pos_delta.x | identity |" in text
    assert f"| `action[4]` | {', '.join(ROT)} | rpy_to_rotvec |" in text
    assert "| `action[6]` | right_arm.gripper | identity |" in text


def _dims(*spans):
    def fn(f):
        for p, span in zip(f["parts"], spans):
            p["dims"] = list(span)
    return fn


def _part(j, key, value):
    def fn(f):
        f["parts"][j][key] = value
    return fn


def _drop_part(j):
    def fn(f):
        del f["parts"][j]
    return fn


def _flat_too(f):
    f["slots"] = POS


def _neither(f):
    del f["parts"]


def _rpy_on_two(f):
    f["shape"] = [7]
    f["parts"][1] = {"dims": [3, 5], "slots": ROT[:2], "units": "rad", "transform": {"type": "rpy_to_rotvec"}}
    f["parts"][2]["dims"], f["parts"][3]["dims"] = [5, 6], [6, 7]


def _gap(f):
    f["shape"] = [9]
    f["parts"][3]["dims"] = [8, 9]


def _table_on_two(f):
    f["shape"] = [9]
    f["parts"][3] = {"dims": [7, 9], "slots": ["gamepad.a"], "units": "index", "kind": "categorical",
                     "transform": {"type": "table", "rows": [[0], [1]]}}


OF = r"of 'action' \(shape \[8\], 8 values\)"
BAD_PARTS = [
    ("overlap", _dims((0, 3), (2, 6), (6, 7), (7, 8)), rf"action\[0\]\.parts\[1\]\.dims: \[2, 6\) overlaps parts\[0\] \[0, 3\) {OF}; expected every value in exactly one part"),
    ("gap", _gap, r"action\[0\]\.parts: values \[7, 8\) of 'action' \(shape \[9\], 9 values\) are in no part; expected the parts to cover all 9 values"),
    ("gap at the end", _drop_part(3), rf"action\[0\]\.parts: values \[7, 8\) {OF} are in no part"),
    ("past the shape", _part(3, "dims", [7, 9]), rf"action\[0\]\.parts\[3\]\.dims: \[7, 9\) goes past the values {OF}; expected stop <= 8"),
    ("empty dims", _part(3, "dims", [7, 7]), rf"action\[0\]\.parts\[3\]\.dims: \[7, 7\) {OF} is empty; expected start < stop"),
    ("reversed dims", _part(3, "dims", [8, 7]), r"action\[0\]\.parts\[3\]\.dims: \[8, 7\) .* is empty; expected start < stop"),
    ("no parts", _part(0, "dims", [0]), r"action\[0\]\.parts\[0\]\.dims: List should have at least 2 items"),
    ("negative dim", _part(0, "dims", [-1, 3]), r"action\[0\]\.parts\[0\]\.dims\[0\]: Input should be greater than or equal to 0"),
    ("slot count", _part(0, "slots", POS[:2]), r"action\[0\]\.parts\[0\]\.slots: 2 slots listed for dims \[0, 3\) of 'action' \(3 values\)"),
    ("units per dim", _part(0, "units", ["m", "m"]), r"action\[0\]\.parts\[0\]\.units: 2 values listed for dims \[0, 3\) of 'action' \(3 values\)"),
    ("rpy on two dims", _rpy_on_two, r"action\[0\]\.parts\[1\]\.transform: rpy_to_rotvec maps 3 angles onto an arm's eef_rot_delta\.\{x,y,z\} slots, in that order, got dims \[3, 5\)"),
    ("rpy slots out of order", _part(1, "slots", [ROT[1], ROT[0], ROT[2]]), r"action\[0\]\.parts\[1\]\.transform: rpy_to_rotvec maps 3 angles .* in that order"),
    ("table index on two dims", _table_on_two, r"action\[0\]\.parts\[3\]\.dims: a table with input 'index' reads one integer, got dims \[7, 9\) of 'action' \(2 values\)"),
    ("part kind", _part(2, "kind", "binary"), r"action\[0\]\.parts\[2\]\.kind: 'binary' but slot 'right_arm\.gripper' is continuous"),
    ("slot in two parts", _part(3, "slots", [POS[0]]), r"action\[0\]\.parts\[3\]\.slots\[0\]: slot 'right_arm\.eef_pos_delta\.x' is already filled by action\[0\]\.parts\[0\]\.slots\[0\]"),
    ("unknown part key", _part(0, "dim", [0, 3]), r"action\[0\]\.parts\[0\]\.dim: unknown field \(did you mean 'dims'\?\)"),
    ("parts and flat form", _flat_too, r"action\[0\]\.parts: the field also gives slots; a field maps either as a whole \(units, slots, transform, range\) or in parts"),
    ("neither form", _neither, r"action\[0\]\.slots: required field is missing \(or split the field into parts\)"),
]


@pytest.mark.parametrize("case,fn,expected", BAD_PARTS, ids=[b[0] for b in BAD_PARTS])
def test_malformed_parts_get_one_precise_line(tmp_path, case, fn, expected):
    path = write(tmp_path, parts_header(fn))
    with pytest.raises(CardError) as err:
        load_card(path)
    assert all("\n" not in p and p.startswith(f"{path}: ") for p in err.value.problems)
    assert any(re.search(expected, p) for p in err.value.problems), err.value.problems


def test_empty_parts_list_is_refused(tmp_path):
    path = write(tmp_path, parts_header(lambda f: f.update(parts=[])))
    with pytest.raises(CardError, match=r"action\[0\]\.parts: List should have at least 1 item"):
        load_card(path)


def test_card_validate_reports_bad_parts_and_exits_2(tmp_path, monkeypatch, capsys):
    good = write(tmp_path, parts_header(), name="toy_arm")
    (tmp_path / "bad").mkdir()
    bad = write(tmp_path / "bad", parts_header(_dims((0, 3), (2, 6), (6, 7), (7, 8))), name="toy_arm")
    code, out, err = run_cli(monkeypatch, capsys, "card", "validate", good, bad)
    assert code == 2 and f"ok    {good}" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: action[0].parts[1].dims: [2, 6) overlaps"), lines
