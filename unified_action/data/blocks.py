"""Per-step arrays in blocks of steps: a camera's frames (or any per-step array, e.g. cached latents) as tar members.

A block member holds steps [t0, t0 + n) of one array, each step encoded on its own by the array's codec:

    b"UAB1"                     magic
    uint32 n                    steps in the block (little-endian, as everything here)
    uint32 offsets[n + 1]       where each step's bytes start in the payload; offsets[n] is the payload's length
    payload                     the encoded steps, one after the other

Why each step on its own inside a block: a clip takes one frame every `frame_stride` steps (the action chunk
length, e.g. 5), so it needs a fifth of a block's frames; steps encoded together would all have to be
decompressed to reach one. The block still replaces 16-32 tar members (and their headers) with one, which is
where the per-frame cost of layout 1 went (benchmarks/README.md, "Data pipeline"). zlib's 32 KiB window spans
only ~2.5 frames of 64x64 RGB anyway, so compressing the steps of a block together would save little.

Codecs (registered with `@codec`): `zlib` (lossless, the default), `png` (lossless), `jpeg` (lossy), `raw`.
Measured on 600 real 64x64 CarRacing frames (one core, machine shared): zlib level 6 1,628 B and 22 us to
decode a frame; PNG 1,737 B and 183 us (PIL) or 86 us (OpenCV); zstd (the `zstandard` package) level 9 1,598 B
and 9 us, not worth a dependency at the loader's current cost per clip; compressing a block's 32 steps
together would halve the size (zlib 773 B, zstd 626 B a frame) but make a clip decompress whole blocks for
the fifth of their frames it shows. Every decode is bounded: a step never decompresses to more than the bytes
its declared dtype and shape take.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from unified_action.data.frames import encode_image
from unified_action.errors import DataError, did_you_mean

MAGIC = b"UAB1"
MAX_STEP_BYTES = 1 << 28  # 256 MiB: a declared step shape beyond this is refused before anything is allocated
MAX_BLOCK_STEPS = 4096
DTYPES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16", "float32", "float64")


@dataclass(frozen=True)
class ArraySpec:
    """What every step of a per-step array is: dtype, shape and codec (recorded in the sample's meta.json)."""

    dtype: str
    shape: tuple[int, ...]
    codec: str
    nbytes: int = field(init=False, repr=False, compare=False)  # bytes of one step, computed once (decoding checks it per step)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nbytes", int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize)

    def to_json(self) -> dict:
        return {"dtype": self.dtype, "shape": list(self.shape), "codec": self.codec}

    @classmethod
    def from_json(cls, d, where: str) -> ArraySpec:
        """Checked: a known dtype and codec, a shape of positive ints whose step fits MAX_STEP_BYTES."""
        try:
            dtype, shape, name = str(d["dtype"]), tuple(d["shape"]), str(d["codec"])
        except (KeyError, TypeError) as e:
            raise DataError(f"{where}: expected {{dtype, shape, codec}} ({type(e).__name__}: {e})") from None
        if dtype not in DTYPES:
            raise DataError(f"{where}.dtype: {dtype[:40]!r}, expected one of {', '.join(DTYPES)}")
        if not shape or len(shape) > 8 or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 1 << 20 for s in shape):
            raise DataError(f"{where}.shape: {str(list(shape))[:80]}, expected 1 to 8 positive ints")
        spec = cls(dtype, shape, name)
        if spec.nbytes > MAX_STEP_BYTES:
            raise DataError(f"{where}.shape: {list(shape)} of {dtype} is {spec.nbytes} bytes a step, more than {MAX_STEP_BYTES}")
        get_codec(name, where + ".codec").check(spec, where)
        return spec


# ----------------------------------------------------------------------------------------- codecs
@dataclass(frozen=True)
class Codec:
    name: str
    encode: Callable[[np.ndarray, int], bytes]  # (one step, quality) -> bytes
    decode: Callable[[memoryview, ArraySpec], np.ndarray]  # raises anything on bad bytes; the caller words it
    images_only: bool = False  # uint8 [H, W, 3] only

    def check(self, spec: ArraySpec, where: str) -> None:
        if self.images_only and (spec.dtype != "uint8" or len(spec.shape) != 3 or spec.shape[2] != 3):
            raise DataError(f"{where}.codec: '{self.name}' encodes uint8 [H, W, 3] images, not {spec.dtype} {list(spec.shape)}")


CODECS: dict[str, Codec] = {}


def codec(name: str, images_only: bool = False):
    """Register an (encode, decode) pair under `name`: `@codec('zlib')` on a function returning them."""
    def deco(fn):
        enc, dec = fn()
        CODECS[name] = Codec(name, enc, dec, images_only)
        return fn
    return deco


