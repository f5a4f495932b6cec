"""A written shard dataset: its manifest, its card, and its episodes read back.

The manifest is the loader's index: shard names, the episodes in each and their lengths, so an epoch can be
planned (and resumed) without opening a tar. Shard URLs default to the files beside the manifest; a brace
pattern or a `pipe:` URL list can stand in for them, matched to the manifest's shards by file name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unified_action.cards import DataCard, parse_card
from unified_action.cards.schema import MAX_IMAGE_SIDE
from unified_action.data.episode import Episode
from unified_action.data.shard_index import IndexedShard, check_pointer
from unified_action.data.shards import (
    MAX_EPISODE,
    MAX_STEPS,
    READ_LAYOUTS,
    SHARD_RE,
    ShardURL,
    check_frame_sizes,
    iter_samples,
    min_step_bytes,
    sample_actions,
    sample_meta,
    sample_to_episode,
    verify_shard,
)
from unified_action.errors import CardError, DataError, short
from unified_action.tokenization.normalization import Stats

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ShardEntry:
    name: str
    url: str
    episodes: tuple[int, ...]
    lengths: tuple[int, ...]
    bytes: int
    sha256: str
    index: tuple[int, int] | None = None  # layout 2: [data offset, size] of the shard's __index__ member

    def indexed(self) -> bool:
        """Read through the index: a local file beside the manifest, of the size the manifest gives."""
        url = self.url.removeprefix("file://") if isinstance(self.url, str) else ""
        if self.index is None or url.startswith("pipe:") or "://" in url:
            return False
        try:
            return os.path.getsize(url) == self.bytes
        except OSError:
            return False


def read_samples(shard: ShardEntry, keys: set[str], allow_pipe: bool = False,
                 need: Callable[[dict, dict], Iterable[str]] | None = None) -> Iterator[dict]:
    """The samples of `shard` whose key is in `keys`, in shard order, as {'__key__', suffix: bytes}.

    Through the shard's index where it can (`ShardEntry.indexed`): then only meta.json and the members
    `need(sample, meta)` names are read, and '__members__' lists every member the sample has. Otherwise the
    whole samples are read sequentially (`iter_samples`). A sample whose meta.json is bad is yielded without
    the other members, for `sample_meta` to raise on."""
    if not shard.indexed():
        yield from iter_samples(shard.url, allow_pipe, select=lambda f: f.split(".", 1)[0] in keys)
        return
    with IndexedShard(shard.url, list(shard.index), shard.bytes) as f:
        for key in sorted(keys, key=lambda k: f.members(k).get("meta.json", (0, 0))[0]):
            members = f.members(key)
            if not members:
                continue  # the caller reports samples it asked for and did not get
            s = {"__key__": key, "__members__": set(members)}
            if "meta.json" in members:
                s["meta.json"] = f.read(key, "meta.json")
                try:
                    meta = sample_meta(s, f"{shard.url}: {key}")
                except DataError:
                    yield s
                    continue
                wanted = set(need(s, meta)) if need is not None else set(members)
                for suffix in sorted(wanted & set(members), key=lambda m: members[m][0]):
                    s[suffix] = f.read(key, suffix)
            yield s


@dataclass(frozen=True)
class ShardDataset:
    root: Path
    manifest: dict
    card: DataCard
    shards: tuple[ShardEntry, ...]
    # per camera, the frame size (H, W) the dataset declares: what settings.image_size fitted every frame to, or
    # where it kept the source's size (None), the card's camera size as the most a frame may have
    frame_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    frames_exact: bool = True

    def check_frames(self, meta: dict, where: str) -> None:
        """A sample's cameras against `frame_sizes`, before any of its frames is decoded."""
        check_frame_sizes(meta, self.frame_sizes, self.frames_exact, where)

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def frame_every(self) -> int:
        """Steps between stored frames (its card's source.frame_every; each sample's meta.json says it too): what the
        loader aligns clips to before opening a shard."""
        return self.card.header.frame_every

    @property
    def episodes(self) -> int:
        return sum(len(s.episodes) for s in self.shards)

    def stats(self) -> dict | None:
        p = self.root / "stats.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def iter_episodes(self, start: int = 0, stop: int | None = None, allow_pipe: bool = False) -> Iterator[Episode]:
        """Episodes [start, stop) in manifest order; shards wholly outside the range are not opened."""
        first = 0
        for s in self.shards:
            end = first + len(s.episodes)
            lo, hi = max(start, first), end if stop is None else min(stop, end)
            if lo < hi:
                for j, sample in enumerate(iter_samples(s.url, allow_pipe)):
                    if lo <= first + j < hi:
                        where = f"{s.url}: {sample['__key__']}"
                        self.check_frames(sample_meta(sample, where), where)
                        yield sample_to_episode(sample, self.card, where)
            first = end

    def iter_actions(self, allow_pipe: bool = False) -> Iterator[np.ndarray]:
        """Native actions [T, native_dim] per episode; frames are skipped without being decoded."""
        keep = ("meta.json", "action.npy", "reward.npy", "discount.npy", "flags.npy")
        for s in self.shards:
            for sample in iter_samples(s.url, allow_pipe, select=lambda f: f.split(".", 1)[-1] in keep):
                yield sample_actions(sample, self.card, f"{s.url}: {sample['__key__']}")


