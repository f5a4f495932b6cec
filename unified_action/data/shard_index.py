"""A shard's index: where each member's bytes are, so a reader seeks to the members it needs (layout 2).

The index is the shard's last member, `__index__` (a name tar readers and webdataset skip), holding JSON

    {"version": 1, "members": [[name, data offset, size], ...]}     in file order

and the manifest (and the shard's sidecar) records where the index itself is: `"index": [data offset, size]`.
The shard stays one self-contained file whose sha256 covers its index.

Nothing in an index is trusted: the pointer must lie inside the file and be small; entries must be well-typed,
tar-aligned, in order, non-overlapping and inside the file; and every member read through it is checked against
its own tar header (name and size), so an index that no longer matches its tar (a shard rewritten by hand) is a
DataError, never wrong data. Readers use the index only for local shards whose size matches the manifest; any
other shard (a `pipe:` URL, a size mismatch, layout 1) is read sequentially, as before.
"""

from __future__ import annotations

import json
import os
import re
import tarfile

from unified_action.errors import DataError

INDEX_MEMBER = "__index__"
INDEX_VERSION = 1
MAX_INDEX_BYTES = 64 << 20  # ~1M members: far past any shard's size target; bounds what a hostile pointer reads
MEMBER_RE = re.compile(r"^\d{8}\.[A-Za-z0-9_.\-]{1,200}$")
BLOCK = tarfile.BLOCKSIZE


def check_pointer(pointer, file_bytes: int, where: str) -> tuple[int, int]:
    """The manifest's `index: [offset, size]`, checked against the shard's size."""
    if (not isinstance(pointer, (list, tuple)) or len(pointer) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in pointer)):
        raise DataError(f"{where}: index: {str(pointer)[:60]}, expected [data offset, size] (two ints)")
    off, size = pointer
    if not (off >= BLOCK and off % BLOCK == 0 and 0 < size <= MAX_INDEX_BYTES and off + size <= file_bytes):
        raise DataError(f"{where}: index: [{off}, {size}] is not a tar member's data inside the shard's {file_bytes} bytes "
                        f"(offset a multiple of {BLOCK}, size 1..{MAX_INDEX_BYTES})")
    return off, size


def _header(f, name: str, data_offset: int, where: str) -> tarfile.TarInfo:
    f.seek(data_offset - BLOCK)
    buf = f.read(BLOCK)
    try:
        return tarfile.TarInfo.frombuf(buf, "utf-8", "surrogateescape")
    except tarfile.HeaderError as e:
        raise DataError(f"{where}: index entry '{name[:80]}': no tar header before offset {data_offset} ({e}): "
                        f"the index does not match the tar") from None


def read_member_at(f, name: str, offset: int, size: int, where: str) -> bytes:
    """A member's bytes, after checking its own tar header names it and gives this size."""
    info = _header(f, name, offset, where)
    # a name past 100 characters is cut in the ustar header (the full one sits in a PAX header before it)
    if not info.name or info.name != name[:len(info.name)] or info.size != size:
        raise DataError(f"{where}: index entry '{name[:80]}' ({size} bytes at {offset}) does not match the tar member there "
                        f"('{info.name[:80]}', {info.size} bytes): the shard was rewritten after its index")
    data = f.read(size)
    if len(data) != size:
        raise DataError(f"{where}: member '{name[:80]}' ends past the end of the file")
    return data


def read_index(f, pointer, file_bytes: int, where: str) -> dict[str, tuple[int, int]]:
    """{member name: (data offset, size)} from an open shard, every entry checked."""
    off, size = check_pointer(pointer, file_bytes, where)
    raw = read_member_at(f, INDEX_MEMBER, off, size, where)
    try:
        doc = json.loads(raw)
        version, members = doc["version"], doc["members"]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{where}: {INDEX_MEMBER}: not a shard index ({type(e).__name__})") from None
    if version != INDEX_VERSION or not isinstance(members, list):
        raise DataError(f"{where}: {INDEX_MEMBER}: version {str(version)[:20]}, expected {INDEX_VERSION} with a members list")
    out: dict[str, tuple[int, int]] = {}
    end = 0  # where the previous member's data ended: entries are in file order and never overlap
    for i, e in enumerate(members):
        ok = (isinstance(e, list) and len(e) == 3 and isinstance(e[0], str) and MEMBER_RE.match(e[0])
              and all(isinstance(v, int) and not isinstance(v, bool) for v in e[1:]))
        if not ok:
            raise DataError(f"{where}: {INDEX_MEMBER}: members[{i}]: {str(e)[:80]}, expected [name '<key>.<suffix>', offset, size]")
        name, o, s = e
        if o % BLOCK or o < end + BLOCK or s < 0 or o + s > off - BLOCK:
            raise DataError(f"{where}: {INDEX_MEMBER}: members[{i}] '{name[:60]}': [{o}, {s}] is not a member's data "
                            f"after the previous one and before the index")
        if name in out:
            raise DataError(f"{where}: {INDEX_MEMBER}: member '{name[:60]}' is listed twice")
        out[name] = (o, s)
        end = o + s
    return out


class IndexedShard:
    """An open local shard read through its index: `members(key)` lists a sample's suffixes, `read(key, suffix)`."""

    def __init__(self, path: str, pointer, file_bytes: int):
        self.path = path
        if os.path.getsize(path) != file_bytes:
            raise DataError(f"{path}: {os.path.getsize(path)} bytes, manifest.json says {file_bytes}")
        self.f = open(path, "rb")  # noqa: SIM115  (held across reads; close() or the context closes it)
        try:
            entries = read_index(self.f, pointer, file_bytes, path)
        except BaseException:
            self.f.close()
            raise
        self.samples: dict[str, dict[str, tuple[int, int]]] = {}
        for name, pos in entries.items():
            key, suffix = name.split(".", 1)
            self.samples.setdefault(key, {})[suffix] = pos

    def members(self, key: str) -> dict[str, tuple[int, int]]:
        return self.samples.get(key, {})

    def read(self, key: str, suffix: str) -> bytes:
        off, size = self.samples[key][suffix]
        return read_member_at(self.f, f"{key}.{suffix}", off, size, self.path)

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> IndexedShard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
