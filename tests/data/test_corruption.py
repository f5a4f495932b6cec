"""Broken input, each kind in strict mode (a DataError naming the shard and the key) and lenient mode (skipped,
counted, one warning per shard, every other clip still delivered and the epoch still full)."""

from __future__ import annotations

import io
import re
import shutil
import warnings
from dataclasses import replace

import numpy as np
import pytest
import webdataset as wds

from data.layouts import dataset_of
from data.test_loader import config, keys, run
from unified_action.data.loader import ClipLoader, LoaderConfig, MixtureEntry
from unified_action.data.shards import iter_samples, npy_load
from unified_action.errors import DataError


def _npy(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _rewrite(path, change) -> None:
    """Rewrite a shard with `change(sample)` applied to its LAST sample."""
    samples = list(iter_samples(str(path)))
    change(samples[-1])
    with open(path, "wb") as f, wds.TarWriter(f, encoder=False) as w:
        for s in samples:
            w.write(s)


def _truncate(p):
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * 0.75)])


def _out_of_range(s):
    a = npy_load(s["action.npy"])
    a[3, 0] = 5.0  # steer is in [-1, 1]
    s["action.npy"] = _npy(a)


CORRUPTIONS = {
    # cut mid-member, tarfile fails; cut at a member boundary, the last sample just ends early
    "truncated": (_truncate, "not a readable tar shard|incomplete sample", False),
    "empty": (lambda p: p.write_bytes(b""), "not a readable tar shard", True),
    "not_tar": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)), "not a readable tar shard", True),
    "missing_key": (lambda p: _rewrite(p, lambda s: s.pop("action.npy")), "key 'action.npy' is missing", False),
    "wrong_dtype": (lambda p: _rewrite(p, lambda s: s.update({"action.npy": _npy(npy_load(s["action.npy"]).astype(np.float32))})),
                    "dtype float32, expected float64", False),
    "wrong_shape": (lambda p: _rewrite(p, lambda s: s.update({"action.npy": _npy(npy_load(s["action.npy"])[:, :2])})),
                    "shape", False),
    "out_of_range": (lambda p: _rewrite(p, _out_of_range), "outside the card's range", False),
    "missing_frame": (lambda p: _rewrite(p, lambda s: s.pop(next(k for k in sorted(s) if k.endswith((".png", ".blk"))))),
                      "incomplete sample", False),
}


@pytest.fixture()
def broken(shard_data, tmp_path, request, layout):
    """A copy of the CarRacing dataset (layout 2 or 1) with one shard broken; -> (loader config factory, shard,
    broken episodes). Every corruption here changes the shard's size, so layout 2 is read without its index."""
    src = dataset_of(shard_data, layout)
    dst = tmp_path / "carracing"
    shutil.copytree(src.root, dst)
    shard = next(s for s in src.shards if len(s.episodes) >= 2)
    corrupt, _, whole_shard = CORRUPTIONS[request.param]
    corrupt(dst / shard.name)
    lost = set(shard.episodes) if whole_shard else {shard.episodes[-1]}

    def make(strict: bool) -> LoaderConfig:
        return replace(config(shard_data), datasets=(MixtureEntry(str(dst)),), strict=strict)

    return make, shard.name, lost, request.param


@pytest.mark.parametrize("layout", [2, 1])
@pytest.mark.parametrize("broken", sorted(CORRUPTIONS), indirect=True)
def test_strict_names_shard_and_key(broken):
    make, shard, lost, kind = broken
    with pytest.raises(DataError) as e:
        run(ClipLoader(make(True), rank=0, world_size=1))
    msg = str(e.value)
    assert shard in msg and re.search(CORRUPTIONS[kind][1], msg) and "\n" not in msg
    if not CORRUPTIONS[kind][2]:
        assert f"{max(lost):08d}" in msg  # the sample's key


@pytest.mark.parametrize("layout", [2, 1])
@pytest.mark.parametrize("broken", sorted(CORRUPTIONS), indirect=True)
def test_lenient_skips_counts_warns_once_and_loses_nothing_else(shard_data, broken):
    make, shard, lost, kind = broken
    clean = run(ClipLoader(config(shard_data), rank=0, world_size=1))
    loader = ClipLoader(make(False), rank=0, world_size=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = run(loader)
    assert len(got) == len(clean) and sum(map(len, keys(got))) > 0  # the epoch is still full
    mine = [w for w in caught if shard in str(w.message)]
    assert len(mine) == 1  # once per shard
    assert loader.skipped["clips"] > 0 and loader.skipped["samples" if not CORRUPTIONS[kind][2] else "shards"] >= 1
    def is_lost(key: str) -> bool:
        ep = int(key.split("/")[1].split("@")[0])
        return ep in lost  # an incomplete sample is skipped whole: its other frames are not trusted either

    got_keys = set(keys(got))
    assert not any(map(is_lost, got_keys))
    assert {k for k in keys(clean) if not is_lost(k)} <= got_keys  # nothing else lost
