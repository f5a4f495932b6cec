"""Export a checkpoint as consolidated safetensors weights that travel with their tokenizers' identity, and load them.

An export directory holds:
    model.safetensors   fp32 weights gathered from the ZeRO partitions (any stage, any process count)
    config.json         the model config, the vocabulary version and size, the embodiment token ids and the
                        content hash of every tokenizer the model was trained with
    README.md           a model card: what it was trained on, how to load it

Loading checks the vocabulary version and every tokenizer hash against the registry it will be used with
and refuses a mismatch naming the tokenizer: normalization stats that silently changed between training and
use are the most reported failure of the field's released models (see ANCHORS.md).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from unified_action.errors import TrainingError
from unified_action.tokenization import Registry
from unified_action.tokenization.vocabulary import VOCAB_VERSION
from unified_action.training.checkpoint import MARKER, TAG

WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
FORMAT_VERSION = 1


def export_meta(model_cfg: dict, registry: Registry, tokenizer_names: list[str], run: dict) -> dict:
    """What a checkpoint and an export record about the model and the tokenizers it was trained with."""
    vocab = registry.vocabulary()
    return {
        "format_version": FORMAT_VERSION,
        "model": model_cfg,
        "vocab_version": vocab.version,
        "vocab_size": vocab.size,
        "embodiments": {n: registry.spec(n).embodiment_token for n in sorted(tokenizer_names)},
        "tokenizers": {n: registry.content_hash(n) for n in sorted(tokenizer_names)},
        "run": run,
    }


def consolidated_state_dict(ckpt: Path) -> dict[str, torch.Tensor]:
    """fp32 weights of a complete checkpoint, gathered from every process's ZeRO partition (DeepSpeed's zero_to_fp32,
    its every file loaded weights-only: a pickled payload is refused naming its file)."""
    from unified_action.training.safe_load import weights_only_zero_to_fp32

    with weights_only_zero_to_fp32() as zero_to_fp32:
        return zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag=TAG)


def export_checkpoint(ckpt: str | Path, out: str | Path) -> Path:
    """Write the export of a complete checkpoint (or a run directory: its latest) to `out`, atomically."""
    ckpt, out = Path(ckpt), Path(out)
    if (ckpt / "checkpoints").is_dir():  # a run directory
        done = sorted(p for p in (ckpt / "checkpoints").glob("step_????????") if (p / MARKER).is_file())
        if not done:
            raise TrainingError(f"{ckpt}/checkpoints: no complete checkpoint to export")
        ckpt = done[-1]
    if not (ckpt / MARKER).is_file():
        raise TrainingError(f"{ckpt}: not a complete checkpoint (no {MARKER}); a killed save leaves only .tmp directories")
    meta = json.loads((ckpt / MARKER).read_text())
    tuned = meta.get("run", {}).get("finetune", {})
    if tuned.get("mode") in ("lora", "adapter"):  # adapters to merge, frozen weights to take from the pretrained export
        from unified_action.training.finetune import export_merged

        return export_merged(ckpt, out, tuned.get("lora_alpha", 1.0) / tuned.get("lora_rank", 1.0), tuned["init_from"])
    trained = {"checkpoint": str(ckpt), "step": meta["step"], "run": meta.get("run", {})}
    return write_export(consolidated_state_dict(ckpt), meta, out, trained)


def write_export(state: dict[str, torch.Tensor], meta: dict, out: str | Path, trained: dict) -> Path:
    """Write an export directory from fp32 weights and `export_meta(...)`, atomically (a .tmp directory, renamed).
    `trained` says where the weights come from: {"step": ..., "run": {...}} at least (the model card shows them)."""
    from safetensors.torch import save_file

    out = Path(out)
    state = {k: v.contiguous() for k, v in state.items()}
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = {k: meta[k] for k in ("format_version", "model", "vocab_version", "vocab_size", "embodiments", "tokenizers")}
    config["trained"] = trained
    save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt", "unified_action_config": json.dumps(config)})
    (tmp / CONFIG).write_text(json.dumps(config, indent=1) + "\n")
    (tmp / CARD).write_text(model_card(config, sum(v.numel() for v in state.values())))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def model_card(config: dict, n_params: int) -> str:
    m = config["model"]
    rows = "\n".join(f"| {n} | {config['embodiments'][n]} | `{h[:16]}` |" for n, h in config["tokenizers"].items())
    run = config["trained"].get("run", {})
    return f"""---
library_name: unified-action
tags: [world-model, action-conditioned-video, robotics]
---
# unified-action world model `{m.get('size', '?')}`

An action-conditioned video world model ({n_params:,} parameters, {m['image_size'][0]}x{m['image_size'][1]} frames,
{m['max_frames']} frames per clip of which {m['context_frames']} context), trained for {config['trained']['step']} steps
by the job `{run.get('config', '?')}`. Actions enter through the shared action-token vocabulary
(version {config['vocab_version']}, {config['vocab_size']} ids).

## Tokenizers it was trained with
Loading refuses a registry whose tokenizer differs from these (content hash of spec, statistics and BPE model):

| tokenizer | embodiment token | content hash |
|---|---:|---|
{rows}

