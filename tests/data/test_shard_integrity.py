"""No silent substitution of data: duplicate members or keys, manifest names leaving the dataset, shards whose
size or hash differ from the manifest, a member running past the end of the file, and lenient mode with every
shard broken. And every number a file declares is bounded before it is used: a manifest's lengths, a sample's
camera size (a zlib bomb), an npy header's shape. Real shards recorded from CarRacing, edited as a careless or
hostile user would."""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
import time
import warnings
import zlib
from dataclasses import replace

import numpy as np
import pytest
from support import run_bounded, run_cli

from data.layouts import dataset_of
from data.test_loader import config, keys, run
from unified_action.data.blocks import MAGIC, block_member, block_starts
from unified_action.data.dataset import open_dataset
from unified_action.data.loader import ClipLoader, MixtureEntry
from unified_action.data.shards import MAX_STEPS, SHARD_RE, ShardWriter, iter_samples, npy_bytes, npy_load
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


# ----------------------------------------------------------------------------------------- declared numbers
HOSTILE_MANIFEST = [  # (field of shards[0], its JSON text, the one line expected)
    ("lengths[0]", str(10**18), rf"shards\[0\]\.lengths\[0\]: 1000000000000000000, expected an integer in 1\.\.{MAX_STEPS}"),
    ("lengths[0]", '"48"', r"shards\[0\]\.lengths\[0\]: '48', expected an integer in 1\.\."),
    ("lengths[0]", "[[48]]", r"shards\[0\]\.lengths\[0\]: \[\[48\]\], expected an integer in 1\.\."),
    ("lengths[0]", "[" * 100_000 + "]" * 100_000, r"manifest.json: not a valid manifest \(nested too deeply\)"),
    ("lengths", '"ab"', r"shards\[0\]\.lengths: 'ab', expected a list of integers"),
    ("episodes[0]", '"x"', r"shards\[0\]\.episodes\[0\]: 'x', expected an integer in 0\.\.99999999"),
    # within MAX_STEPS, but more steps than the shard's bytes can hold (each step's actions, reward, flags)
    ("lengths[0]", str(MAX_STEPS), rf"shards\[0\]\.lengths: {MAX_STEPS + 48} steps need at least \d+ bytes .* the shard's \d+"),
]


@pytest.mark.parametrize("copy", [2], indirect=True)
@pytest.mark.parametrize("field,value,match", HOSTILE_MANIFEST, ids=["huge", "string", "nested", "deep", "not_a_list",
                                                                      "episode", "more_than_its_bytes"])
def test_hostile_numbers_in_the_manifest_are_one_line_before_any_plan(shard_data, copy, field, value, match):
    m = json.loads((copy / "manifest.json").read_text())
    name, _, i = field.rstrip("]").partition("[")
    if i:
        m["shards"][0][name][int(i)] = "@@"
    else:
        m["shards"][0][name] = "@@"
    (copy / "manifest.json").write_text(json.dumps(m).replace('"@@"', value))
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=match) as e:
        open_dataset(copy)  # raised before the loader plans clips from the lengths (10**18 took 21 GB)
    assert "manifest.json" in str(e.value) and "\n" not in str(e.value) and time.perf_counter() - t0 < 2
    with pytest.raises(DataError, match=match):
        _loader(shard_data, copy, False)  # lenient too: a manifest is not a shard that can be skipped


def _forge(root, shard, change) -> None:
    """Rewrite `shard` with the project's ShardWriter, `change(sample)` applied to its last sample, and its manifest
    entry to match (size, sha256, index): a consistent forgery, read through its index like any shard."""
    samples = list(iter_samples(str(root / shard.name)))
    change(samples[-1])
    parts, infos = SHARD_RE.match(shard.name), []
    w = ShardWriter(root, parts["card"], int(parts["part"]), 1 << 40, int(parts["seq"]), on_shard=lambda i, _: infos.append(i))
    for s in samples:
        w.write(s, npy_load(s["action.npy"]))
    w.close()
    m = json.loads((root / "manifest.json").read_text())
    entry = next(e for e in m["shards"] if e["name"] == shard.name)
    entry.update(bytes=infos[0].bytes, sha256=infos[0].sha256, index=infos[0].extra["index"])
    (root / "manifest.json").write_text(json.dumps(m))


