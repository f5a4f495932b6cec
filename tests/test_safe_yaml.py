"""YAML from users (cards, job configs, --set values): bounded work, duplicate keys refused, one line each."""

from __future__ import annotations

import time

import pytest
import yaml

from unified_action.errors import ConfigError
from unified_action.safe_yaml import YamlProblem, safe_load
from unified_action.training.config import load_config

BOMB = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
                 + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)])


def test_plain_yaml_loads_like_safe_load():
    text = "a: [1, 2.5, x]\nb: {c: null, d: true}\nanchor: &k [1]\nref: *k\n"
    assert safe_load(text) == yaml.safe_load(text)


@pytest.mark.parametrize("text,pattern", [
    (BOMB, r"expands to more than"),
    ("x: " + "[" * 5000 + "]" * 5000, r"nested deeper|nesting depth"),
    ("a: 1\nb: 2\na: 3\n", r"key 'a' is given twice in one mapping \(lines 1 and 3\)"),
    ("a: [1\n", r"invalid YAML at line"),
])
def test_refused_in_one_line_quickly(text, pattern):
    t0 = time.perf_counter()
    with pytest.raises(YamlProblem, match=pattern) as e:
        safe_load(text)
    assert time.perf_counter() - t0 < 2 and "\n" not in str(e.value)


def test_job_config_with_a_duplicate_key_or_a_bomb_is_refused(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text("name: x\nout: runs/x\nout: /\ntrain: {steps: 1}\ndata: {datasets: [{path: d}]}\n")
    with pytest.raises(ConfigError, match=r"job.yaml: key 'out' is given twice"):
        load_config(str(p))
    p.write_text(BOMB + "\nname: x\n")
    with pytest.raises(ConfigError, match=r"job.yaml: expands to more than"):
        load_config(str(p))
    p.write_text("name: x\nout: runs/x\ntrain: {steps: 1}\ndata: {datasets: [{path: d}]}\n")
    with pytest.raises(ConfigError, match=r"--set model.overrides: key 'a' is given twice"):
        load_config(str(p), ["model.overrides={a: 1, a: 2}"])
