"""Cards written by a careless or hostile user: refused at validation in one line, with bounded work, never a
traceback; nothing a card names is imported."""

from __future__ import annotations

import copy
import re
import sys
import time

import pytest
import yaml
from cards.test_card import BASE, write
from support import CARDS, run_cli

from unified_action.cards import load_card, parse_card
from unified_action.errors import CardError

CARRACING = (CARDS / "carracing.md").read_text()
BOMB = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
                 + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)])


def _card_text(header_yaml: str, body: str = "A toy arm.\n") -> str:
    return "---\n" + header_yaml + "---\n" + body


def _refused(text: str, pattern: str, seconds: float = 2.0) -> str:
    t0 = time.perf_counter()
    with pytest.raises(CardError) as e:
        parse_card(text, "toy_arm.md")
    assert time.perf_counter() - t0 < seconds
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 600, msg
    assert re.search(pattern, msg), msg
    return msg


@pytest.mark.parametrize("env_id", ["this:CarRacing-v3", "os:system", "evil_pkg/CarRacing-v3", "../x"])
def test_env_id_with_a_module_or_off_the_allow_list_is_refused(env_id):
    _refused(CARRACING.replace("env_id: CarRacing-v3", f"env_id: '{env_id}'"), r"source\.env_id: .*(module|allow-list)")


def test_record_does_not_import_a_module_named_by_the_card(tmp_path, monkeypatch, capsys):
    sys.modules.pop("this", None)
    card = tmp_path / "carracing.md"
    card.write_text(CARRACING.replace("env_id: CarRacing-v3", "env_id: 'this:CarRacing-v3'"))
    code, _, err = run_cli(monkeypatch, capsys, "data", "record", card, "-o", tmp_path / "out", "-n", "1", "--steps", "2")
    assert code == 2 and "source.env_id" in err and "Traceback" not in err
    assert "this" not in sys.modules and not (tmp_path / "out").exists()


def test_shipped_env_ids_are_allowed():
    for p in CARDS.glob("*.md"):
        load_card(p)


@pytest.mark.parametrize("where", ["tags", "env_kwargs"])
def test_alias_bomb_is_refused_quickly(where):
    if where == "tags":
        text = CARRACING.replace("tags: [gymnasium,", "tags: [*a8, gymnasium,").replace("---\nname:", "---\n" + BOMB + "\nname:", 1)
    else:
        text = CARRACING.replace("env_kwargs: {continuous: true}", "env_kwargs: {continuous: true, x: *a8}").replace(
            "---\nname:", "---\n" + BOMB + "\nname:", 1)
    _refused(text, r"header: expands to more than \d+ values")


def test_duplicate_keys_are_refused():
    text = CARRACING.replace("    slots: [vehicle.steer, vehicle.throttle, vehicle.brake]",
                             "    slots: [vehicle.steer, vehicle.throttle, vehicle.brake]\n"
                             "    slots: [vehicle.steer, vehicle.brake, vehicle.throttle]")
    _refused(text, r"header: key 'slots' is given twice in one mapping \(lines \d+ and \d+\)")


def test_deep_nesting_is_refused():
    _refused(_card_text("tags: " + "[" * 20000 + "]" * 20000 + "\n"), r"header: (nested deeper than \d+ levels|invalid YAML.*nesting depth)")


def _header(fn) -> str:
    h = copy.deepcopy(BASE)
    fn(h)
    return _card_text(yaml.safe_dump(h, sort_keys=False))


@pytest.mark.parametrize("shape", [[100000, 100000], [1e20], [4096, 2]])
def test_huge_shapes_are_refused(shape):
    def fn(h):
        h["action"][0]["shape"] = shape
    _refused(_header(fn), r"action\[0\]\.shape")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_affine_scale_is_refused(value):
    def fn(h):
        h["action"][1]["transform"]["scale"] = value
    _refused(_header(fn), r"action\[1\]\.transform\.scale: .*finite")


def _table(rows):
    def fn(h):
        h["action"] = [{"path": "action", "dtype": "int64", "shape": [], "kind": "categorical", "units": "index",
                        "slots": ["gamepad.a", "vehicle.lane_change"], "transform": {"type": "table", "rows": rows}}]
        h["tokenizer"]["kind"] = "discrete"
    return _header(fn)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_table_value_is_refused(value):
    _refused(_table([[0, 0], [1, value]]), r"action\[0\]\.transform\.rows\[1\]\[1\]: .*finite")


def test_table_rows_are_bounded_and_checked_in_linear_time():
    _refused(_table([[0, i % 3] for i in range(40_000)]), r"transform\.rows: .*at most 4096", seconds=10)  # was 36 s
    _refused(_table([[0, 0]] * 4000), r"transform\.rows\[1\]: repeats an earlier row")


def test_a_long_tags_list_is_refused(tmp_path):
    def fn(h):
        h["tags"] = ["t"] * 10_000
    _refused(_header(fn), r"tags: .*at most 256")
    assert load_card(write(tmp_path, BASE)).name == "toy_arm"


def _parts(parts, shape=(4096,)):
    def fn(h):
        h["action"] = [{"path": "action", "dtype": "float32", "shape": list(shape), "kind": "continuous", "parts": parts}]
    return _header(fn)


def test_many_overlapping_parts_are_refused_quickly():
    """256 parts (the most a field may have) over the largest field, each claiming every value: one line per
    problem, the first naming the card, the field and the part, in bounded time."""
    every = {"dims": [0, 4096], "slots": ["right_arm.gripper"], "units": "fraction_open"}
    msg = _refused(_parts([every] * 256), r"toy_arm\.md: action\[0\]\.parts\[\d+\]\.dims: \[0, 4096\) overlaps parts\[\d+\]")
    assert re.search(r"\(and \d+ more\)$", msg)
    _refused(_parts([every] * 257), r"action\[0\]\.parts: List should have at most 256 items")


@pytest.mark.parametrize("dims", [[0, 10**12], [2**70, 3], [0.5, 3], ["0", "3"], [0, 1, 2]])
def test_absurd_part_dims_are_refused(dims):
    _refused(_parts([{"dims": dims, "slots": ["right_arm.gripper"], "units": "fraction_open"}], shape=(3,)),
             r"action\[0\]\.parts\[0\]\.dims")