def is_shard_dataset(path: str | Path) -> bool:
    p = Path(path)
    return (p / MANIFEST).is_file() or (p.name == MANIFEST and p.is_file())


def open_dataset(path: str | Path, shard_urls: list[str] | None = None) -> ShardDataset:
    """A dataset directory (or its manifest.json), with optional shard URLs replacing the local files."""
    p = Path(path)
    mpath = p if p.name == MANIFEST else p / MANIFEST
    if not mpath.is_file():
        raise DataError(f"{mpath}: no manifest; expected a dataset directory written by `uact data convert/record`")
    try:
        manifest = json.loads(mpath.read_text())
        shards_json = manifest["shards"]
        layout = int(manifest["layout"])
    except RecursionError:  # json's own recursion: a list nested 100,000 deep
        raise DataError(f"{mpath}: not a valid manifest (nested too deeply)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{mpath}: not a valid manifest ({type(e).__name__}: {e})") from None
    if layout not in READ_LAYOUTS:
        raise DataError(f"{mpath}: layout: {layout}, this version reads layouts {', '.join(map(str, READ_LAYOUTS))}")
    root = mpath.parent
    card_path = root / f"{manifest.get('card')}.md"
    try:
        card = parse_card(card_path.read_text(), str(card_path))
    except OSError:
        raise DataError(f"{card_path}: missing; a dataset carries its card beside the manifest") from None
    except CardError as e:
        raise DataError(str(e)) from None
    if card.content_hash != manifest.get("card_md_sha256"):
        raise DataError(f"{card_path}: card_md_sha256: the card was edited after the shards were written "
                        f"(manifest has {str(manifest.get('card_md_sha256'))[:12]}, card is {card.content_hash[:12]})")
    try:
        for i, s in enumerate(shards_json):
            _check_shard_entry(s, f"{mpath}: shards[{i}]", min_step_bytes(card))
    except (TypeError, KeyError, AttributeError) as e:
        raise DataError(f"{mpath}: not a valid manifest ({type(e).__name__}: {e})") from None
    urls = {s["name"]: ShardURL(str(root / s["name"]), s["bytes"], s["sha256"]) for s in shards_json}
    if shard_urls is not None:
        urls = _match_urls(mpath, [s["name"] for s in shards_json], shard_urls)
    entries = tuple(ShardEntry(s["name"], urls[s["name"]], tuple(s["episodes"]), tuple(s["lengths"]), int(s["bytes"]),
                               s["sha256"], _index_pointer(s, layout, f"{mpath}: shards[{i}]"))
                    for i, s in enumerate(shards_json) if s["name"] in urls)
    return ShardDataset(root, manifest, card, entries, *_frame_sizes(manifest, card, mpath))


def _frame_sizes(manifest: dict, card: DataCard, mpath: Path) -> tuple[dict[str, tuple[int, int]], bool]:
    """(camera -> frame size, exact) as the manifest's settings.image_size and the card declare them."""
    settings = manifest.get("settings") or {}
    size = settings.get("image_size") if isinstance(settings, dict) else None
    cams = card.header.cameras
    if size is None:  # the source's size was kept: at most what the card's camera gives (the card bounds it)
        return {c.name: (c.height, c.width) for c in cams}, False
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and 0 < v <= MAX_IMAGE_SIDE for v in size)):
        raise DataError(f"{mpath}: settings.image_size: {short(size)}, expected [height, width] in 1..{MAX_IMAGE_SIDE}, or null")
    return {c.name: (size[0], size[1]) for c in cams}, True


