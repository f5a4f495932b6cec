"""Webdataset shards: one episode per sample, written atomically, read back as `Episode`s.

A dataset directory holds

    manifest.json   what is there: the card, the sample layout version, and per shard its episodes, their
                    lengths, its bytes, sha256 and where its index is (the loader plans epochs from it without
                    opening a tar)
    stats.json      per-dimension statistics of the native actions and of the unified slots
    <card>.md       the data card, with the dataset's size, action mapping and statistics added to its body
    <card>-<part>-<seq>.tar

and one sample per episode (key = 8-digit episode index; webdataset groups members by that key). Layout 2:

    <key>.meta.json                 card, episode, length, instruction, source, layout, cameras {name: [H, W]},
                                    block_steps, arrays {name: {dtype, shape, codec}} (every camera is one), and
                                    frame_every k when the episode has a frame only every k steps (absent: 1)
    <key>.action.npy                float64 [T, native_dim]: native actions, card fields flattened in card order
    <key>.proprio.npy               float32 [T, P]: proprio fields flattened in card order (if the card has any)
    <key>.reward.npy                float32 [T]
    <key>.discount.npy              float32 [T]
    <key>.flags.npy                 uint8 [T, 3]: is_first, is_last, is_terminal
    <key>.<array>.<t0:06d>.blk      entries [t0, t0 + block_steps) of a per-step array: a camera's frames, or any
                                    other per-step array of the episode (`Episode.arrays`, e.g. cached latents),
                                    each entry encoded on its own (blocks.py: zlib by default, or png / jpeg). An
                                    array has an entry per step, a camera ceil(length / frame_every): entry i is
                                    step i * frame_every (no frame is stored twice)
    __index__                       the shard's last member: every member's offset and size (shard_index.py)

Why one episode per sample: the loader cuts clips of any length and stride out of an episode, so a fixed clip
per sample would freeze the clip length into the data. Why blocks of steps: layout 1 stored one PNG member per
frame, and the loader spent most of its time on per-frame work (a tar header to parse and a PNG to decode per
frame: benchmarks/README.md); a block is one member for 32 steps, and a zlib step decodes 8x faster than a
PNG through PIL (blocks.py has the measurements). Why an index: a reader seeks straight to the members its clips need instead of parsing the whole tar.

Layout 1 (one `<key>.<camera>.<t:06d>.png|jpg` member per frame, no blocks, no index) is still read.

A shard is written to `<name>.tmp` and renamed when complete; its sidecar `<name>.json` (episodes, lengths,
checksum, index) is renamed into place after it, and only a shard with its sidecar counts as finished. The same
episodes and settings give byte-identical shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unified_action.atomic import remove, writing
from unified_action.cards import DataCard
from unified_action.cards.mapping import field_size
from unified_action.cards.schema import MAX_FRAME_EVERY
from unified_action.data.blocks import (
    MAX_BLOCK_STEPS,
    ArraySpec,
    Block,
    block_member,
    block_starts,
    encode_block,
    get_codec,
)
from unified_action.data.episode import Episode, frame_count
from unified_action.data.frames import DEFAULT_ASPECT, resize_frames
from unified_action.data.shard_index import INDEX_MEMBER, INDEX_VERSION
from unified_action.errors import DataError

LAYOUT_VERSION = 2  # what is written
READ_LAYOUTS = (1, 2)  # what is read
IMAGE_FORMATS = {"png": "png", "jpeg": "jpg"}  # layout 1: image format -> member extension
FRAME_CODECS = ("zlib", "png", "jpeg")  # layout 2: --image-format -> block codec of the cameras
DEFAULT_BLOCK_STEPS = 32
MAX_STEPS = 10_000_000  # steps of one episode: 2.8 hours at 1 kHz
MAX_EPISODE = 10**8 - 1  # a sample's key is the episode index in 8 digits
SHARD_RE = re.compile(r"^(?P<card>.+)-(?P<part>\d{4})-(?P<seq>\d{5})\.tar$")


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


# The header np.save writes for the arrays stored here (NEP 1): a dict literal of a simple dtype, C order and a shape.
# Read by this pattern, not by numpy's reader, which parses it with ast.literal_eval: CPython 3.11.7's AST constructor
# can fail spuriously ("AST constructor recursion depth mismatch", cpython#106905, fixed in 3.11.8), and did in a
# DataLoader worker; the pattern is also bounded work for any header.
_NPY_HEADER = re.compile(rb"\{'descr': '(?P<descr>[<>|=][biuf]\d{1,2})', 'fortran_order': False, "
                         rb"'shape': \((?P<shape>(?:\d{1,19}, )*\d{0,19},?)\), \} *\n")


def npy_load(data: bytes) -> np.ndarray:
    """An .npy member's array. Its header is checked against the member's size before anything is allocated: a
    header may claim any shape (10**13 x 2) in a file of a few hundred bytes. Raises ValueError on bad bytes."""
    if data[:6] != b"\x93NUMPY" or len(data) < 10:
        raise ValueError("not an npy member (no \\x93NUMPY magic)")
    major = data[6]
    if (major, data[7]) not in ((1, 0), (2, 0)):  # what numpy writes for every dtype this package stores
        raise ValueError(f"npy format version {major}.{data[7]}, expected 1.0 or 2.0")
    size_bytes = 2 if major == 1 else 4
    start = 8 + size_bytes
    header = data[start: start + int.from_bytes(data[8:start], "little")]
    m = _NPY_HEADER.fullmatch(header)
    if m is None:
        raise ValueError(f"an npy header np.save does not write for a plain array: {header[:80]!r}")
    shape = tuple(int(x) for x in m["shape"].decode().replace(" ", "").split(",") if x)
    dtype = np.dtype(m["descr"].decode())
    offset = start + len(header)
    need = dtype.itemsize * int(np.prod(shape, dtype=object))  # Python ints: no overflow for any claimed shape
    if need != len(data) - offset:
        raise ValueError(f"the header's shape {shape} of {dtype} is {need} bytes, the member holds {len(data) - offset}")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape).copy()


def frame_member(camera: str, t: int, ext: str) -> str:
    """Layout 1: the member of frame t of a camera."""
    return f"{camera}.{t:06d}.{ext}"


def episode_to_sample(ep: Episode, card: DataCard, image_format: str = "zlib", image_size: tuple[int, int] | None = None,
                      jpeg_quality: int = 95, aspect: str = DEFAULT_ASPECT,
                      block_steps: int = DEFAULT_BLOCK_STEPS) -> dict[str, bytes]:
    """An Episode -> webdataset sample members (layout 2, in the module docstring)."""
    ep.check(card)
    if ep.frame_every != card.header.frame_every:  # the loader plans clips from the card's k, before opening a shard
        raise DataError(f"{card.name} episode {ep.index}: frame_every: {ep.frame_every}, the card's source.frame_every "
                        f"is {card.header.frame_every}; a dataset's episodes store frames as its card says")
    if image_format not in FRAME_CODECS:
        raise DataError(f"image_format: '{image_format}', expected one of {', '.join(FRAME_CODECS)}")
    if not 1 <= block_steps <= MAX_BLOCK_STEPS:
        raise DataError(f"block_steps: {block_steps}, expected 1..{MAX_BLOCK_STEPS}")
    T = len(ep)
    frames = {c.name: resize_frames(c.cropped(ep.frames[c.name]), image_size, aspect) for c in card.header.cameras}
    arrays = {name: (f, ArraySpec("uint8", tuple(f.shape[1:]), image_format)) for name, f in frames.items()}
    for name, a in ep.arrays.items():  # other per-step arrays: lossless, whatever their dtype
        arrays[name] = (a, ArraySpec(a.dtype.name, tuple(a.shape[1:]) or (1,), "zlib"))
    meta = {
        "layout": LAYOUT_VERSION, "card": card.name, "embodiment": card.embodiment, "episode": ep.index,
        "length": T, "instruction": ep.instruction, "source": ep.source, "image_format": image_format,
        "cameras": {name: list(f.shape[1:3]) for name, f in frames.items()}, "aspect": aspect,
        "block_steps": block_steps, "arrays": {name: spec.to_json() for name, (_, spec) in arrays.items()},
    }
    if ep.frame_every != 1:  # only then: an episode with every frame writes the bytes it always did
        meta["frame_every"] = ep.frame_every
    sample = {"__key__": f"{ep.index:08d}", "meta.json": json.dumps(meta).encode(),
              "action.npy": npy_bytes(ep.native_actions(card)),
              "reward.npy": npy_bytes(np.asarray(ep.reward, np.float32)),
              "discount.npy": npy_bytes(np.ones(T, np.float32) if ep.discount is None else np.asarray(ep.discount, np.float32)),
              "flags.npy": npy_bytes(np.stack([ep.is_first, ep.is_last, ep.is_terminal], 1).astype(np.uint8))}
    proprio = ep.proprio_vector(card) if all(p.path in ep.proprio for p in card.header.proprio) else None
    if proprio is not None:
        sample["proprio.npy"] = npy_bytes(proprio)
    for name, (a, spec) in arrays.items():
        n = len(a)  # a camera's frames: ceil(T / frame_every) entries; other arrays: T
        a = a.reshape(n, *spec.shape)
        for t0 in block_starts(n, block_steps):
            sample[block_member(name, t0)] = encode_block(a[t0:t0 + block_steps], spec, jpeg_quality)
    return sample


# ----------------------------------------------------------------------------------------- reading samples
REQUIRED = ("meta.json", "action.npy", "reward.npy", "discount.npy", "flags.npy")


def min_step_bytes(card: DataCard) -> int:
    """The fewest bytes a step takes in a shard, whatever its frames: its native actions (float64), reward and
    discount (float32) and flags (3 x uint8), stored uncompressed. Bounds the steps a shard of known size can hold."""
    return 8 * card.mapping.native_dim + 4 + 4 + 3


def members_of(sample: dict):
    """The sample's member suffixes: all of them, also those a reader through the index did not load."""
    return sample.get("__members__") or sample.keys()


