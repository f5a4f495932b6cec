"""The export reader trusts nothing it can check: config.json must equal the copy inside model.safetensors (so an
edited tokenizer hash can't pass), and the sizes it asks for are bounded before any model is built."""

from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from unified_action.errors import TrainingError
from unified_action.models import model_config
from unified_action.training.export import CONFIG, WEIGHTS, check_tokenizers, export_meta, load_pretrained, write_export


@pytest.fixture()
def export(registry, tmp_path):
    meta = export_meta(model_config("tiny", depth=1).to_dict(), registry, ["carracing"], {})
    meta["tokenizers"]["carracing"] = "f" * 64  # trained with another version of the tokenizer
    return write_export({"w": torch.zeros(2)}, meta, tmp_path / "export", {"step": 1})


def _edit_config(export, **model):
    config = json.loads((export / CONFIG).read_text())
    config["model"].update(model)
    (export / CONFIG).write_text(json.dumps(config))
    return config


def test_an_edited_tokenizer_hash_in_config_json_is_refused(export, registry):
    config = json.loads((export / CONFIG).read_text())
    with pytest.raises(TrainingError, match="has hash"):
        check_tokenizers(config, registry, str(export))
    config["tokenizers"]["carracing"] = registry.content_hash("carracing")  # edited to pass
    (export / CONFIG).write_text(json.dumps(config))
    with pytest.raises(TrainingError, match=r"config.json: differs from the copy inside model.safetensors \(in tokenizers\)"):
        check_tokenizers(config, registry, str(export))


@pytest.mark.parametrize("field,value", [("width", 200000), ("vocab_size", 10**10), ("max_action_tokens", 1e10)])
def test_huge_sizes_are_refused_before_any_model_is_built(export, field, value):
    config = _edit_config(export, **{field: value})
    with pytest.raises(TrainingError, match="differs from the copy inside"):
        load_pretrained(export, check=False)
    # both copies edited consistently: the bounds still hold
    state = load_file(str(export / WEIGHTS))
    save_file(state, str(export / WEIGHTS), metadata={"format": "pt", "unified_action_config": json.dumps(config)})
    t0 = time.perf_counter()
    with pytest.raises(TrainingError, match=rf"config.json: model.{field}: .*expected an integer in 0\.\.\d+") as e:
        load_pretrained(export, check=False)
    assert time.perf_counter() - t0 < 2 and "\n" not in str(e.value)


def test_garbage_weights_file_is_one_line(export):
    (export / WEIGHTS).write_bytes(b"\xff" * 100)
    with pytest.raises(TrainingError, match="model.safetensors: not a readable safetensors file"):
        load_pretrained(export, check=False)
