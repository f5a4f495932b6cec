"""Cards: the shipped ones validate; each malformed one is answered with one precise line and no files."""

import copy
import re
import sys

import numpy as np
import pytest
import yaml

from unified_action import cli
from unified_action.cards import load_card
from unified_action.errors import CardError
from unified_action.tokenization.kinds import require_valid_card

BASE = {
    "name": "toy_arm",
    "license": "mit",
    "embodiment": "toy_arm",
    "source": {"type": "numpy", "path": "episodes"},
    "control_frequency_hz": 10,
    "cameras": [{"name": "front", "key": "observation/image", "height": 64, "width": 64}],
    "action": [
        {"path": "action/delta", "dtype": "float32", "shape": [3], "kind": "continuous", "units": "m",
         "range": {"low": -0.05, "high": 0.05},
         "slots": ["right_arm.eef_pos_delta.x", "right_arm.eef_pos_delta.y", "right_arm.eef_pos_delta.z"]},
        {"path": "action/grip", "dtype": "float32", "shape": [1], "kind": "continuous", "units": "closedness",
         "range": {"low": -1, "high": 1}, "slots": ["right_arm.gripper"],
         "transform": {"type": "affine", "scale": -0.5, "offset": 0.5, "units": "fraction_open"}},
    ],
    "tokenizer": {"kind": "bin", "chunk_length": 4},
}


def write(tmp_path, header, name="toy_arm", body="A toy arm.\n"):
    path = tmp_path / f"{name}.md"
    path.write_text("---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n" + body)
    return path


def mutate(fn):
    h = copy.deepcopy(BASE)
    fn(h)
    return h


def _set(path, value):
    def fn(h):
        *parents, last = path
        node = h
        for p in parents:
            node = node[p]
        node[last] = value
    return fn


def _delete(path):
    def fn(h):
        *parents, last = path
        node = h
        for p in parents:
            node = node[p]
        del node[last]
    return fn


MALFORMED = [
    ("missing field", _delete(["license"]), r"toy_arm\.md: license: required field is missing"),
    ("missing nested field", _delete(["action", 0, "dtype"]), r"action\[0\]\.dtype: required field is missing"),
    ("wrong type", _set(["control_frequency_hz"], "fast"), r"control_frequency_hz: Input should be a valid number.*'fast'"),
    ("bad frequency", _set(["control_frequency_hz"], 0), r"control_frequency_hz: Input should be greater than 0"),
    ("unknown tokenizer kind", _set(["tokenizer", "kind"], "fsat"), r"tokenizer\.kind: unknown tokenizer kind 'fsat' \(did you mean 'fast'\?\); known: bin, discrete, fast"),
    ("parameters of another kind", _set(["tokenizer", "fast"], {"vocab_size": 512}), r"tokenizer\.fast: parameters of kind 'fast', but this card's kind is 'bin'"),
    ("unknown tokenizer key", _set(["tokenizer", "chunk_lenght"], 3), r"tokenizer\.chunk_lenght: unknown field \(did you mean 'chunk_length'\?\)"),
    ("unknown field", _set(["control_freq"], 10), r"control_freq: unknown field \(did you mean 'control_frequency_hz'\?\)"),
    ("unknown slot", _set(["action", 0, "slots", 2], "right_arm.eef_pos_delta.w"), r"action\[0\]\.slots\[2\]: unknown slot 'right_arm\.eef_pos_delta\.w' \(did you mean"),
    ("slot used twice", _set(["action", 1, "slots"], ["right_arm.eef_pos_delta.x"]), r"action\[1\]\.slots\[0\]: slot 'right_arm\.eef_pos_delta\.x' is already filled by action\[0\]\.slots\[0\]"),
    ("range min > max", _set(["action", 0, "range"], {"low": 0.1, "high": -0.1}), r"action\[0\]\.range: low 0\.1 > high -0\.1 in dimension 0"),
    ("range length", _set(["action", 0, "range"], {"low": [0, 0], "high": 1}), r"action\[0\]\.range\.low: 2 values listed for a field of 3 values"),
    ("slot count", _set(["action", 0, "shape"], [4]), r"action\[0\]\.slots: 3 slots listed for a field of 4 values"),
    ("units mismatch", _set(["action", 0, "units"], "cm"), r"action\[0\]\.units: 'cm' for slot 'right_arm\.eef_pos_delta\.x', which is in 'm'; convert with an affine"),
    ("kind mismatch", _set(["action", 1, "kind"], "binary"), r"action\[1\]\.kind: 'binary' but slot 'right_arm\.gripper' is continuous"),
    ("bad dtype", _set(["action", 0, "dtype"], "float8"), r"action\[0\]\.dtype: Input should be 'float16'"),
    ("bad name", _set(["name"], "Toy Arm"), r"name: String should match pattern"),
    ("zero affine scale", _set(["action", 1, "transform", "scale"], 0), r"action\[1\]\.transform\.scale: must be non-zero"),
    ("discrete kind with continuous slots", _set(["tokenizer", "kind"], "discrete"), r"tokenizer\.kind: 'discrete' takes only binary and categorical slots.*; use 'bin' or 'fast'"),
    ("chunk length", _set(["tokenizer", "chunk_length"], 0), r"tokenizer\.chunk_length: Input should be greater than 0"),
    ("duplicate camera", _set(["cameras"], [{"name": "a", "key": "x", "height": 1, "width": 1}] * 2), r"cameras: camera name 'a' is used twice"),
    ("crop leaves nothing", _set(["cameras"], [{"name": "a", "key": "x", "height": 8, "width": 8, "crop": {"top": 4, "bottom": 4}}]),
     r"cameras\[0\]: .*crop top\+bottom 8 >= height 8"),
    ("path twice", _set(["action", 1, "path"], "action/delta"), r"action\[1\]\.path: 'action/delta' is mapped twice"),
]