def sample_meta(sample: dict, where: str) -> dict:
    """The sample's metadata, checked (and kept in the sample: clips of one episode ask for it again and again)."""
    if "__meta__" in sample:
        return sample["__meta__"]
    if "__error__" in sample:  # found while reading the tar: a member given twice, a key repeated (iter_samples)
        raise DataError(f"{where}: {sample['__error__']}")
    present = members_of(sample)
    missing = [k for k in REQUIRED if k not in present]
    if missing:
        raise DataError(f"{where}: key '{missing[0]}' is missing (a sample needs {', '.join(REQUIRED)})")
    try:
        meta = json.loads(sample["meta.json"])
        int(meta["length"]), dict(meta["cameras"])
        layout = int(meta.get("layout", 1))
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{where}: meta.json: not valid sample metadata ({e})") from None
    if layout not in READ_LAYOUTS:
        raise DataError(f"{where}: meta.json: layout {layout}, this version reads layouts {READ_LAYOUTS}")
    if not 1 <= int(meta["length"]) <= MAX_STEPS:  # bounds the members a check expects, before any is listed
        raise DataError(f"{where}: meta.json: length {meta['length']}, expected 1..{MAX_STEPS}")
    if layout >= 2:
        B = meta.get("block_steps")
        if not (isinstance(B, int) and 1 <= B <= MAX_BLOCK_STEPS) or not isinstance(meta.get("arrays"), dict):
            raise DataError(f"{where}: meta.json: block_steps: {str(B)[:20]}, expected 1..{MAX_BLOCK_STEPS}, and an arrays table")
        specs = {str(n): ArraySpec.from_json(d, f"{where}: meta.json: arrays.{str(n)[:40]}") for n, d in meta["arrays"].items()}
        for cam, hw in meta["cameras"].items():
            if cam not in specs or list(specs[cam].shape) != [*list(hw), 3]:
                raise DataError(f"{where}: meta.json: camera '{cam}' has no arrays entry of shape {hw} x 3")
        meta["__specs__"] = specs
    k = meta.get("frame_every", 1)
    if not (isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= MAX_FRAME_EVERY) or (k != 1 and layout < 2):
        raise DataError(f"{where}: meta.json: frame_every: {str(k)[:20]}, expected an integer in 1..{MAX_FRAME_EVERY} "
                        f"(layout 2; layout 1 has a frame every step)")
    meta["frame_every"] = k
    sample["__meta__"] = meta
    return meta


