"""Reading an export directory (model.safetensors + config.json): checked, bounded, and matched to its tokenizers.

Beside the model, not in training/: evaluation, the demo and any user load a trained model without importing
the trainer (layers point one way: models -> training -> evaluation). training/export.py writes exports.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from unified_action.errors import TrainingError
from unified_action.tokenization import Registry
from unified_action.tokenization.vocabulary import READABLE_VOCAB_VERSIONS, VOCAB_VERSION

WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
FORMAT_VERSION = 1


def check_tokenizers(config: dict, registry: Registry, where: str, names: list[str] | None = None) -> None:
    """Refuse a registry that does not hold the tokenizers (by content hash) a model was trained with.
    `where` an export directory: its config is re-read and checked against the copy inside model.safetensors, so
    an edited config.json can't make a changed tokenizer pass."""
    if (Path(where) / WEIGHTS).is_file():
        config = read_export(where, weights=False)[0]
    if config.get("vocab_version") not in READABLE_VOCAB_VERSIONS:
        raise TrainingError(f"{where}: vocabulary version {config.get('vocab_version')}, this library reads "
                            f"{', '.join(map(str, READABLE_VOCAB_VERSIONS))} (uses {VOCAB_VERSION})")
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
    bounds = {"width": 16384, "depth": 512, "heads": 256, "patch_size": 64, "action_width": 16384, "action_queries": 256,
              "vocab_size": 1 << 21,
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
    sizes = model.get("image_size", [])
    if not (isinstance(sizes, list) and len(sizes) == 2 and all(isinstance(s, int) and 0 < s <= 4096 for s in sizes)):
        raise TrainingError(f"{path / CONFIG}: model.image_size: {str(sizes)[:40]}, expected 2 sizes in 1..4096")
    if not isinstance(config.get("vocab_size"), int) or not 0 < config["vocab_size"] <= bounds["vocab_size"]:
        raise TrainingError(f"{path / CONFIG}: vocab_size: {str(config.get('vocab_size'))[:40]}, expected 1..{bounds['vocab_size']}")
    return config, (load_file(str(path / WEIGHTS)) if weights else {})


def load_pretrained(path: str | Path, registry: str | Path | Registry | None = None, check: bool = True):
    """-> (the model with the exported weights, config). Checks tokenizers against `registry` first."""
    from unified_action.models.spec import model_spec

    config, state = read_export(path)
    if check:
        check_tokenizers(config, registry if isinstance(registry, Registry) else Registry(registry), str(path))
    spec = model_spec()
    model = spec.build(spec.config_from_dict(config["model"]))
    check_weights(state, model, Path(path) / WEIGHTS)
    model.load_state_dict(state, strict=True)
    return model, config


def check_weights(state: dict[str, torch.Tensor], model: torch.nn.Module, where: str | Path) -> None:
    """An export's tensors against the model its config builds: the same names, shapes and dtypes, and finite
    values. One line naming the tensor, where load_state_dict gives a traceback (and takes NaN or int64 weights
    silently: a NaN weight only shows as NaN frames)."""
    want = model.state_dict()
    extra = sorted(set(state) - set(want))
    if extra:
        raise TrainingError(f"{where}: {extra[0][:80]}: not a tensor of the model ({len(extra)} such; "
                            f"an export of another model or a file edited after export)")
    missing = [k for k in want if k not in state]
    if missing:
        raise TrainingError(f"{where}: {missing[0]}: missing (the model has {len(want)} tensors, the file {len(state)})")
    for name, ref in want.items():
        t = state[name]
        if t.dtype != ref.dtype:
            raise TrainingError(f"{where}: {name}: dtype {str(t.dtype).removeprefix('torch.')}, "
                                f"expected {str(ref.dtype).removeprefix('torch.')}")
        if t.shape != ref.shape:
            raise TrainingError(f"{where}: {name}: shape {list(t.shape)}, expected {list(ref.shape)}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise TrainingError(f"{where}: {name}: holds NaN or infinite values")