@pytest.mark.parametrize("case,fn,expected", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_card_gets_its_precise_error_and_writes_nothing(tmp_path, monkeypatch, capsys, case, fn, expected):
    """Through `uact tokenizer register`: exit 2, one line per problem naming the file and the field, and the
    registry left as it was (empty). The tokenizer section is checked by its kind (tokenization/kinds/)."""
    path = write(tmp_path, mutate(fn))
    with pytest.raises(CardError) as err:
        require_valid_card(load_card(path))
    assert any(re.search(expected, p) for p in err.value.problems), err.value.problems
    eps = tmp_path / "eps"
    eps.mkdir()
    np.save(eps / "e0.npy", np.zeros((8, 4)))
    registry = tmp_path / "reg"
    monkeypatch.setattr(sys, "argv", ["uact", "tokenizer", "register", str(path), "--data", str(eps), "--registry", str(registry)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: {p}" for p in err.value.problems]
    assert all(line.startswith(f"error: {path}: ") for line in lines)
    assert not registry.exists() or list(registry.iterdir()) == []


TEXT_CASES = [
    ("no header", "# just markdown\n", r"header: expected a YAML header opened by a '---' first line"),
    ("unclosed header", "---\nname: x\n", r"header: expected a closing '---' line"),
    ("bad yaml", "---\nname: [x\n---\n", r"header: invalid YAML at line"),
    ("not a mapping", "---\n- a\n- b\n---\n", r"header: expected a YAML mapping of fields, got list"),
]


@pytest.mark.parametrize("case,text,expected", TEXT_CASES, ids=[t[0] for t in TEXT_CASES])
def test_malformed_card_text(tmp_path, case, text, expected):
    path = tmp_path / "toy_arm.md"
    path.write_text(text)
    with pytest.raises(CardError, match=expected):
        load_card(path)


def test_table_errors(tmp_path):
    h = copy.deepcopy(BASE)
    h["action"] = [{"path": "action", "dtype": "int64", "shape": [], "kind": "categorical", "units": "index",
                    "slots": ["gamepad.a", "vehicle.lane_change"],
                    "transform": {"type": "table", "rows": [[0, 0], [2, 1], [1, 5], [0, 0]]}}]
    h["tokenizer"]["kind"] = "discrete"
    with pytest.raises(CardError) as err:
        load_card(write(tmp_path, h))
    text = "\n".join(err.value.problems)
    assert "transform.rows[1]: 2 for binary slot 'gamepad.a'; expected 0 or 1" in text
    assert "transform.rows[2]: 5 for slot 'vehicle.lane_change'; expected a class in 0..2" in text


def test_name_must_match_file(tmp_path):
    with pytest.raises(CardError, match=r"name: 'toy_arm' must equal the file name 'other'"):
        load_card(write(tmp_path, BASE, name="other"))


def test_every_shipped_card_validates(cards_dir):
    names = sorted(p.stem for p in cards_dir.glob("*.md"))
    assert len(names) >= 9
    for name in names:
        card = load_card(cards_dir / f"{name}.md")
        assert card.mapping.dim >= 1 and card.body.strip()


GYM = {"type": "gymnasium", "env_id": "CarRacing-v3"}


@pytest.mark.parametrize(("source", "chunk", "expected"), [
    ({**GYM, "frame_every": 2}, 4, None),
    ({**GYM, "frame_every": 4}, 4, None),
    ({**GYM, "frame_every": 3}, 4, r"source.frame_every: 3 must divide tokenizer.chunk_length 4 \(clips show a frame "
                                   r"every 4 steps, and one is stored only every 3 steps\)$"),
    ({**GYM, "frame_every": 0}, 4, r"source.frame_every: .*greater than or equal to 1"),
    ({**GYM, "frame_every": 65}, 65, r"source.frame_every: .*less than or equal to 64"),
    ({"type": "numpy", "path": "episodes", "frame_every": 2}, 4, r"source.frame_every: unknown field"),  # simulators only
])
def test_a_simulator_card_may_store_a_frame_every_k_steps_if_k_divides_the_chunk(tmp_path, source, chunk, expected):
    """k = source.frame_every must divide the frame stride (tokenizer.chunk_length): the loader's frames are one
    chunk apart from starts that are multiples of k, so each must be a stored frame."""
    header = copy.deepcopy(BASE) | {"source": source}
    header["tokenizer"]["chunk_length"] = chunk
    if expected is None:
        assert load_card(write(tmp_path, header)).header.frame_every == source["frame_every"]
        return
    with pytest.raises(CardError) as e:
        load_card(write(tmp_path, header))
    assert len(e.value.problems) == 1 and re.search(expected, e.value.problems[0]), e.value.problems
    assert load_card(write(tmp_path, BASE)).header.frame_every == 1  # a source without the key: every step
