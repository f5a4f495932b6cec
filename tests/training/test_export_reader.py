"""The export reader trusts nothing it can check: config.json must equal the copy inside model.safetensors (so an
edited tokenizer hash can't pass), and the sizes it asks for are bounded before any model is built."""

from __future__ import annotations

import json
import re
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


@pytest.fixture()
def real_export(registry, tmp_path):
    """An export of a real (tiny, one-block) model's weights, tokenizers as registered."""
    from unified_action.models.spec import model_spec

    cfg = model_config("tiny", depth=1)
    meta = export_meta(cfg.to_dict(), registry, ["carracing"], {})
    return write_export(model_spec().build(cfg).state_dict(), meta, tmp_path / "export", {"step": 1})


def _first_float(state: dict) -> str:
    return next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 2)


TAMPERED = {  # the weights file rewritten as a hostile user would, config and metadata kept
    "missing_key": (lambda s, k: s.pop(k), r"model.safetensors: {k}: missing \(the model has \d+ tensors, the file \d+\)"),
    "extra_key": (lambda s, k: s.update({"extra.weight": torch.zeros(3)}), r"model.safetensors: extra.weight: not a tensor of the model"),
    "wrong_shape": (lambda s, k: s.update({k: s[k][:, :1].contiguous()}), r"model.safetensors: {k}: shape \[\d+, 1\], expected \[\d+, \d+\]"),
    "nan": (lambda s, k: s[k].view(-1).__setitem__(0, float("nan")), r"model.safetensors: {k}: holds NaN or infinite values"),
    "int64": (lambda s, k: s.update({k: s[k].to(torch.int64)}), r"model.safetensors: {k}: dtype int64, expected float32"),
}


@pytest.mark.parametrize("kind", TAMPERED)
def test_tampered_weights_are_one_line_naming_the_tensor(real_export, registry, kind):
    from safetensors import safe_open

    from unified_action.training.trainer import init_weights_from

    model, _ = load_pretrained(real_export, registry)  # as written, it loads
    with safe_open(str(real_export / WEIGHTS), framework="pt") as f:
        metadata = f.metadata()
    state = load_file(str(real_export / WEIGHTS))
    key = _first_float(state)
    change, match = TAMPERED[kind]
    change(state, key)
    save_file(state, str(real_export / WEIGHTS), metadata=metadata)
    for load in (lambda: load_pretrained(real_export, registry), lambda: init_weights_from(model, real_export, registry, ["carracing"])):
        with pytest.raises(TrainingError, match=match.format(k=re.escape(key))) as e:
            load()
        assert "\n" not in str(e.value)
