"""Layout 1 datasets for tests, made from a layout-2 one exactly as the layout-1 writer wrote them: one PNG member
per frame (PIL, compress_level 3), meta.json with layout 1, webdataset's TarWriter with mtime 0, no index."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import webdataset as wds

from unified_action.data.dataset import open_dataset
from unified_action.data.frames import encode_image
from unified_action.data.shards import iter_samples, sample_frames, sample_meta


def to_layout1(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    for entry in manifest["shards"]:
        path = dst / entry["name"]
        samples = list(iter_samples(str(src / entry["name"])))
        with open(path, "wb") as f, wds.TarWriter(f, encoder=False, mtime=0) as w:
            for s in samples:
                meta = sample_meta(s, s["__key__"])
                T = int(meta["length"])
                old = {k: s[k] for k in s if not k.startswith("_") and not k.endswith(".blk") and k != "meta.json"}
                for cam in meta["cameras"]:
                    for t, frame in enumerate(sample_frames(s, cam, range(T), "")):
                        old[f"{cam}.{t:06d}.png"] = encode_image(frame, "png")
                meta1 = {k: v for k, v in meta.items() if k not in ("__specs__", "arrays", "block_steps", "aspect")}
                w.write({"__key__": s["__key__"], "meta.json": json.dumps(meta1 | {"layout": 1, "image_format": "png"}).encode(),
                         **old})
        data = path.read_bytes()
        entry.pop("index")
        entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    manifest["layout"] = 1
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    assert open_dataset(dst).manifest["layout"] == 1
    return dst


def dataset_of(shard_data, layout: int):
    """The conftest's CarRacing dataset in layout 2 (as written today) or 1 (as written before)."""
    return shard_data["carracing" if layout == 2 else "carracing_layout1"]