def check_frame_sizes(meta: dict, sizes: dict[str, tuple[int, int]], exact: bool, where: str) -> None:
    """Every camera of the sample is one of the dataset's, of the size it declares (`ShardDataset.frame_sizes`):
    exactly, or at most where the dataset kept its source's size. Checked before any frame is decoded, since a
    step inflates to the size its meta.json declares (a 195 KB block of a 8192x8192 camera held 201 MB a frame)."""
    for cam, hw in meta["cameras"].items():
        want = sizes.get(cam)
        if want is None:
            raise DataError(f"{where}: meta.json: cameras.{str(cam)[:40]}: not a camera of the dataset (cameras: {sorted(sizes)})")
        if list(hw) != list(want) if exact else not all(isinstance(v, int) and 0 < v <= w for v, w in zip(hw, want)):
            raise DataError(f"{where}: meta.json: cameras.{cam}: {str(list(hw))[:40]}, expected {'' if exact else 'at most '}"
                            f"{list(want)} (the dataset's frame size: {'manifest.json settings.image_size' if exact else 'its card'})")


def array_length(meta: dict, name: str) -> int:
    """Entries of a per-step array of a checked sample (`sample_meta`): one per step, a camera's one per stored frame."""
    T = int(meta["length"])
    return frame_count(T, meta["frame_every"]) if name in meta["cameras"] else T


