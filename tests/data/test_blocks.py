"""Blocks of per-step arrays: exact round trips for every lossless codec, and bad bytes as one-line DataErrors
with bounded work (a step never inflates past its declared size)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from unified_action.data.blocks import MAGIC, ArraySpec, Block, blocks_for, encode_block
from unified_action.errors import DataError

RNG = np.random.default_rng(0)
FRAMES = RNG.integers(0, 255, (7, 12, 16, 3), dtype=np.uint8)
FRAMES[:, :6] = 40  # some structure, as in real frames


@pytest.mark.parametrize("codec", ["zlib", "png", "raw"])
def test_lossless_codecs_round_trip_exactly(codec):
    spec = ArraySpec("uint8", (12, 16, 3), codec)
    blk = Block(encode_block(FRAMES, spec), len(FRAMES), spec, "x")
    assert all(np.array_equal(blk.step(i), FRAMES[i]) for i in range(len(FRAMES)))


def test_jpeg_is_close_and_other_dtypes_round_trip():
    spec = ArraySpec("uint8", (12, 16, 3), "jpeg")
    smooth = np.repeat(np.linspace(0, 255, 16, dtype=np.uint8)[None, None, :, None], 12, 1).repeat(3, 3).repeat(2, 0)
    got = Block(encode_block(smooth, spec, quality=95), 2, spec, "x").step(1)
    assert np.abs(got.astype(int) - smooth[1]).max() < 12
    lat = RNG.standard_normal((5, 4, 2, 2)).astype(np.float16)  # e.g. cached latents
    spec = ArraySpec("float16", (4, 2, 2), "zlib")
    blk = Block(encode_block(lat, spec), 5, spec, "x")
    assert np.array_equal(np.stack([blk.step(i) for i in range(5)]), lat)


def test_blocks_for_steps():
    assert blocks_for([0, 5, 31, 32, 70], 32) == {0, 32, 64}


def _block(codec="zlib"):
    spec = ArraySpec("uint8", (12, 16, 3), codec)
    return bytearray(encode_block(FRAMES, spec)), spec


@pytest.mark.parametrize("damage, match", [
    (lambda b: b.__setitem__(slice(0, 4), b"NOPE"), "not a block member"),
    (lambda b: b.__setitem__(slice(4, 8), np.uint32(6).tobytes()), "holds 6 steps, expected 7"),
    (lambda b: b.__setitem__(slice(12, 16), np.uint32(1 << 30).tobytes()), "offsets are not increasing"),
    (lambda b: b.__delitem__(slice(-3, None)), "offsets are not increasing"),
    (lambda b: b.__delitem__(slice(10, None)), "shorter than its header"),
])
def test_bad_headers_are_one_line_errors(damage, match):
    data, spec = _block()
    damage(data)
    with pytest.raises(DataError, match=match) as e:
        Block(bytes(data), 7, spec, "shard.tar: 00000003: top_down.000000.blk")
    assert "shard.tar: 00000003" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("codec", ["zlib", "png"])
def test_undecodable_steps_name_the_step(codec):
    data, spec = _block(codec)
    head = len(MAGIC) + 4 + 4 * 8
    offsets = np.frombuffer(bytes(data[8:head]), "<u4")
    data[head + offsets[2] + 20] ^= 0xFF  # inside step 2
    data[head + offsets[2] + 21] ^= 0xFF
    blk = Block(bytes(data), 7, spec, "b")
    blk.step(1)  # the other steps still decode
    with pytest.raises(DataError, match=rf"b: step 2 is not a decodable {codec}"):
        blk.step(2)


def test_a_step_that_inflates_past_its_size_is_refused_without_inflating_it():
    spec = ArraySpec("uint8", (12, 16, 3), "zlib")
    bomb = zlib.compress(b"\0" * (64 << 20), 9)  # 64 MiB of zeros in ~64 KiB
    data = MAGIC + np.uint32(1).tobytes() + np.array([0, len(bomb)], "<u4").tobytes() + bomb
    with pytest.raises(DataError, match="step 0 is not a decodable zlib"):
        Block(data, 1, spec, "b").step(0)


@pytest.mark.parametrize("spec, match", [
    ({"dtype": "object", "shape": [2], "codec": "zlib"}, "dtype: 'object', expected one of"),
    ({"dtype": "uint8", "shape": [0, 3], "codec": "zlib"}, "shape: .* expected 1 to 8 positive ints"),
    ({"dtype": "float64", "shape": [1 << 20, 1 << 20], "codec": "zlib"}, "bytes a step, more than"),
    ({"dtype": "float32", "shape": [4, 4, 3], "codec": "png"}, "'png' encodes uint8 \\[H, W, 3\\] images"),
    ({"dtype": "uint8", "shape": [4, 4, 3], "codec": "zlb"}, "unknown codec 'zlb' \\(did you mean 'zlib'"),
    ({"shape": [4]}, "expected \\{dtype, shape, codec\\}"),
])
def test_array_specs_are_checked(spec, match):
    with pytest.raises(DataError, match=match):
        ArraySpec.from_json(spec, "meta.json: arrays.x")
