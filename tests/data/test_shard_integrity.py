"""No silent substitution of data: duplicate members or keys, manifest names leaving the dataset, shards whose
size or hash differ from the manifest, a member running past the end of the file, and lenient mode with every
shard broken. Real shards recorded from CarRacing, edited as a careless or hostile user would."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import warnings
from dataclasses import replace

import numpy as np
import pytest
from support import run_cli

from data.layouts import dataset_of
from data.test_loader import config, keys, run
from unified_action.data.dataset import open_dataset
from unified_action.data.loader import ClipLoader, MixtureEntry
from unified_action.data.shards import iter_samples, npy_bytes, npy_load
from unified_action.errors import DataError


@pytest.fixture(params=[2, 1], ids=["layout2", "layout1"])
def copy(shard_data, tmp_path, request):
    dst = tmp_path / "carracing"
    shutil.copytree(dataset_of(shard_data, request.param).root, dst)
    return dst


def _loader(shard_data, root, strict):
    return ClipLoader(replace(config(shard_data), datasets=(MixtureEntry(str(root)),), strict=strict), rank=0, world_size=1)


def _members(path):
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]


def _write(path, members):
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for m, data in members:
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _other_actions(data: bytes) -> bytes:
    a = npy_load(data)
    return npy_bytes(a[::-1].copy())


def _shard(root):
    ds = open_dataset(root)
    return next(s for s in ds.shards if len(s.episodes) >= 2)


@pytest.mark.parametrize("kind", ["member_twice", "key_repeated"])
def test_duplicates_are_an_error_in_strict_mode_and_skipped_in_lenient(shard_data, copy, kind):
    shard = _shard(copy)
    members = _members(copy / shard.name)
    key = f"{shard.episodes[0]:08d}"
    i = next(j for j, (m, _) in enumerate(members) if m.name == f"{key}.action.npy")
    if kind == "member_twice":
        members.insert(i + 1, (members[i][0], _other_actions(members[i][1])))
    else:
        members += [(m, _other_actions(d) if m.name.endswith("action.npy") else d) for m, d in members if m.name.startswith(key)]
    _write(copy / shard.name, members)
    # where the rewritten tar kept its size (tar pads to 10 KiB records), layout 2 reads it through its index,
    # which no longer matches: that is the error then
    stale = "|the index does not match the tar|rewritten after its index" if shard.index else ""
    with pytest.raises(DataError, match=("appears twice" if kind == "member_twice" else "repeated") + stale) as e:
        run(_loader(shard_data, copy, True))
    assert shard.name in str(e.value) and (key in str(e.value) or "the index does not match" in str(e.value))
    loader = _loader(shard_data, copy, False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = run(loader)
    assert loader.skipped["samples"] >= 1
    assert not any(k.split("/")[1].split("@")[0] == str(shard.episodes[0]) for k in keys(got))


def test_manifest_names_that_leave_the_root_are_refused(copy):
    m = json.loads((copy / "manifest.json").read_text())
    m["shards"][0]["name"] = "../../etc/hostname"
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match=r"shards\[0\]\.name: '\.\./\.\./etc/hostname', expected a shard file name"):
        open_dataset(copy)


def test_size_is_checked_on_reading_and_hash_by_verify(shard_data, copy, monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "data", "verify", copy)
    assert code == 0 and "match manifest.json" in out
    shard = _shard(copy)
    path = copy / shard.name
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data) + b"\0" * 1024)  # appended: tar readers ignore it
    with pytest.raises(DataError, match=rf"{shard.name}: {len(data) + 1024} bytes, manifest.json says {len(data)}"):
        run(_loader(shard_data, copy, True))
    with tarfile.open(path) as tar:
        end = max(m.offset_data + m.size for m in tar.getmembers())
    data[-(-end // 512) * 512 + 512 + 10] ^= 0xFF  # same size, other bytes (in the end-of-archive blocks: the tar still reads)
    path.write_bytes(bytes(data))
    run(_loader(shard_data, copy, True))  # size matches: reading does not hash
    code, _, err = run_cli(monkeypatch, capsys, "data", "verify", copy)
    assert code == 2 and shard.name in err and "sha256" in err and len(err.strip().splitlines()) == 1


def test_a_member_past_the_end_of_the_file_costs_only_its_own_sample(copy):
    shard = _shard(copy)
    path = copy / shard.name
    with tarfile.open(path) as tar:
        last = f"{shard.episodes[-1]:08d}"
        first_of_last = next(m for m in tar.getmembers() if m.name.startswith(last))
    # cut inside the last sample's first member: its declared size runs past the end of the file
    path.write_bytes(path.read_bytes()[: first_of_last.offset_data + 5])
    got = []
    with pytest.raises(DataError, match=rf"sample key '{last}' is incomplete"):
        for s in iter_samples(str(path)):
            got.append(s["__key__"])
    assert got == [f"{e:08d}" for e in shard.episodes[:-1]]


@pytest.mark.timeout(120)
def test_lenient_mode_with_every_shard_broken_raises_instead_of_hanging(shard_data, copy):
    for s in open_dataset(copy).shards:
        (copy / s.name).write_bytes(np.random.default_rng(0).bytes(3000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="lenient mode: no usable clip"):
            run(_loader(shard_data, copy, False))