def _expected_members(meta: dict):
    T = int(meta["length"])
    if "__specs__" not in meta:  # layout 1: a member per frame
        ext = IMAGE_FORMATS.get(meta.get("image_format", "png"), "png")
        return [frame_member(c, t, ext) for c in meta["cameras"] for t in range(T)], T * len(meta["cameras"]), "frames"
    names = [block_member(a, t0) for a in meta["__specs__"] for t0 in block_starts(array_length(meta, a), meta["block_steps"])]
    return names, len(names), "blocks"


def check_complete(sample: dict, meta: dict, where: str) -> None:
    """Every frame (layout 1) or block (layout 2) member the metadata promises is there: a tar cut at a member
    boundary reads without error, and its last sample simply ends early."""
    present = members_of(sample)
    names, total, what = _expected_members(meta)
    missing = [m for m in names if m not in present]
    if missing:
        raise DataError(f"{where}: incomplete sample: {len(missing)} of {total} {what} missing, "
                        f"first key '{missing[0]}' (a truncated shard?)")


def member_array(sample: dict, member: str, where: str) -> np.ndarray:
    """An .npy member of the sample, as `npy_load` checks it; bad bytes are a DataError naming the member."""
    try:
        return npy_load(sample[member])
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{where}: {member}: not a numpy array ({str(e)[:200]})") from None


def sample_actions(sample: dict, card: DataCard, where: str, check_range: bool = True) -> np.ndarray:
    """The sample's native actions [T, native_dim] float64, checked for dtype, shape, finiteness and the card's range."""
    meta = sample_meta(sample, where)
    T, n = int(meta["length"]), card.mapping.native_dim
    a = member_array(sample, "action.npy", where)
    if a.dtype != np.float64:
        raise DataError(f"{where}: action.npy: dtype {a.dtype}, expected float64")
    if a.shape != (T, n):
        raise DataError(f"{where}: action.npy: shape {list(a.shape)}, expected [{T}, {n}] (length, native_dim of card '{card.name}')")
    if not np.isfinite(a).all():
        raise DataError(f"{where}: action.npy: holds NaN or infinite values")
    if check_range:
        lo, hi = card.mapping.native_low, card.mapping.native_high
        tol = 1e-6 * np.maximum(1.0, np.abs(np.nan_to_num(hi - lo)))  # float32 rounding of the bounds
        bad = (a < lo - tol) | (a > hi + tol)  # comparisons with NaN (no declared range) are False
        if bad.any():
            t, d = map(int, np.argwhere(bad)[0])
            raise DataError(f"{where}: action.npy: step {t} dim {d} = {a[t, d]:.6g} is outside the card's range "
                            f"[{lo[d]:.6g}, {hi[d]:.6g}]")
    return a