def get_codec(name: str, where: str = "codec") -> Codec:
    if name not in CODECS:
        raise DataError(f"{where}: unknown codec {name[:40]!r}{did_you_mean(name, CODECS)} (known: {', '.join(sorted(CODECS))})")
    return CODECS[name]


def _exact(data: bytes, spec: ArraySpec) -> np.ndarray:
    if len(data) != spec.nbytes:
        raise ValueError(f"{len(data)} bytes, expected {spec.nbytes}")
    return np.frombuffer(data, dtype=spec.dtype).reshape(spec.shape)


@codec("raw")
def _raw():
    return (lambda a, q: np.ascontiguousarray(a).tobytes()), (lambda b, spec: _exact(bytes(b), spec))


@codec("zlib")
def _zlib():
    def decode(b: memoryview, spec: ArraySpec) -> np.ndarray:
        d = zlib.decompressobj()
        out = d.decompress(b, spec.nbytes + 1)  # bounded: a step never inflates past its declared size
        if not d.eof or d.unused_data:
            raise ValueError("the compressed stream does not end where the step ends")
        return _exact(out, spec)

    # level 6 (zlib's default): 15% smaller than level 1 on 64x64 CarRacing frames, 3% larger than level 9 (and faster)
    return (lambda a, q: zlib.compress(np.ascontiguousarray(a).tobytes(), 6)), decode


def _pil_decode(b: memoryview, spec: ArraySpec) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(b)) as im:
        if (im.height, im.width) != spec.shape[:2]:  # checked before decoding: the header may promise anything
            raise ValueError(f"image of {im.height}x{im.width}, expected {spec.shape[0]}x{spec.shape[1]}")
        return np.asarray(im.convert("RGB"))


@codec("png", images_only=True)
def _png():
    return (lambda a, q: encode_image(a, "png", q)), _pil_decode


@codec("jpeg", images_only=True)
def _jpeg():
    return (lambda a, q: encode_image(a, "jpeg", q)), _pil_decode


# ----------------------------------------------------------------------------------------- blocks
def encode_block(steps: np.ndarray, spec: ArraySpec, quality: int = 95) -> bytes:
    """Steps [n, *spec.shape] of spec.dtype -> one block member's bytes."""
    enc = get_codec(spec.codec).encode
    parts = [enc(s, quality) for s in steps]
    offsets = np.cumsum([0] + [len(p) for p in parts], dtype=np.int64)
    if offsets[-1] >= 1 << 32:
        raise DataError(f"a block of {len(steps)} steps encodes to {offsets[-1]} bytes, more than a block can address")
    return MAGIC + np.uint32(len(parts)).tobytes() + offsets.astype("<u4").tobytes() + b"".join(parts)


class Block:
    """A block member, its header checked once; `step(i)` decodes one step."""

    def __init__(self, data: bytes, n: int, spec: ArraySpec, where: str):
        self.spec, self.where = spec, where
        view = memoryview(data)
        head = 8 + 4 * (n + 1)
        if len(data) < head or bytes(view[:4]) != MAGIC:
            raise DataError(f"{where}: not a block member (bad magic or shorter than its header)")
        stored = int(np.frombuffer(view[4:8], "<u4")[0])
        if stored != n:
            raise DataError(f"{where}: block holds {stored} steps, expected {n}")
        offsets = np.frombuffer(view[8:head], "<u4").astype(np.int64)
        if offsets[0] != 0 or (np.diff(offsets) < 0).any() or offsets[-1] != len(data) - head:
            raise DataError(f"{where}: block offsets are not increasing from 0 to the payload's {len(data) - head} bytes")
        self.offsets, self.payload = offsets.tolist(), view[head:]
        self._decode = get_codec(spec.codec).decode

    def step(self, i: int) -> np.ndarray:
        try:
            a = self._decode(self.payload[self.offsets[i]:self.offsets[i + 1]], self.spec)
        except DataError:
            raise
        except Exception as e:  # zlib, PIL and numpy raise several types for bad bytes
            raise DataError(f"{self.where}: step {i} is not a decodable {self.spec.codec} "
                            f"{self.spec.dtype} {list(self.spec.shape)} ({type(e).__name__}: {str(e)[:80]})") from None
        if a.shape != self.spec.shape or a.dtype != self.spec.dtype:
            raise DataError(f"{self.where}: step {i}: {a.dtype} {list(a.shape)}, expected {self.spec.dtype} {list(self.spec.shape)}")
        return a


def block_member(name: str, t0: int) -> str:
    return f"{name}.{t0:06d}.blk"


def block_starts(length: int, block_steps: int) -> range:
    return range(0, length, block_steps)


def blocks_for(steps: Iterable[int], block_steps: int) -> set[int]:
    """The first steps of the blocks that hold `steps`."""
    return {int(t) // block_steps * block_steps for t in steps}
