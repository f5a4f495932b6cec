"""A job is checked whole before any side effect: each refused job leaves the file tree byte-identical (hashed
before and after): the run directory, its datasets and the registry. Real datasets, registry and export."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
from support import tree_digest

from training.conftest import job
from training.test_finetune import ft_job, pretrained  # noqa: F401  (the module's pretrained export fixture)
from unified_action.errors import ConfigError, DataError, TrainingError
from unified_action.training.config import TrainConfig

pytestmark = pytest.mark.slow


@pytest.fixture()
def world(mixture, tmp_path):
    """A copy of the mixture (datasets and registry) and a run directory holding a run's files."""
    data = tmp_path / "data"
    shutil.copytree(mixture["root"], data)
    mix = {"root": data, "datasets": [str(data / Path(p).name) for p in mixture["datasets"]],
           "registry": str(data / "tokenizers")}
    run = tmp_path / "run"
    (run / "checkpoints" / "step_00000003").mkdir(parents=True)
    (run / "checkpoints" / "step_00000003" / "COMPLETE.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    return mix, run


def _refused(tmp_path, cfg: dict, error, pattern: str, **kw) -> None:
    from unified_action.training.trainer import pretrain

    before = tree_digest(tmp_path)
    with pytest.raises(error, match=pattern) as e:
        pretrain(TrainConfig.model_validate(cfg), overwrite=True, **kw)
    assert "\n" not in str(e.value)
    assert tree_digest(tmp_path) == before


def test_overwrite_with_an_unknown_model_size_deletes_nothing(world, tmp_path):
    mix, run = world
    cfg = job(mix, run)
    cfg["model"]["size"] = "tinyy"
    _refused(tmp_path, cfg, ConfigError, r"model: size: unknown size 'tinyy'")


def test_overwrite_with_clips_longer_than_the_episodes_deletes_nothing(world, tmp_path):
    mix, run = world
    cfg = job(mix, run)
    cfg["data"]["future_frames"] = 500
    _refused(tmp_path, cfg, DataError, r"fewer than the 1 streams")


def test_overwrite_of_a_directory_holding_the_datasets_is_refused(world, tmp_path):
    mix, _ = world
    _refused(tmp_path, job(mix, mix["root"]), ConfigError, r"out: .* holds .*(carracing|ale_pong|tokenizers)")


def test_overwrite_of_a_directory_that_is_not_a_run_is_refused(world, tmp_path):
    mix, run = world
    (run / "notes.txt").write_text("mine")
    _refused(tmp_path, job(mix, run), ConfigError, r"out: .* holds 'notes.txt', which no run writes")


def test_overwrite_of_a_real_run_directory_still_works(world, tmp_path):
    from unified_action.training.preflight import check_job

    mix, run = world
    check_job(TrainConfig.model_validate(job(mix, run)), "job", overwrite=True, init_from=None, world_size=1)


def _ft(pretrained, tmp_path, **data):  # noqa: F811
    cfg = ft_job(pretrained, tmp_path)
    cfg["data"].update(data)
    return cfg


def test_finetune_whose_model_differs_from_the_export_registers_nothing(pretrained, tmp_path):  # noqa: F811
    from unified_action.training.finetune import finetune_trainer

    cfg = _ft(pretrained, tmp_path, future_frames=3)
    before = tree_digest(tmp_path)
    with pytest.raises(TrainingError, match=r"model config differs from this job's in max_frames"):
        finetune_trainer(TrainConfig.model_validate(cfg), overwrite=True)
    assert tree_digest(tmp_path) == before


def test_a_tokenizer_fitted_from_other_episodes_than_the_job_s_is_refused(pretrained, tmp_path):  # noqa: F811
    from unified_action.training.finetune import finetune_trainer, prepare, register_new
    from unified_action.training.preflight import check_job

    cfg2 = TrainConfig.model_validate(_ft(pretrained, tmp_path))  # K=2
    prepared, _, new = prepare(cfg2)
    assert register_new(prepared, log=lambda _: None) == ["gym_pusht"]
    check_job(prepared, "ft", overwrite=False, init_from=cfg2.finetune.init_from, world_size=1)  # the same K: fine

    raw = copy.deepcopy(_ft(pretrained, tmp_path))
    raw["finetune"]["episodes"] = 3
    before = tree_digest(tmp_path)
    with pytest.raises(ConfigError, match=r"tokenizer 'gym_pusht' was fitted from episodes \[0, 2\) .* trains on episodes \[0, 3\)"):
        finetune_trainer(TrainConfig.model_validate(raw))
    assert tree_digest(tmp_path) == before