def sample_steps(sample: dict, name: str, steps, where: str) -> np.ndarray:
    """Entries `steps` of a layout-2 per-step array -> [len(steps), *shape]; only the blocks holding them are decoded,
    and of those only these entries. An entry is a step, except of a camera stored every k steps (`array_length`):
    there entry i is step i * k (`sample_frames` takes steps)."""
    meta = sample_meta(sample, where)
    specs = meta.get("__specs__")
    if specs is None or name not in specs:
        raise DataError(f"{where}: per-step array '{name}' is not in the sample (arrays: {sorted(specs or ())})")
    spec, B, T = specs[name], meta["block_steps"], array_length(meta, name)
    blocks = sample.setdefault("__blocks__", {})
    out = np.empty((len(steps), *spec.shape), spec.dtype)
    for j, t in enumerate(steps):
        t = int(t)
        if not 0 <= t < T:
            every = meta["frame_every"] if name in meta["cameras"] else 1
            raise DataError(f"{where}: step {t} of '{name}' is outside the episode's {T} steps" if every == 1
                            else f"{where}: frame {t} of '{name}' is outside its {T} frames (one every {every} steps)")
        t0 = t - t % B
        blk = blocks.get((name, t0))
        if blk is None:
            member = block_member(name, t0)
            if member not in sample:
                raise DataError(f"{where}: key '{member}' is missing")
            blk = blocks[(name, t0)] = Block(sample[member], min(B, T - t0), spec, f"{where}: {member}")
        out[j] = blk.step(t - t0)
    return out