HOSTILE_HW = (8192, 8192)  # the camera: 201 MB a frame, in a dataset whose manifest says 32x32
HOSTILE_FRAME = HOSTILE_HW[0] * HOSTILE_HW[1] * 3


def _zlib_bomb(sample) -> None:
    """The sample's camera declared HOSTILE_HW, every step a zlib stream of that many zero bytes (~195 KB each)."""
    z = zlib.compressobj(9)
    step = b"".join(z.compress(bytes(1 << 20)) for _ in range(HOSTILE_FRAME >> 20)) + z.flush()
    meta = json.loads(sample["meta.json"])
    cam = next(iter(meta["cameras"]))
    meta["cameras"][cam], meta["arrays"][cam]["shape"] = list(HOSTILE_HW), [*HOSTILE_HW, 3]
    T, B = meta["length"], meta["block_steps"]
    for t0 in block_starts(T, B):
        n = min(B, T - t0)  # the block format of blocks.py: magic, step count, step offsets, payload
        sample[block_member(cam, t0)] = MAGIC + np.uint32(n).tobytes() + (np.arange(n + 1) * len(step)).astype("<u4").tobytes() + step * n
    sample["meta.json"] = json.dumps(meta).encode()


BOMB_READS = """
import json, sys
from unified_action.data.dataset import open_dataset
from unified_action.data.loader import ClipLoader, LoaderConfig, MixtureEntry
from unified_action.errors import DataError
root, registry = sys.argv[1:3]
cfg = LoaderConfig(datasets=(MixtureEntry(root),), registry=registry, context_frames=1, future_frames=2, image_size=(32, 32),
                   batch_size=3)
loader, ds = ClipLoader(cfg, rank=0, world_size=1), open_dataset(root)
bound()
out = {}
for name, read in {"loader": lambda: list(loader), "episodes": lambda: list(ds.iter_episodes())}.items():
    try:
        read()
        out[name] = "read"
    except DataError as e:
        out[name] = str(e)
print(json.dumps(out))
"""


@pytest.mark.parametrize("copy", [2], indirect=True)
def test_a_zlib_bomb_camera_is_refused_by_the_declared_image_size_before_inflating(shard_data, copy):
    shard = _shard(copy)
    _forge(copy, shard, _zlib_bomb)
    # the reads run with less memory than one frame of the hostile camera: decoding a single one fails there
    r = run_bounded(BOMB_READS, HOSTILE_FRAME, copy, shard_data["registry"].root)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for read in ("loader", "episodes"):
        assert re.search(rf"{shard.name}: {shard.episodes[-1]:08d}: meta.json: cameras\.top_down: \[8192, 8192\], "
                         rf"expected \[32, 32\]", out[read]), out[read]


@pytest.mark.parametrize("copy", [2], indirect=True)
def test_an_npy_header_claiming_more_than_its_member_holds_is_refused_before_allocating(shard_data, copy):
    shard = _shard(copy)
    path, key = copy / shard.name, f"{shard.episodes[-1]:08d}"
    with tarfile.open(path) as tar:
        member = tar.getmember(f"{key}.action.npy")
    data = bytearray(path.read_bytes())
    head = bytes(data[member.offset_data:member.offset_data + 128]).split(b"\n")[0] + b"\n"
    # the same header length, so the member, the shard's size and its index stay as they were
    claim = "{'descr': '<f8', 'fortran_order': False, 'shape': (10000000000000, 2), }"
    data[member.offset_data:member.offset_data + len(head)] = head[:10] + claim.ljust(len(head) - 11).encode() + b"\n"
    path.write_bytes(bytes(data))
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=rf"{shard.name}: {key}: action.npy: .*shape \(10000000000000, 2\) of float64 is "
                                        rf"160000000000000 bytes, the member holds \d+") as e:
        run(_loader(shard_data, copy, True))
    assert "\n" not in str(e.value) and time.perf_counter() - t0 < 30
    with pytest.raises(DataError, match=r"action.npy: .*shape \(10000000000000, 2\)"):
        list(open_dataset(copy).iter_episodes())
