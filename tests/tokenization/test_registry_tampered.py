"""A registry edited consistently (files and manifest hashes both rewritten), or left half-written by a kill:
one line naming the file, never a traceback; debris cleaned under the lock by the next registration."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from support import CARDS

from unified_action.cards import load_card
from unified_action.errors import RegistryError
from unified_action.tokenization import Registry
from unified_action.tokenization.registry import content_hash


def _copy(registry, tmp_path) -> Registry:
    shutil.copytree(registry.root, tmp_path / "reg", ignore=shutil.ignore_patterns(".lock"))
    return Registry(tmp_path / "reg")


def _rewrite(reg: Registry, name: str, fname: str, data: bytes) -> None:
    """Replace one file and make the manifest agree with it (a tamper the hashes alone do not catch)."""
    d = reg.root / name
    (d / fname).write_bytes(data)
    m = json.loads((d / "manifest.json").read_text())
    m["files"][fname] = hashlib.sha256(data).hexdigest()
    m["content_hash"] = content_hash(m["files"])
    (d / "manifest.json").write_text(json.dumps(m))


def _one_line(fn, pattern):
    with pytest.raises(RegistryError, match=pattern) as e:
        fn()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("files", [{}, [], "x", {"spec.json": 3}])
def test_malformed_manifest_files(registry, tmp_path, files):
    reg = _copy(registry, tmp_path)
    m = reg.root / "carracing" / "manifest.json"
    m.write_text(json.dumps({"files": files, "content_hash": content_hash(files if isinstance(files, dict) else {})}))
    _one_line(lambda: reg.load("carracing"), r"carracing/manifest.json: files: ")
    _one_line(lambda: reg.content_hash("carracing"), r"carracing/manifest.json: files: ")


def test_manifest_as_a_json_list(registry, tmp_path):
    reg = _copy(registry, tmp_path)
    (reg.root / "carracing" / "manifest.json").write_text("[1, 2]")
    _one_line(lambda: reg.load("carracing"), r"carracing/manifest.json: files: ")
    _one_line(lambda: reg.vocabulary(), r"manifest.json")


@pytest.mark.parametrize("data", [b"\x00garbage", b"[]", b'{"name": "carracing"}', b"[" * 50000])
def test_garbage_spec(registry, tmp_path, data):
    reg = _copy(registry, tmp_path)
    _rewrite(reg, "carracing", "spec.json", data)
    _one_line(lambda: reg.load("carracing"), r"carracing/spec.json: ")


def test_garbage_bpe_model(registry, tmp_path):
    reg = _copy(registry, tmp_path)
    _rewrite(reg, "gym_aloha_insertion", "bpe.model", b"not a sentencepiece model")
    _one_line(lambda: reg.load("gym_aloha_insertion"), r"gym_aloha_insertion/bpe.model: not a sentencepiece model")


def test_killed_registration_debris_is_cleaned_by_the_next(tmp_path, sim_episodes):
    reg = Registry(tmp_path)
    reg.register(load_card(CARDS / "carracing.md"), sim_episodes["carracing"])
    (tmp_path / ".tmp-ale_pong-0123abcd").mkdir()  # a kill while writing the new files
    (tmp_path / ".tmp-ale_pong-0123abcd" / "spec.json").write_text("{")
    (tmp_path / "carracing").rename(tmp_path / ".old-carracing-89abcdef")  # a kill between the two renames of --force
    reg.register(load_card(CARDS / "ale_pong.md"), sim_episodes["ale_pong"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "ale_pong", "carracing"]
    assert reg.load("carracing").spec.name == "carracing"