def frame_entries(meta: dict, steps, where: str) -> list[int]:
    """Steps -> the entries of a camera that hold their frames (step // frame_every); a step without a stored frame
    (not a multiple of frame_every) is a DataError."""
    k = meta["frame_every"]
    bad = [int(t) for t in steps if int(t) % k]
    if bad:
        raise DataError(f"{where}: step {bad[0]} has no frame: frames are stored every {k} steps (meta.json frame_every)")
    return [int(t) // k for t in steps]


def sample_frames(sample: dict, camera: str, steps, where: str) -> np.ndarray:
    """Decode the frames of `camera` at steps `steps` -> uint8 [len(steps), H, W, 3]."""
    meta = sample_meta(sample, where)
    if camera not in meta["cameras"]:
        raise DataError(f"{where}: camera '{camera}' is not in the sample (cameras: {sorted(meta['cameras'])})")
    if "__specs__" in meta:
        return sample_steps(sample, camera, frame_entries(meta, steps, where), where)
    ext = IMAGE_FORMATS.get(meta.get("image_format", "png"), "png")
    H, W = meta["cameras"][camera]
    out = []
    for t in steps:
        member = frame_member(camera, int(t), ext)
        if member not in sample:
            raise DataError(f"{where}: key '{member}' is missing")
        try:  # the image codec checks the size in its header before decoding (blocks.py)
            img = get_codec("png").decode(memoryview(sample[member]), ArraySpec("uint8", (H, W, 3), "png"))
        except Exception as e:  # PIL raises several types for undecodable bytes
            raise DataError(f"{where}: {member}: not a decodable image of {H}x{W} ({type(e).__name__}: {str(e)[:80]})") from None
        out.append(img)
    return np.stack(out)


def _unflatten(flat: np.ndarray, fields) -> dict[str, np.ndarray]:
    """[T, sum of field sizes] -> {field path: [T, *field.shape]}, the inverse of flattening in card order."""
    out, i = {}, 0
    for f in fields:
        n = field_size(f)
        out[f.path] = flat[:, i:i + n].reshape((len(flat), *f.shape))
        i += n
    return out


def sample_to_episode(sample: dict, card: DataCard, where: str) -> Episode:
    """A whole sample back to an Episode (every frame decoded): for exports and exact read-back checks."""
    meta = sample_meta(sample, where)
    T = int(meta["length"])
    native = sample_actions(sample, card, where, check_range=False)
    actions = {path: a.astype(f.dtype) for (path, a), f in zip(_unflatten(native, card.header.action).items(), card.header.action)}
    proprio = _unflatten(member_array(sample, "proprio.npy", where), card.header.proprio) if "proprio.npy" in sample else {}
    flags = member_array(sample, "flags.npy", where).astype(bool)
    k = meta["frame_every"]
    frames = {cam: sample_frames(sample, cam, range(0, T, k), where) for cam in meta["cameras"]}
    arrays = {name: sample_steps(sample, name, range(T), where) for name in meta.get("__specs__", {}) if name not in frames}
    return Episode(card=meta["card"], index=int(meta["episode"]), frames=frames, actions=actions,
                   reward=member_array(sample, "reward.npy", where), is_first=flags[:, 0], is_last=flags[:, 1],
                   is_terminal=flags[:, 2], instruction=meta.get("instruction", ""), proprio=proprio,
                   discount=member_array(sample, "discount.npy", where), source=meta.get("source", ""), arrays=arrays,
                   frame_every=k)


# ----------------------------------------------------------------------------------------- shard files
class ShardURL(str):
    """A local shard's path that knows the size and sha256 its manifest gives it, so every reader checks the size
    (iter_samples) and `verify_shard` the hash. Pickles as itself into loader workers."""

    def __new__(cls, url: str, size: int, sha256: str):
        self = super().__new__(cls, url)
        self.size, self.sha256 = int(size), str(sha256)
        return self


PIPE_HINT = "set data.allow_pipe: true in the job config (or --set data.allow_pipe=true) to allow them"


def open_url(url: str, allow_pipe: bool = False):
    """Open a shard for reading: a local path, or `pipe:<command>` only when allow_pipe (the command runs in a
    shell, so a URL from a config or manifest must never run unasked)."""
    if url.startswith("pipe:"):
        if not allow_pipe:
            raise DataError(f"{url}: 'pipe:' shard URLs run a shell command; {PIPE_HINT}")
        from webdataset.gopen import gopen

        return gopen(url)
    if "://" in url and not url.startswith("file://"):
        raise DataError(f"{url}: only local paths (and 'pipe:' URLs, when allowed) are supported as shard URLs")
    return open(url.removeprefix("file://"), "rb")


def verify_shard(url: str) -> str | None:
    """Why a local shard differs from its manifest entry (size, then sha256), or None."""
    if not isinstance(url, ShardURL):
        return None
    try:
        size = os.path.getsize(url)
    except OSError as e:
        return f"cannot be read ({type(e).__name__})"
    if size != url.size:
        return f"{size} bytes, manifest.json says {url.size} (truncated or rewritten since it was written)"
    digest = sha256_file(Path(url))
    if digest != url.sha256:
        return f"sha256 {digest[:12]}..., manifest.json says {url.sha256[:12]}... (changed since it was written)"
    return None


def iter_samples(url: str, allow_pipe: bool = False, select: Callable[[str], bool] | None = None) -> Iterator[dict]:
    """Samples of one shard in order, as {'__key__', member suffix: bytes}. A truncated, empty or non-tar shard
    raises DataError naming it after the samples that could be read (a sample is dropped only if the break is in
    one of its own members). A member given twice in a sample, or a key repeated in the shard, is never read
    last-wins: that sample carries '__error__', which `sample_meta` raises. A local shard whose size differs from
    its manifest's raises after its samples (lenient readers keep the intact ones)."""
    import tarfile

    from webdataset.tariterators import base_plus_ext

    current: dict | None = None
    seen: set[str] = set()
    failed_key: str | None = None
    try:
        with open_url(url, allow_pipe) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for info in tar:
                fname = info.name
                if not info.isreg() or fname.startswith("__") and fname.endswith("__"):
                    continue
                key, suffix = base_plus_ext(fname)
                if key is None or (select is not None and not select(fname)):
                    continue
                failed_key = key
                data = tar.extractfile(info).read()
                failed_key = None
                if current is not None and current["__key__"] != key:
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key}
                    if key in seen:
                        current["__error__"] = "sample key is repeated in the shard; each episode is one sample"
                    seen.add(key)
                if suffix in current and "__error__" not in current:
                    current["__error__"] = f"member '{suffix}' appears twice in the sample"
                current[suffix] = data
    except (tarfile.TarError, EOFError, OSError) as e:
        # Only the sample whose member broke is incomplete: the one before it is whole and is still delivered.
        msg = str(e).split(" @ ")[0] or type(e).__name__
        broken = failed_key if failed_key is not None else (current["__key__"] if current is not None else None)
        if current is not None and current["__key__"] != broken:
            yield current
        at = f"; sample key '{broken}' is incomplete" if broken is not None else ""
        raise DataError(f"{url}: not a readable tar shard ({msg}){at}") from None
    if current is not None:
        yield current
    if isinstance(url, ShardURL):
        size = os.path.getsize(url)
        if size != url.size:
            raise DataError(f"{url}: {size} bytes, manifest.json says {url.size}: truncated or rewritten since it was written")


class _HashingFile(io.RawIOBase):
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, f):
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if self.f is None:  # discarded
            return len(b)
        self.sha.update(b)
        self.size += len(b)
        return self.f.write(b)

    def discard(self) -> None:
        """Drop what is written from now on: a shard given up still has its tar stream to close."""
        self.f = None


