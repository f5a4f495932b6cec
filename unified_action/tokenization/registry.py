"""The tokenizer registry: a directory of registered embodiment tokenizers, one subdirectory each.

    tokenizers/<name>/spec.json      ids, slots, kind, scale, lengths, held-out report (TokenizerSpec)
                      stats.json     per-dimension statistics (normalization)
                      bpe.model      the kind's learned model: a sentencepiece BPE (kind 'fast' only)
                      card.md        the data card it was fitted from, byte for byte
                      manifest.json  sha256 of each file and the tokenizer's content hash

Registration writes into a temporary directory and renames it into place under a lock, so a failure or a
kill leaves nothing behind and two registrations never take the same ids. Loading checks every file
against the manifest and refuses a tokenizer whose files changed since registration.

Location: `--registry DIR`, else $UACT_TOKENIZERS, else ./tokenizers (the repository's own registry).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from unified_action.cards import DataCard, parse_card
from unified_action.errors import RegistryError, TokenizerError, did_you_mean
from unified_action.tokenization.fitting import Log, fit_tokenizer
from unified_action.tokenization.kinds import get_kind, require_valid_card
from unified_action.tokenization.normalization import Stats
from unified_action.tokenization.tokenizer import ActionTokenizer, TokenizerSpec
from unified_action.tokenization.vocabulary import BpeBlock, Vocabulary

REGISTRY_ENV = "UACT_TOKENIZERS"
DEFAULT_REGISTRY = Path("tokenizers")
FILES = ("spec.json", "stats.json", "card.md", "bpe.model")


def default_registry_path() -> Path:
    return Path(os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_hash(file_hashes: dict[str, str]) -> str:
    """One hash over every file of a tokenizer: what checkpoints record and compare."""
    return _sha256("".join(f"{k}:{v}\n" for k, v in sorted(file_hashes.items())).encode())


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class Registry:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_registry_path()

    # ------------------------------------------------------------------ reading
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith(".") and (p / "manifest.json").is_file())

    def _dir(self, name: str) -> Path:
        d = self.root / name
        if not (d / "manifest.json").is_file():
            raise RegistryError(f"{self.root}: no tokenizer named '{name}'{did_you_mean(name, self.names())}")
        return d

    def _manifest(self, name: str) -> dict:
        """manifest.json of a tokenizer, checked for shape: {'content_hash': str, 'files': {file: sha256}}."""
        path = self._dir(name) / "manifest.json"
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as e:
            raise RegistryError(f"{path}: unreadable manifest ({type(e).__name__})") from None
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise RegistryError(f"{path}: files: expected a mapping of file name to sha256, got {type(files).__name__}")
        unknown = sorted(set(files) - set(FILES))
        missing = [f for f in FILES[:3] if f not in files]
        if unknown or missing:
            raise RegistryError(f"{path}: files: " + (f"unknown file '{unknown[0]}'" if unknown else f"'{missing[0]}' is not listed")
                                + f"; a tokenizer has {', '.join(FILES[:3])} (and bpe.model for a kind with a learned model, e.g. 'fast')")
        if not isinstance(manifest.get("content_hash"), str):
            raise RegistryError(f"{path}: content_hash: expected a sha256 string")
        return manifest

    def _read_verified(self, name: str) -> tuple[dict[str, bytes], str]:
        """-> (file name -> bytes, content hash), every file checked against manifest.json."""
        d = self._dir(name)
        manifest = self._manifest(name)
        expected = manifest["files"]
        files = {}
        for fname, digest in expected.items():
            p = d / fname
            if not p.is_file():
                raise RegistryError(f"{p}: missing, but listed in the manifest")
            data = p.read_bytes()
            if _sha256(data) != digest:
                raise RegistryError(f"{p}: changed since registration (sha256 differs from manifest.json); "
                                    f"re-register with `uact tokenizer register --force`")
            files[fname] = data
        if manifest.get("content_hash") != content_hash(expected):
            raise RegistryError(f"{d / 'manifest.json'}: content_hash does not match its file hashes")
        return files, manifest["content_hash"]

    def _spec_of(self, name: str, files: dict[str, bytes]) -> TokenizerSpec:
        try:
            spec = TokenizerSpec.from_json(json.loads(files["spec.json"]))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            raise RegistryError(f"{self.root / name / 'spec.json'}: not a tokenizer spec ({type(e).__name__}: {str(e)[:120]})") from None
        if spec.name != name:
            raise RegistryError(f"{self.root / name / 'spec.json'}: name: '{spec.name}', expected '{name}' (its directory)")
        return spec

    def spec(self, name: str) -> TokenizerSpec:
        return self._spec_of(name, self._read_verified(name)[0])

    def load(self, name: str) -> ActionTokenizer:
        files, digest = self._read_verified(name)
        spec = self._spec_of(name, files)
        try:  # only loading needs the kind's class: listing and the vocabulary read the spec alone
            kind = get_kind(spec.kind)
        except TokenizerError as e:
            raise RegistryError(f"{self.root / name / 'spec.json'}: kind: {e}") from None
        where = str(self.root / name / "card.md")
        try:
            card = require_valid_card(parse_card(files["card.md"].decode(), where))
        except UnicodeDecodeError:
            raise RegistryError(f"{where}: not UTF-8 text") from None
        try:
            stats = Stats.from_json(json.loads(files["stats.json"]))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            raise RegistryError(f"{self.root / name / 'stats.json'}: {type(e).__name__}: {str(e)[:120]}") from None
        if kind.has_model:
            try:
                kind.check_model(files.get("bpe.model"), spec)
            except Exception as e:  # sentencepiece raises RuntimeError, OSError or its own types on garbage
                raise RegistryError(f"{self.root / name / 'bpe.model'}: not a {kind.model_name} ({type(e).__name__})") from None
        try:
            tok = ActionTokenizer(spec, stats, files.get("bpe.model"), card)
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise RegistryError(f"{self.root / name / 'spec.json'}: does not fit its stats and card ({type(e).__name__}: {str(e)[:120]})") from None
        tok.content_hash = digest
        return tok

    def content_hash(self, name: str) -> str:
        return self._manifest(name)["content_hash"]

    def fitted_from(self, name: str) -> dict | None:
        """Which episodes of which dataset the tokenizer was fitted from, where registration was told (else None).
        Kept in manifest.json beside the hashes, not in the content hash: it says where, not what."""
        value = self._manifest(name).get("fitted_from")
        return value if isinstance(value, dict) else None

    def vocabulary(self) -> Vocabulary:
        vocab = Vocabulary()
        for name in self.names():
            spec = self.spec(name)
            known = vocab.embodiments.setdefault(spec.embodiment, spec.embodiment_token)
            if known != spec.embodiment_token:
                raise RegistryError(f"{self.root / name / 'spec.json'}: embodiment '{spec.embodiment}' has token "
                                    f"{spec.embodiment_token}, another tokenizer gives it {known}")
            if spec.bpe_start is not None:
                vocab.bpe_blocks.append(BpeBlock(name, spec.bpe_start, spec.bpe_size))
        vocab.check()
        return vocab

    # ------------------------------------------------------------------ writing
    def register(self, card: DataCard, episodes: list[np.ndarray], *, force: bool = False,
                 heldout_fraction: float = 0.1, seed: int = 0, log: Log = lambda _: None,
                 stats: Stats | None = None, fitted_from: dict | None = None) -> ActionTokenizer:
        """`fitted_from`: where the episodes come from ({'dataset', 'manifest_sha256', 'episodes': [lo, hi]}),
        recorded so a fine-tuning job can refuse a tokenizer fitted from other episodes than its own."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(self.root / ".lock"), timeout=600):
                return self._register_locked(card, episodes, force, heldout_fraction, seed, log, stats, fitted_from)
        except Timeout:
            raise RegistryError(f"{self.root}/.lock: another registration holds the registry lock") from None

    def _clean_debris(self) -> None:
        """What a registration killed mid-write left (under the lock, so none is in progress): `.tmp-*` directories
        are deleted; an `.old-<name>-*` whose tokenizer is missing is put back (the kill fell between two renames)."""
        for p in self.root.glob(".old-*"):
            name = p.name[len(".old-"):].rsplit("-", 1)[0]
            if p.is_dir() and not (self.root / name).exists() and (p / "manifest.json").is_file():
                p.rename(self.root / name)
            else:
                shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)

    def _register_locked(self, card, episodes, force, heldout_fraction, seed, log, stats, fitted_from=None) -> ActionTokenizer:
        self._clean_debris()
        name = card.name
        exists = (self.root / name / "manifest.json").is_file()
        if exists and not force:
            raise RegistryError(f"{self.root / name}: a tokenizer named '{name}' is already registered; "
                                f"pass --force to replace it (its embodiment token is kept)")
        vocab = self.vocabulary()
        old = self.spec(name) if exists else None
        token = vocab.embodiments.get(card.embodiment)
        if token is None:
            token = vocab.next_embodiment_id()
        others = [b for b in vocab.bpe_blocks if b.owner != name]
        start = old.bpe_start if old is not None and old.bpe_start is not None else vocab.next_bpe_start()
        tok, bpe_model = fit_tokenizer(card, episodes, embodiment_token=token, bpe_start=start,
                                       heldout_fraction=heldout_fraction, seed=seed, log=log, stats=stats)
        if tok.spec.bpe_start is not None:  # the kind's model took a block of BPE ids (fast)
            tok = self._place_bpe(tok, bpe_model, old, others)
        self._write_atomically(name, tok, bpe_model, card, fitted_from)
        log(f"registered '{name}' in {self.root} (embodiment token {token})")
        return self.load(name)

    @staticmethod
    def _place_bpe(tok: ActionTokenizer, bpe_model: bytes, old: TokenizerSpec | None, others: list[BpeBlock]) -> ActionTokenizer:
        """Keep a re-registered tokenizer in its own block when it still fits there, else move it to the end.

        Ids are offsets from the block start, so moving a block changes no measured figure of the report.
        """
        spec = tok.spec
        if old is None or old.bpe_start is None:
            return tok
        if spec.bpe_size <= old.bpe_size:
            return ActionTokenizer(replace(spec, bpe_size=old.bpe_size), tok.stats, bpe_model, tok.card)
        if any(b.start < spec.bpe_start + spec.bpe_size and spec.bpe_start < b.stop for b in others):
            end = max(b.stop for b in others)
            return ActionTokenizer(replace(spec, bpe_start=end), tok.stats, bpe_model, tok.card)
        return tok

    def _write_atomically(self, name: str, tok: ActionTokenizer, bpe_model: bytes | None, card: DataCard,
                          fitted_from: dict | None = None) -> None:
        files = {
            "spec.json": (json.dumps(tok.spec.to_json(), indent=1) + "\n").encode(),
            "stats.json": (json.dumps(tok.stats.to_json(), indent=1) + "\n").encode(),
            "card.md": card.text.encode(),
        }
        if bpe_model is not None:
            files["bpe.model"] = bpe_model
        hashes = {k: _sha256(v) for k, v in files.items()}
        manifest = {"content_hash": content_hash(hashes), "files": hashes, **({"fitted_from": fitted_from} if fitted_from else {})}
        files["manifest.json"] = (json.dumps(manifest, indent=1) + "\n").encode()
        tmp = self.root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        trash = self.root / f".old-{name}-{uuid.uuid4().hex[:8]}"
        final = self.root / name
        try:
            tmp.mkdir()
            for fname, data in files.items():
                _write(tmp / fname, data)
            if final.exists():
                final.rename(trash)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(trash, ignore_errors=True)
