"""Frames: resizing a camera to the training size without squashing it, and single-image PNG/JPEG coding.

Aspect modes, when a camera's aspect ratio differs from the target size's (a 150x200 camera to 64x64):

- `pad` (the default): scale the whole frame to fit inside the target, centred on black bars (letterbox).
  Nothing is cut off and geometry survives, so whatever an action moves stays in view: a gripper at the edge
  of a wrist camera, the roadside of a driving camera. The cost is the bars: at 4:3, a quarter of a square
  frame's pixels carry no content (constant, so trivial to predict, but they cost compute).
- `crop`: cut the centre to the target's aspect ratio, then scale. Geometry survives and every pixel carries
  content, at the price of the edges (at 4:3, a quarter of the width). Choose it where the scene's action is
  known to be central.
- `stretch`: scale each axis on its own (what layout 1 did); circles become ellipses. Kept so that datasets
  written before can be reproduced.

The default is `pad` because dropping content cannot be undone and is silent, while padding only costs pixels.
"""

from __future__ import annotations

import io

import numpy as np

from unified_action.errors import DataError, did_you_mean

ASPECTS = ("pad", "crop", "stretch")
DEFAULT_ASPECT = "pad"


def check_aspect(aspect: str, where: str = "aspect") -> str:
    if aspect not in ASPECTS:
        raise DataError(f"{where}: '{str(aspect)[:40]}'{did_you_mean(str(aspect), ASPECTS)}, expected one of {', '.join(ASPECTS)}")
    return aspect


def _resize(frame: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((w, h), Image.BILINEAR, reducing_gap=None))


def fit_box(H: int, W: int, h: int, w: int, aspect: str) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """(source box top, left, height, width; target box top, left, height, width) for one aspect mode."""
    if aspect == "stretch" or H * w == W * h:
        return (0, 0, H, W), (0, 0, h, w)
    if aspect == "crop":
        if W * h > H * w:  # wider than the target: keep the middle columns
            cw = max(1, round(H * w / h))
            return (0, (W - cw) // 2, H, cw), (0, 0, h, w)
        ch = max(1, round(W * h / w))
        return ((H - ch) // 2, 0, ch, W), (0, 0, h, w)
    s = min(h / H, w / W)  # pad: the whole frame scaled to fit, centred
    rh, rw = min(h, max(1, round(H * s))), min(w, max(1, round(W * s)))
    return (0, 0, H, W), ((h - rh) // 2, (w - rw) // 2, rh, rw)


def resize_frames(frames: np.ndarray, size: tuple[int, int] | None, aspect: str = DEFAULT_ASPECT) -> np.ndarray:
    """uint8 [T, H, W, 3] -> [T, h, w, 3] with PIL's antialiased bilinear filter, keeping the aspect ratio as
    `aspect` says (module docstring); None, or frames already of the size, are returned as they are."""
    if size is None or frames.shape[1:3] == tuple(size):
        return frames
    check_aspect(aspect)
    h, w = size
    T, H, W = frames.shape[:3]
    (st, sl, sh, sw), (tt, tl, th, tw) = fit_box(H, W, h, w, aspect)
    out = np.zeros((T, h, w, 3), np.uint8)
    for i, f in enumerate(frames):
        out[i, tt:tt + th, tl:tl + tw] = _resize(np.ascontiguousarray(f[st:st + sh, sl:sl + sw]), th, tw)
    return out


def encode_image(frame: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    """One uint8 [H, W, 3] frame as PNG or JPEG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(frame).save(buf, format="PNG", compress_level=3)  # ~2x faster than 6, ~5% larger
    else:
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))