def _check_shard_entry(s: dict, where: str, step_bytes: int) -> None:
    """A manifest's shard entry: a plain file name inside the dataset (never a path that leaves it), its counts,
    each bounded before the loader plans clips from them (a length of 10**18 took 21 GB): every length a step
    count a sample may have, and all of them together no more steps than the shard's bytes can hold."""
    name = s["name"]
    if not isinstance(name, str) or "/" in name or "\\" in name or name in (".", "..") or not SHARD_RE.match(name):
        raise DataError(f"{where}.name: {str(name)[:80]!r}, expected a shard file name '<card>-<part>-<seq>.tar' "
                        f"inside the dataset directory")
    if not (_is_int(s["bytes"]) and s["bytes"] >= 0 and isinstance(s["sha256"], str)):
        raise DataError(f"{where}: expected bytes (an integer >= 0) and sha256 (str)")
    episodes, lengths = _int_list(s, "episodes", 0, MAX_EPISODE, where), _int_list(s, "lengths", 1, MAX_STEPS, where)
    if len(episodes) != len(lengths):
        raise DataError(f"{where}: {len(episodes)} episodes and {len(lengths)} lengths, expected one length per episode")
    if sum(lengths) * step_bytes > s["bytes"]:
        raise DataError(f"{where}.lengths: {sum(lengths)} steps need at least {sum(lengths) * step_bytes} bytes (actions, "
                        f"rewards, flags), more than the shard's {s['bytes']}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_list(s: dict, field: str, lo: int, hi: int, where: str) -> list[int]:
    values = s[field]
    if not isinstance(values, list):
        raise DataError(f"{where}.{field}: {short(values)}, expected a list of integers")
    for i, v in enumerate(values):
        if not (_is_int(v) and lo <= v <= hi):
            raise DataError(f"{where}.{field}[{i}]: {short(v)}, expected an integer in {lo}..{hi}")
    return values


def _index_pointer(s: dict, layout: int, where: str) -> tuple[int, int] | None:
    if layout < 2:
        return None
    if "index" not in s:
        raise DataError(f"{where}: index: missing; a layout-2 manifest gives each shard's index as [offset, size]")
    return check_pointer(s["index"], int(s["bytes"]), where)


def verify_dataset(ds: ShardDataset, log=lambda _: None) -> list[str]:
    """Every local shard's size and sha256 against the manifest -> one line per shard that differs."""
    bad = []
    for s in ds.shards:
        problem = verify_shard(s.url)
        log(f"{s.name}: {problem or 'ok'}")
        if problem:
            bad.append(f"{s.url}: {problem}")
    return bad


def _match_urls(mpath: Path, names: list[str], urls: list[str]) -> dict[str, str]:
    """Map shard file names to the given URLs ('.../pong-0000-00001.tar', 'pipe:curl -s http://x/pong-0000-00001.tar')."""
    out = {}
    for url in urls:
        tail = url.rstrip(" -|").rsplit("/", 1)[-1].rsplit(" ", 1)[-1]
        if tail not in names:
            raise DataError(f"{url}: matches no shard of {mpath} (expected one of {names[:3]}...)")
        out[tail] = url
    return out


def expand_urls(pattern: str) -> list[str]:
    """Brace patterns as webdataset writes them: 'd/pong-0000-{00000..00009}.tar', several joined with '::'."""
    from braceexpand import braceexpand

    return [u for part in pattern.split("::") for u in braceexpand(part)]


def shard_episodes(path: str | Path, card: DataCard, episodes: tuple[int, int] | None = None) -> tuple[list, Stats | None]:
    """Native action episodes of a shard dataset (frames are not decoded) and its unified statistics.

    `episodes` (start, stop): only those, in manifest order, and no statistics (the fit computes them over these
    episodes): the dataset's stats.json covers every episode, which a few-shot job (uact finetune) must not see."""
    from itertools import islice

    from tqdm import tqdm

    ds = open_dataset(path)
    if ds.card.header.action != card.header.action:
        raise DataError(f"{ds.root / (ds.name + '.md')}: action: the shards were written with another action mapping than {card.source_path}")
    lo, hi = episodes or (0, ds.episodes)
    actions = islice(ds.iter_actions(), lo, hi)
    read = list(tqdm(actions, total=hi - lo, desc=f"reading {ds.name} shards", unit="ep", leave=False))
    stats = ds.stats() if episodes is None else None
    return read, (Stats.from_json(stats["unified"]) if stats else None)
