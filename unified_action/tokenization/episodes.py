"""Episodes of native actions from numpy files, and fixed-length chunks cut from them.

An episode file holds one episode of native actions:
- `.npy`: an array [T, native_dim] flattened in card order ([T] when the card has one native value);
- `.npz`: one array per action field, keyed by the card's field path (`action/world_vector`: [T, 3]),
  or a single `action` array [T, native_dim].
`--data` takes one such file or a directory of them (searched recursively, in sorted order).
Files are read with allow_pickle=False: loading data never runs code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from unified_action.cards import DataCard
from unified_action.cards.mapping import field_size
from unified_action.errors import DataError

EPISODE_SUFFIXES = (".npy", ".npz")


def episode_files(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or directory of episodes")
    files = sorted(p for p in path.rglob("*") if p.suffix in EPISODE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{path}: no .npy or .npz episode files found")
    return files


def load_episode(path: Path, card: DataCard) -> np.ndarray:
    """-> native actions [T, native_dim] float64, checked against the card."""
    n = card.mapping.native_dim
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                arrays = {k: loaded[k] for k in loaded.files}
        else:
            arrays = {"": loaded}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot be read as a numpy file ({e})") from None
    if "" in arrays:
        x = arrays[""]
        if x.ndim == 1 and n == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != n:
            raise DataError(f"{path}: array of shape {list(x.shape)}, expected [T, {n}] native actions in card order")
    else:
        x = _from_npz(path, arrays, card)
    if len(x) == 0:
        raise DataError(f"{path}: episode has no steps")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: actions of dtype {x.dtype}, expected numbers")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        step = int(np.argmin(np.isfinite(x).all(1)))
        raise DataError(f"{path}: step {step} holds NaN or infinite actions")
    return x


def _from_npz(path: Path, arrays: dict[str, np.ndarray], card: DataCard) -> np.ndarray:
    fields = card.header.action
    if all(f.path in arrays for f in fields):
        parts = []
        for f in fields:
            a = arrays[f.path]
            if a.ndim < 1 or int(np.prod(a.shape[1:], dtype=np.int64)) != field_size(f):
                want = ", ".join(map(str, f.shape)) or "(scalar)"
                raise DataError(f"{path}: key '{f.path}' has shape {list(a.shape)}, expected [T, {want}]")
            parts.append(a.reshape(len(a), -1))
        if len({len(p) for p in parts}) != 1:
            raise DataError(f"{path}: action fields have different numbers of steps {[len(p) for p in parts]}")
        return np.concatenate(parts, axis=1)
    if list(arrays) == ["action"]:
        a, n = arrays["action"], card.mapping.native_dim
        x = a.reshape(len(a), -1) if a.ndim >= 1 else a
        if x.ndim != 2 or x.shape[1] != n:
            raise DataError(f"{path}: key 'action' has shape {list(a.shape)}, expected [T, {n}] native actions in card order")
        return x
    missing = next(f.path for f in fields if f.path not in arrays)
    raise DataError(f"{path}: key '{missing}' is missing (expected keys {[f.path for f in fields]}, or one 'action' array)")


def load_episodes(path: str | Path, card: DataCard, progress: bool = False) -> list[np.ndarray]:
    files = episode_files(path)
    if progress:
        from tqdm import tqdm

        files = tqdm(files, desc=f"reading {card.name} episodes", unit="ep", leave=False)
    return [load_episode(p, card) for p in files]


def window_starts(length_of_episode: int, length: int, stride: int) -> list[int]:
    """Starts of windows every `stride` steps plus one ending at the last step (one for a short episode)."""
    last = max(0, length_of_episode - length)
    starts = list(range(0, last + 1, stride))
    return starts if starts[-1] == last else starts + [last]


def chunk_episode(x: np.ndarray, length: int, stride: int, starts: list[int] | None = None) -> np.ndarray:
    """[T, D] -> [n, length, D] windows at `starts` (default: window_starts).

    An episode shorter than `length` is padded by holding its last action, the usual convention for the
    end of an action chunk (the robot stays where it ended).
    """
    if len(x) < length:
        x = np.concatenate([x, np.repeat(x[-1:], length - len(x), axis=0)])
    if starts is None:
        starts = window_starts(len(x), length, stride)
    windows = np.lib.stride_tricks.sliding_window_view(x, length, axis=0)  # [n, D, length]
    return np.ascontiguousarray(windows[starts].transpose(0, 2, 1))
