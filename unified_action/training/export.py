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
from pathlib import Path

import torch

from unified_action.atomic import writing
from unified_action.errors import TrainingError
from unified_action.models.pretrained import (  # noqa: F401  (loading lives beside the model; re-exported here)
    CARD,
    CONFIG,
    FORMAT_VERSION,
    WEIGHTS,
    check_tokenizers,
    load_pretrained,
    read_export,
)
from unified_action.outputs import OutputKind, check_output, fresh_tmp, replace_dir
from unified_action.tokenization import Registry
from unified_action.training.checkpoint import (
    MARKER,
    TAG,
    checkpoint_problem,
    complete_checkpoints,
    newest_usable,
    read_meta,
)


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


EXPORT = OutputKind("an export", r"model\.safetensors|config\.json|README\.md")


def export_checkpoint(ckpt: str | Path, out: str | Path, log=print) -> Path:
    """Write the export of a complete checkpoint (or a run directory: its newest usable one) to `out`, atomically.
    `out` must be new, empty or an earlier export, and hold none of the job's inputs (checked before any work)."""
    ckpt, out = Path(ckpt), Path(out)
    if (ckpt / "checkpoints").is_dir():  # a run directory: newer unusable checkpoints are skipped, saying so
        run = ckpt
        ckpt, skipped = newest_usable(complete_checkpoints(ckpt / "checkpoints"))
        why = "; ".join(f"{p.name} ({w})" for p, w in skipped)
        if ckpt is None:
            raise TrainingError(f"{run}/checkpoints: no complete checkpoint to export" + (f": {why}" if why else ""))
        if skipped:
            log(f"exporting {ckpt}: skipped {why}")
    elif not (ckpt / MARKER).is_file():
        raise TrainingError(f"{ckpt}: not a complete checkpoint (no {MARKER}); a killed save leaves only .tmp directories")
    elif (why := checkpoint_problem(ckpt)) is not None:
        raise TrainingError(f"{ckpt}: cannot be exported: {why}")
    meta = read_meta(ckpt)
    tuned = meta.get("run", {}).get("finetune", {})
    merged = tuned.get("mode") in ("lora", "adapter")
    check_output(out, EXPORT, [ckpt, *([tuned["init_from"]] if merged else [])])
    if merged:  # adapters to merge, frozen weights to take from the pretrained export
        return export_merged(ckpt, out, tuned.get("lora_alpha", 1.0) / tuned.get("lora_rank", 1.0), tuned["init_from"])
    trained = {"checkpoint": str(ckpt), "step": meta["step"], "run": meta.get("run", {})}
    return write_export(consolidated_state_dict(ckpt), meta, out, trained)


def export_merged(ckpt: Path, out: Path, scale: float, init_from: str | Path) -> Path:
    """The export of a lora/adapter run (export_checkpoint calls it): adapters merged into their base weights, frozen weights from the
    pretrained export. A ZeRO-1 checkpoint's consolidated fp32 weights are the optimizer's, so frozen parameters
    are absent; they are by construction the pretrained ones, taken from there in fp32 (not a bf16 copy)."""
    from unified_action.models.lora import merge_lora

    meta = read_meta(Path(ckpt))
    trained = {"checkpoint": str(ckpt), "step": meta["step"], "run": meta.get("run", {})}
    state = consolidated_state_dict(Path(ckpt))
    _, pretrained = read_export(init_from)
    state = {**{k: v for k, v in pretrained.items() if k not in state}, **state}
    return write_export(merge_lora(state, scale), meta, out, trained)


def write_export(state: dict[str, torch.Tensor], meta: dict, out: str | Path, trained: dict) -> Path:
    """Write an export directory from fp32 weights and `export_meta(...)`, atomically (a .tmp directory, renamed).
    `trained` says where the weights come from: {"step": ..., "run": {...}} at least (the model card shows them)."""
    from safetensors.torch import save_file

    out = Path(out)
    state = {k: v.contiguous() for k, v in state.items()}
    tmp = fresh_tmp(out, EXPORT)
    config = {k: meta[k] for k in ("format_version", "model", "vocab_version", "vocab_size", "embodiments", "tokenizers")}
    config["trained"] = trained
    with writing(out, tmp):  # a full disk: one line, and no half export left holding space
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt", "unified_action_config": json.dumps(config)})
        (tmp / CONFIG).write_text(json.dumps(config, indent=1) + "\n")
        (tmp / CARD).write_text(model_card(config, sum(v.numel() for v in state.values())))
    return replace_dir(tmp, out, EXPORT)


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
from unified_action.models.pretrained import load_pretrained
model, config = load_pretrained("{'{this directory}'}", registry="tokenizers")
```
"""
