"""Nothing read from a checkpoint runs code: resume and export load DeepSpeed's files weights-only, refusing a
pickled payload with one line naming the file; a complete checkpoint that cannot be used is skipped for the
previous one, saying so, and resume moves it aside so the run goes on; an export replaces only an earlier export.
Real DeepSpeed engines and checkpoints, in this process."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from support import run_cli, tree_digest

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


DAMAGE = {  # a file of the latest checkpoint deleted or garbled, as a full disk, a user or a failed sync leaves it
    "marker": lambda c: (c / "COMPLETE.json").write_text("{not json"),
    "empty marker": lambda c: (c / "COMPLETE.json").write_text(""),
    "nested marker": lambda c: (c / "COMPLETE.json").write_text("[" * 100_000 + "]" * 100_000),
    "optimizer": lambda c: next((c / "state").glob("*optim_states.pt")).unlink(),
    "model": lambda c: next((c / "state").glob("*model_states.pt")).unlink(),
    "rng": lambda c: (c / "rank00000.pt").unlink(),
    "loader": lambda c: (c / "rank00000.loader.json").unlink(),
}


def _damaged_copy(run, tmp_path, damage):
    """A copy of the run whose latest checkpoint (step 2) has `damage` -> (run dir, that checkpoint)."""
    out = tmp_path / "run"
    shutil.copytree(run, out)
    latest = out / "checkpoints" / "step_00000002"
    DAMAGE[damage](latest)
    return out, latest


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_unusable_latest_checkpoint_is_moved_aside_and_the_run_goes_on(run, mixture, tmp_path, capsys, damage):
    out, latest = _damaged_copy(run, tmp_path, damage)
    broken = tree_digest(latest)
    t = _trainer(mixture, out)
    assert t.resumed == 1
    said = capsys.readouterr().out
    assert "falling back to" in said and "step_00000001" in said and "step_00000002" in said and "moved aside" in said
    aside = out / "checkpoints" / "step_00000002.unusable"
    assert tree_digest(aside) == broken and not latest.exists()  # kept for a look, never loaded
    t.train_step()
    t.save()  # re-saving step 2 failed with "Directory not empty" on every resume before
    assert _trainer(mixture, out).resumed == 2
    assert tree_digest(aside) == broken


@pytest.mark.parametrize("damage", ["marker", "empty marker", "nested marker", "optimizer"])
def test_export_skips_an_unusable_checkpoint_or_refuses_it_in_one_line(run, tmp_path, damage, monkeypatch, capsys):
    out, latest = _damaged_copy(run, tmp_path, damage)
    before = tree_digest(out)
    code, stdout, err = run_cli(monkeypatch, capsys, "export", out)
    assert code == 0, err
    assert "skipped step_00000002" in stdout
    assert json.loads((out / "export" / "config.json").read_text())["trained"]["step"] == 1
    code, _, err = run_cli(monkeypatch, capsys, "export", latest, "-o", tmp_path / "export2")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "step_00000002: cannot be exported" in err
    assert not (tmp_path / "export2").exists()
    assert {k: v for k, v in tree_digest(out).items() if not k.startswith("export")} == before  # the run is untouched


def test_export_never_deletes_the_run_or_a_foreign_directory(run, tmp_path, monkeypatch, capsys):
    """`uact export RUN -o RUN` deleted the whole run, `-o DIR` any directory's files: now refused in one line before
    any work, the trees byte-identical; an earlier export (and the default RUN/export) is replaced."""
    out = tmp_path / "run"
    shutil.copytree(run, out)
    (out / "notes.txt").write_text("a user's file")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("{}")  # one name like ours does not make the folder ours
    (mine / "data.csv").write_text("1,2\n")
    ckpt = out / "checkpoints" / "step_00000002"
    for args in ([out, "-o", out], [out, "-o", out / "checkpoints"], [ckpt, "-o", ckpt], [out, "-o", mine],
                 [out, "-o", tmp_path], [out, "-o", out / "notes.txt"]):
        before = tree_digest(tmp_path)
        code, stdout, err = run_cli(monkeypatch, capsys, "export", *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)
        assert tree_digest(tmp_path) == before, args
    assert run_cli(monkeypatch, capsys, "export", out)[0] == 0
    (out / "export.tmp").mkdir()  # a killed export's leftover: ours, removed
    (out / "export.tmp" / "model.safetensors").write_bytes(b"half")
    code, stdout, err = run_cli(monkeypatch, capsys, "export", out)
    assert code == 0 and stdout.strip().endswith(str(out / "export")), err
    assert sorted(p.name for p in (out / "export").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert not (out / "export.tmp").exists() and (out / "notes.txt").read_text() == "a user's file"
