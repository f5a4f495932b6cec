"""Job configs: named configs, did-you-mean, overrides, the DeepSpeed JSON filled and checked."""

from __future__ import annotations

import json

import pytest
import yaml
from support import ROOT

from unified_action.errors import ConfigError
from unified_action.training.config import deepspeed_config, load_config, resolve_config_path
from unified_action.training.trainer import lr_lambda

CONFIGS = ROOT / "pretrain/configs"


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_loads(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_config(name)
    assert cfg.name == name and cfg.model.size == name
    ds = deepspeed_config(cfg, world_size=8, bf16=True)
    assert ds["train_batch_size"] == cfg.train.micro_batch * cfg.train.grad_accum * 8
    assert ds["bf16"] == {"enabled": True}


def test_shipped_deepspeed_configs_cover_every_zero_stage_and_offload():
    stages = {}
    for p in (ROOT / "pretrain/ds").glob("*.json"):
        z = json.loads(p.read_text())["zero_optimization"]
        stages[p.stem] = (z["stage"], "offload_optimizer" in z)
    assert set(stages.values()) >= {(1, False), (2, False), (3, False), (2, True), (3, True)}
    assert (ROOT / "pretrain/hostfile.example").is_file() and (ROOT / "pretrain/launch_multinode.sh").is_file()


def test_unknown_config_name_gets_did_you_mean(monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError, match=r"config 'tiyn'.*did you mean 'tiny'"):
        resolve_config_path("tiyn")


def _job(tmp_path, **changes):
    cfg = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    for k, v in changes.items():
        section, key = k.split("__")
        cfg[section][key] = v
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_unknown_key_is_refused_with_file_field_and_suggestion(tmp_path):
    p = _job(tmp_path, train__stesp=10)
    with pytest.raises(ConfigError, match=r"job.yaml: train.stesp: unknown field \(did you mean 'steps'\?\)"):
        load_config(str(p))


def test_bad_value_names_file_and_field(tmp_path):
    p = _job(tmp_path, train__micro_batch=0)
    with pytest.raises(ConfigError, match=r"job.yaml: train.micro_batch: .*greater than or equal to 1"):
        load_config(str(p))


def test_set_overrides_any_field(tmp_path):
    p = _job(tmp_path)
    cfg = load_config(str(p), ["train.steps=7", "optim.lr=0.5", "data.image_size=[32, 32]"])
    assert (cfg.train.steps, cfg.optim.lr, cfg.data.image_size) == (7, 0.5, (32, 32))
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(str(p), ["train.steps"])


def test_deepspeed_json_may_not_contradict_the_job(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    ds = json.loads((ROOT / "pretrain/ds/zero2.json").read_text())
    ds["train_micro_batch_size_per_gpu"] = 99
    (tmp_path / "z.json").write_text(json.dumps(ds))
    cfg = load_config("tiny", [f"train.deepspeed={tmp_path / 'z.json'}"])
    with pytest.raises(ConfigError, match=r"z.json: train_micro_batch_size_per_gpu: 99, but the job config makes it 8"):
        deepspeed_config(cfg, 1, False)
    ds = {"zero_optimization": {"stage": 0}}
    (tmp_path / "z.json").write_text(json.dumps(ds))
    with pytest.raises(ConfigError, match=r"zero_optimization.stage: 0, expected 1, 2 or 3"):
        deepspeed_config(cfg, 1, False)
    cfg = load_config("tiny", ["train.deepspeed=pretrain/ds/zero_2.json"])
    with pytest.raises(ConfigError, match=r"no such file \(did you mean 'zero2.json'"):
        deepspeed_config(cfg, 1, False)


def test_lr_warms_up_then_decays_to_the_floor():
    lrs = [lr_lambda(s, warmup=10, total=100, min_ratio=0.1) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[100] == pytest.approx(0.1)