@dataclass
class ShardInfo:
    name: str
    episodes: list[int]
    lengths: list[int]
    bytes: int
    sha256: str
    part: int = 0
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "episodes": self.episodes, "lengths": self.lengths, "bytes": self.bytes,
                "sha256": self.sha256, "part": self.part, **self.extra}


class ShardWriter:
    """Writes samples into `<out>/<card>-<part>-<seq>.tar`, starting a new shard past `target_bytes`.

    Members go in sorted order within a sample (as webdataset writes them), then the index as the last member.
    Each shard is written as `.tmp` and renamed when complete; `on_shard(info, stats_rows)` runs after that
    with the shard's native action rows, so the caller can record the sidecar and statistics."""

    def __init__(self, out: Path, card: str, part: int, target_bytes: int, first_seq: int = 0,
                 on_shard: Callable[[ShardInfo, np.ndarray], None] | None = None):
        self.out, self.card, self.part, self.target = Path(out), card, part, target_bytes
        self.seq, self.on_shard = first_seq, on_shard
        self._file = self._hash = self._tar = None
        self._episodes: list[int] = []
        self._lengths: list[int] = []
        self._rows: list[np.ndarray] = []
        self._index: list[list] = []

    def _name(self) -> str:
        return f"{self.card}-{self.part:04d}-{self.seq:05d}.tar"

    def _add(self, name: str, data: bytes) -> list:
        ti = tarfile.TarInfo(name)
        # mtime fixed: the same episodes give byte-identical shards (and checksums) on every run; an int: a float
        # mtime makes tarfile add a 1 KiB PAX header to every member
        ti.size, ti.mtime, ti.mode, ti.uname, ti.gname = len(data), 0, 0o444, "bigdata", "bigdata"
        self._tar.addfile(ti, io.BytesIO(data))
        return [name, self._tar.offset - -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE, len(data)]

    def write(self, sample: dict[str, bytes], actions: np.ndarray) -> None:
        with writing(self.out / self._name(), self._abort):
            if self._tar is None:
                self._file = open(self._tmp(), "wb")  # noqa: SIM115  (spans writes; finish_shard closes it)
                self._hash = _HashingFile(self._file)
                # PAX headers appear only for a name past 100 characters; spans writes, finish_shard closes it
                self._tar = tarfile.open(fileobj=self._hash, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115
            key = sample["__key__"]
            for k in sorted(k for k in sample if not k.startswith("_")):
                self._index.append(self._add(f"{key}.{k}", sample[k]))
            self._episodes.append(int(key))
            self._lengths.append(len(actions))
            self._rows.append(actions)
            if self._tar.offset >= self.target:
                self.finish_shard()

    def _tmp(self) -> Path:
        return self.out / (self._name() + ".tmp")

    def _abort(self) -> None:
        """A failed write: close the shard being written and delete it, so it holds no space (an open file
        keeps its blocks even once unlinked, for as long as a pool's worker process lives)."""
        if self._tar is not None:  # closed into nothing: left open, it would write its end blocks when collected
            self._hash.discard()
            remove(self._tar.close)
        if self._file is not None:
            remove(self._file.close)  # its flush fails on a full disk; it closes all the same
        remove(self._tmp())
        self._tar = self._file = self._hash = None
        self._episodes, self._lengths, self._rows, self._index = [], [], [], []

    def finish_shard(self) -> None:
        if self._tar is None:
            return
        name = self._name()
        with writing(self.out / name, self._abort):
            index = json.dumps({"version": INDEX_VERSION, "members": self._index}, separators=(",", ":")).encode()
            _, offset, size = self._add(INDEX_MEMBER, index)
            self._tar.close()  # also closes the hashing wrapper, not the file
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp(), self.out / name)
        info = ShardInfo(name, self._episodes, self._lengths, self._hash.size, self._hash.sha.hexdigest(), self.part,
                         {"index": [offset, size]})
        if self.on_shard is not None:
            # a shard counts as finished only with its sidecar: without one it is deleted now rather than by the
            # next run, so a full disk keeps no shard that will be written again
            with writing(self.out / name, self.out / name):
                self.on_shard(info, np.concatenate(self._rows))
        self._tar = self._file = self._hash = None
        self._episodes, self._lengths, self._rows, self._index = [], [], [], []
        self.seq += 1

    def close(self) -> None:
        self.finish_shard()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