## Use
```python
from unified_action.training.export import load_pretrained
model, config = load_pretrained("{'{this directory}'}", registry="tokenizers")
```
"""


def check_tokenizers(config: dict, registry: Registry, where: str, names: list[str] | None = None) -> None:
    """Refuse a registry that does not hold the tokenizers (by content hash) a model was trained with.
    `where` an export directory: its config is re-read and checked against the copy inside model.safetensors, so
    an edited config.json can't make a changed tokenizer pass."""
    if (Path(where) / WEIGHTS).is_file():
        config = read_export(where, weights=False)[0]
    if config.get("vocab_version") != VOCAB_VERSION:
        raise TrainingError(f"{where}: vocabulary version {config.get('vocab_version')}, this library uses {VOCAB_VERSION}")
    have = set(registry.names())
    for name in names if names is not None else config["tokenizers"]:
        want = config["tokenizers"][name]
        if name not in have:
            raise TrainingError(f"{where}: tokenizer '{name}' (hash {want[:12]}) is not registered in {registry.root}")
        got = registry.content_hash(name)
        if got != want:
            raise TrainingError(f"{where}: tokenizer '{name}' in {registry.root} has hash {got[:12]}, the model was trained "
                                f"with {want[:12]}; its spec or statistics changed since: use the registry the model was "
                                f"trained with, or fine-tune on the new tokenizer")
        if registry.spec(name).embodiment_token != config["embodiments"][name]:
            raise TrainingError(f"{where}: tokenizer '{name}' has another embodiment token id in {registry.root}")


def read_export(path: str | Path, weights: bool = True) -> tuple[dict, dict[str, torch.Tensor]]:
    """-> (config, fp32 weights; {} without `weights`). config.json must equal the copy written into
    model.safetensors' metadata (tokenizer hashes included) and ask for bounded sizes."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    # Sizes the model config may ask for, checked before any model is built: an edited config (width 200000, a
    # vocabulary of 1e10) is one line instead of an allocation of 160 GB.
    bounds = {"width": 16384, "depth": 512, "heads": 256, "patch_size": 64, "latent_channels": 1024, "ae_channels": 4096,
              "ae_blocks": 64, "action_width": 16384, "action_queries": 256, "vocab_size": 1 << 21,
              "max_action_tokens": 8192, "max_frames": 4096, "context_frames": 4096}
    path = Path(path)
    if not (path / WEIGHTS).is_file() or not (path / CONFIG).is_file():
        raise TrainingError(f"{path}: not an export directory (expected {WEIGHTS} and {CONFIG}); run `uact export RUN_DIR`")
    try:
        config = json.loads((path / CONFIG).read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise TrainingError(f"{path / CONFIG}: not valid JSON ({type(e).__name__})") from None
    try:
        with safe_open(str(path / WEIGHTS), framework="pt") as f:
            embedded = json.loads((f.metadata() or {})["unified_action_config"])
    except KeyError:
        raise TrainingError(f"{path / WEIGHTS}: holds no config in its metadata; re-export the checkpoint (uact export)") from None
    except Exception as e:  # safetensors raises its own error type on a malformed header
        raise TrainingError(f"{path / WEIGHTS}: not a readable safetensors file ({type(e).__name__})") from None
    if not isinstance(config, dict) or not isinstance(embedded, dict):
        raise TrainingError(f"{path / CONFIG}: expected a JSON object")
    if config != embedded:
        diff = sorted(k for k in set(config) | set(embedded) if config.get(k) != embedded.get(k))
        raise TrainingError(f"{path / CONFIG}: differs from the copy inside {WEIGHTS} (in {', '.join(map(str, diff[:4]))}); "
                            f"config.json was edited after export: restore it or re-export")
    model = config.get("model")
    if not isinstance(model, dict):
        raise TrainingError(f"{path / CONFIG}: model: expected the model config (a JSON object)")
    for k, v in model.items():
        limit = bounds.get(k)
        if limit is not None and v is not None and not (isinstance(v, int) and 0 <= v <= limit):
            raise TrainingError(f"{path / CONFIG}: model.{k}: {str(v)[:40]}, expected an integer in 0..{limit}")
    mults = model.get("ae_mults")
    if mults is not None and not (isinstance(mults, list) and len(mults) <= 8 and all(isinstance(m, int) and 0 < m <= 64 for m in mults)):
        raise TrainingError(f"{path / CONFIG}: model.ae_mults: {str(mults)[:40]}, expected at most 8 integers in 1..64")
    sizes = model.get("image_size", [])
    if not (isinstance(sizes, list) and len(sizes) == 2 and all(isinstance(s, int) and 0 < s <= 4096 for s in sizes)):
        raise TrainingError(f"{path / CONFIG}: model.image_size: {str(sizes)[:40]}, expected 2 sizes in 1..4096")
    if not isinstance(config.get("vocab_size"), int) or not 0 < config["vocab_size"] <= bounds["vocab_size"]:
        raise TrainingError(f"{path / CONFIG}: vocab_size: {str(config.get('vocab_size'))[:40]}, expected 1..{bounds['vocab_size']}")
    return config, (load_file(str(path / WEIGHTS)) if weights else {})


def load_pretrained(path: str | Path, registry: str | Path | Registry | None = None, check: bool = True):
    """-> (WorldModel with the exported weights, config). Checks tokenizers against `registry` first."""
    from unified_action.models import ModelConfig, WorldModel

    config, state = read_export(path)
    if check:
        check_tokenizers(config, registry if isinstance(registry, Registry) else Registry(registry), str(path))
    model = WorldModel(ModelConfig.from_dict(config["model"]))
    model.load_state_dict(state, strict=True)
    return model, config
