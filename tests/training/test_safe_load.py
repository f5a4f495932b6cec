"""Nothing read from a checkpoint runs code: resume and export load DeepSpeed's files weights-only, refusing a
pickled payload with one line naming the file; a complete checkpoint that cannot be used is skipped for the
previous one, saying so. Real DeepSpeed engines and checkpoints, in this process."""

from __future__ import annotations

import shutil

import pytest
import torch

from training.conftest import job
from unified_action.errors import TrainingError
from unified_action.training.config import TrainConfig
from unified_action.training.safe_load import weights_only_load

pytestmark = pytest.mark.slow


class _Payload:
    """Unpickling this creates a file: proof that code from the checkpoint ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def run(mixture, tmp_path_factory):
    """A run directory with complete checkpoints at steps 1 and 2 (a tiny job, one process)."""
    from unified_action.training.trainer import Trainer

    out = tmp_path_factory.mktemp("safe") / "run"
    t = Trainer(TrainConfig.model_validate(job(mixture, out, steps=2, checkpoint_every=1)))
    for _ in range(2):
        t.train_step()
        t.save()
    return out


def _trainer(mixture, out, **train):
    from unified_action.training.trainer import Trainer

    return Trainer(TrainConfig.model_validate(job(mixture, out, steps=2, checkpoint_every=1, **train)))


def _plant(path, marker):
    state = weights_only_load(path)
    state["evil"] = _Payload(marker)
    torch.save(state, path)


@pytest.mark.parametrize("name", ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"])
def test_pickled_payload_is_refused_on_resume_and_export(run, mixture, tmp_path, name):
    from unified_action.training.export import export_checkpoint

    out = tmp_path / "run"
    shutil.copytree(run, out)
    marker = tmp_path / "ran"
    for ckpt in ("step_00000001", "step_00000002"):
        _plant(out / "checkpoints" / ckpt / "state" / name, marker)
    with pytest.raises(TrainingError, match=rf"{name}: refused: holds pickled objects") as e:
        _trainer(mixture, out)
    assert "\n" not in str(e.value) and not marker.exists()
    with pytest.raises(TrainingError, match=rf"{name}: refused") as e:
        export_checkpoint(out, tmp_path / "export")
    assert not marker.exists() and not (tmp_path / "export").exists()


def test_clean_checkpoints_resume_and_export_weights_only(run, mixture, tmp_path):
    from unified_action.training.export import consolidated_state_dict

    out = tmp_path / "run"
    shutil.copytree(run, out)
    t = _trainer(mixture, out)
    assert t.resumed == 2
    state = consolidated_state_dict(out / "checkpoints" / "step_00000002")
    assert state.keys() == t.engine.module.state_dict().keys()


@pytest.mark.parametrize("damage", ["marker", "optimizer"])
def test_unusable_latest_checkpoint_falls_back_to_the_previous_one(run, mixture, tmp_path, capsys, damage):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    latest = out / "checkpoints" / "step_00000002"
    if damage == "marker":
        (latest / "COMPLETE.json").write_text("{not json")
    else:
        next((latest / "state").glob("*optim_states.pt")).unlink()
    t = _trainer(mixture, out)
    assert t.resumed == 1
    said = capsys.readouterr().out
    assert "falling back to" in said and "step_00000001" in said and "step_00000002" in said
