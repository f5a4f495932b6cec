"""The shard index (layout 2): readers seek through it, and a corrupt or hostile index or manifest pointer is a
one-line DataError naming the shard, never a hang, never a read past the file or an unbounded allocation."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import warnings
from dataclasses import replace

import pytest

from data.test_loader import config, keys, run
from unified_action.data.dataset import open_dataset, read_samples
from unified_action.data.loader import ClipLoader, MixtureEntry
from unified_action.data.shard_index import INDEX_MEMBER, MAX_INDEX_BYTES, read_index
from unified_action.errors import DataError


@pytest.fixture()
def copy(shard_data, tmp_path):
    dst = tmp_path / "carracing"
    shutil.copytree(shard_data["carracing"].root, dst)
    return dst


def _loader(shard_data, root, strict=True):
    return ClipLoader(replace(config(shard_data), datasets=(MixtureEntry(str(root)),), strict=strict), rank=0, world_size=1)


def _index(path, pointer) -> dict:
    with open(path, "rb") as f:
        f.seek(pointer[0])
        return json.loads(f.read(pointer[1]))


def test_every_index_entry_points_at_its_tar_member(shard_data):
    for s in shard_data["carracing"].shards:
        with tarfile.open(s.url) as tar:
            real = {m.name: [m.offset_data, m.size] for m in tar.getmembers()}
        assert real.pop(INDEX_MEMBER) == list(s.index)  # the manifest points at the index, the last member
        assert {n: [o, z] for n, o, z in _index(s.url, s.index)["members"]} == real


def test_indexed_reads_load_only_the_members_asked_for(shard_data):
    shard = shard_data["carracing"].shards[0]
    assert shard.indexed()
    key = f"{shard.episodes[0]:08d}"
    [s] = list(read_samples(shard, {key}, need=lambda s, meta: {"action.npy", "top_down.000032.blk"}))
    loaded = {k for k in s if not k.startswith("_")}
    assert loaded == {"meta.json", "action.npy", "top_down.000032.blk"}
    assert {"top_down.000000.blk", "reward.npy", "flags.npy"} <= s["__members__"]  # known, not read


def _rewrite_index(root, shard, doc: bytes | None = None, pointer=None):
    """Replace the index member's bytes in place (same length, padded with spaces), or the manifest's pointer."""
    path = root / shard.name
    if doc is not None:
        assert len(doc) <= shard.index[1]
        data = bytearray(path.read_bytes())
        data[shard.index[0]:shard.index[0] + shard.index[1]] = doc.ljust(shard.index[1])
        path.write_bytes(bytes(data))
    if pointer is not None:
        m = json.loads((root / "manifest.json").read_text())
        next(s for s in m["shards"] if s["name"] == shard.name)["index"] = pointer
        (root / "manifest.json").write_text(json.dumps(m))


def _entries(shard):
    return _index(shard.url, shard.index)["members"]


HOSTILE = {
    "not_json": lambda sh: b"{{{",
    "wrong_version": lambda sh: json.dumps({"version": 9, "members": []}).encode(),
    "bad_entry": lambda sh: json.dumps({"version": 1, "members": [["../x", 512, 3]]}).encode(),
    "past_the_index": lambda sh: json.dumps({"version": 1, "members": [["00000000.meta.json", 1 << 40, 1 << 40]]}).encode(),
    "unaligned": lambda sh: json.dumps({"version": 1, "members": [["00000000.meta.json", 700, 10]]}).encode(),
    "overlapping": lambda sh: json.dumps({"version": 1, "members": [_entries(sh)[1], _entries(sh)[0]]}).encode(),
    "listed_twice": lambda sh: json.dumps({"version": 1, "members": [_entries(sh)[0], [_entries(sh)[0][0], *_entries(sh)[1][1:]]]}).encode(),
    # well-formed and in bounds, but a block off (as after the tar was rewritten): no tar header where it points
    "stale": lambda sh: json.dumps({"version": 1, "members": [[n, o + 512, z] for n, o, z in _entries(sh)[:-3]]}).encode(),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_index_is_a_one_line_error_and_lenient_mode_skips_the_shard(shard_data, copy, kind):
    shard = open_dataset(copy).shards[0]
    doc = HOSTILE[kind](shard)
    if len(doc) > shard.index[1]:
        pytest.fail(f"test setup: the hostile index ({len(doc)} bytes) must fit in place of the real one")
    _rewrite_index(copy, shard, doc)
    with pytest.raises(DataError) as e:
        run(_loader(shard_data, copy))
    msg = str(e.value)
    assert shard.name in msg and "\n" not in msg and (INDEX_MEMBER in msg or "does not match" in msg)
    loader = _loader(shard_data, copy, strict=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = keys(run(loader))
    assert loader.skipped["shards"] >= 1 and got
    assert not any(int(k.split("/")[1].split("@")[0]) in shard.episodes for k in got)


@pytest.mark.parametrize("pointer, match", [
    ([0, 10], "is not a tar member's data inside the shard"),
    ([512, MAX_INDEX_BYTES + 1], "is not a tar member's data inside the shard"),
    ([1 << 50, 10], "is not a tar member's data inside the shard"),
    ([513, 10], "is not a tar member's data inside the shard"),
    ("12", "expected \\[data offset, size\\]"),
    ([512.0, 10], "expected \\[data offset, size\\]"),
])
def test_a_hostile_manifest_pointer_is_refused_on_opening(copy, pointer, match):
    shard = open_dataset(copy).shards[0]
    _rewrite_index(copy, shard, pointer=pointer)
    with pytest.raises(DataError, match=rf"shards\[0\]: index: .*{match}"):
        open_dataset(copy)


def test_a_pointer_at_another_member_is_caught_by_its_header(shard_data, copy):
    shard = open_dataset(copy).shards[0]
    other = _entries(shard)[0]
    _rewrite_index(copy, shard, pointer=other[1:])
    with pytest.raises(DataError, match=rf"{shard.name}: index entry '{INDEX_MEMBER}' .* does not match the tar member there"):
        run(_loader(shard_data, copy))


def test_read_index_bounds_what_it_reads():
    # a pointer promising a huge member inside a small file: refused before any read
    with pytest.raises(DataError, match="inside the shard's 2048 bytes"):
        read_index(io.BytesIO(b"\0" * 2048), [512, 1 << 30], 2048, "s.tar")
