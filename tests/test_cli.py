"""The `uact` command: its surface is frozen here, and each command works on real files."""


import numpy as np
import typer
from support import CARDS
from support import run_cli as run

from unified_action import cli

# Command path -> its parameters. Changing the CLI means changing this table on purpose.
SURFACE = {
    "uact": ["help", "version"],
    "uact card": ["help"],
    "uact card validate": ["help", "paths"],
    "uact data": ["help"],
    "uact data convert": ["address", "aspect", "card", "engine", "help", "image_format", "limit", "out", "overwrite",
                          "shard_mb", "size", "source", "workers"],
    "uact data info": ["help", "path"],
    "uact data verify": ["help", "path"],
    "uact data record": ["address", "aspect", "card", "engine", "episodes", "help", "image_format", "out", "overwrite", "rlds",
                         "seed", "shard_mb", "size", "steps", "style", "workers"],
    "uact demo": ["cards", "clip_stride", "help", "out"],
    "uact eval": ["clips", "context", "data", "device", "episodes", "guidance", "help", "horizon", "min_change", "model", "out",
                  "registry", "seed", "steps", "tokenizer"],
    "uact export": ["checkpoint", "help", "out"],
    "uact finetune": ["config", "help", "nproc", "overwrite", "resume", "set_", "stop_at"],
    "uact play": ["data", "device", "guidance", "help", "host", "min_change", "model", "port", "registry", "steps",
                  "threads"],
    "uact pretrain": ["config", "help", "init_from", "nproc", "overwrite", "resume", "set_", "stop_at"],
    "uact slots": ["group", "help"],
    "uact tokenizer": ["help"],
    "uact tokenizer list": ["help", "registry"],
    "uact tokenizer register": ["card", "data", "force", "heldout_fraction", "help", "registry", "seed"],
    "uact tokenizer show": ["data", "help", "name", "registry"],
    "uact tokenizer vocab": ["help", "registry"],
}


def _walk(cmd, path):
    params = sorted(p.name for p in cmd.params) + ["help"]
    yield path, sorted(params)
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _walk(sub, f"{path} {name}")


def test_cli_surface_is_frozen():
    root = typer.main.get_command(cli.app)
    assert dict(_walk(root, "uact")) == SURFACE





def test_help_reads_well(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "--help")
    assert code == 0
    for word in ("tokenizer", "card", "slots", "demo"):
        assert word in out


def test_register_list_show_vocab(monkeypatch, capsys, tmp_path, sim_episodes):
    data = tmp_path / "episodes"
    data.mkdir()
    for i, ep in enumerate(sim_episodes["carracing"]):
        np.save(data / f"ep{i}.npy", ep)
    reg = tmp_path / "reg"
    code, out, err = run(monkeypatch, capsys, "tokenizer", "register", CARDS / "carracing.md", "--data", data, "--registry", reg)
    assert code == 0, err
    assert "carracing" in out and "normalized RMSE" in out
    monkeypatch.setenv("UACT_TOKENIZERS", str(reg))
    code, out, _ = run(monkeypatch, capsys, "tokenizer", "list")
    assert code == 0 and "carracing" in out and "bin" in out
    code, out, _ = run(monkeypatch, capsys, "tokenizer", "show", "carracing", "--data", data)
    assert code == 0 and "vehicle.steer" in out
    code, out, _ = run(monkeypatch, capsys, "tokenizer", "vocab")
    assert code == 0 and "embodiment" in out and "car" in out
    code, _, err = run(monkeypatch, capsys, "tokenizer", "show", "carracng")
    assert code == 2 and "did you mean 'carracing'" in err and len(err.strip().splitlines()) == 1


def test_card_validate(monkeypatch, capsys, tmp_path):
    code, out, _ = run(monkeypatch, capsys, "card", "validate", CARDS)
    assert code == 0 and out.count("ok ") == len(list(CARDS.glob("*.md")))
    bad = tmp_path / "bad.md"
    bad.write_text("no header\n")
    code, _, err = run(monkeypatch, capsys, "card", "validate", bad)
    assert code == 2 and err.strip() == f"error: {bad}: header: expected a YAML header opened by a '---' first line"


def test_slots_and_unknown_group(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "slots", "--group", "gamepad")
    assert code == 0 and "gamepad.dpad_up" in out and "right_arm" not in out
    code, _, err = run(monkeypatch, capsys, "slots", "--group", "gamepd")
    assert code == 2 and "did you mean 'gamepad'" in err


def test_usage_error_exit_code(monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, "tokenizer", "register")
    assert code == 2 and "Missing argument" in err


def test_version(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "--version")
    assert code == 0 and out.startswith("unified-action ")
