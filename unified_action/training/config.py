"""Training job configs: one typed schema, named YAML files in one place, DeepSpeed JSON filled from them.

A job is `pretrain/configs/<name>.yaml` (recipes live outside the library). `--config tiny` finds the named
file there; an unknown name is answered with "did you mean". Unknown keys are refused the same way, so a
typo never silently trains with a default. `--set train.steps=20` overrides any field from the command line.

The DeepSpeed JSON (ZeRO stage, offload) is a separate file named by `train.deepspeed`, because it is what
changes between a laptop and a cluster while the job stays the same. Batch size, accumulation, clipping and
precision are the job's: the JSON leaves them "auto" and `deepspeed_config()` fills them in, refusing a JSON
that sets one of them to something else (two sources of truth for the batch size is how runs go wrong).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from unified_action.errors import ConfigError, did_you_mean, pydantic_lines
from unified_action.safe_yaml import YamlProblem, safe_load

CONFIG_DIR = Path("pretrain/configs")
FINETUNE_CONFIG_DIR = Path("finetune/configs")  # `uact finetune --config NAME` looks here


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetEntry(_Strict):
    path: str = Field(description="a shard dataset directory written by `uact data record/convert`")
    weight: float = Field(1.0, gt=0)
    shards: str | None = Field(None, description="brace pattern / '::'-joined URLs replacing the local shard files")
    camera: str | None = None
    frame_stride: int | None = Field(None, ge=1)  # default: the tokenizer's chunk length (the only value allowed)
    episodes: tuple[int, int] | None = Field(None, description="only episodes [start, stop) in manifest order")


class DataSection(_Strict):
    datasets: list[DatasetEntry] = Field(min_length=1)
    registry: str = "tokenizers"
    context_frames: int = Field(2, ge=1)
    future_frames: int = Field(6, ge=1)
    image_size: tuple[int, int] = (64, 64)
    # frames stored at another aspect ratio than image_size: pad (letterbox, the default), crop (centre) or stretch
    aspect: Literal["pad", "crop", "stretch"] = "pad"
    clip_stride: int | None = Field(None, ge=1)  # env steps between two clips' starts in an episode; default half a clip's span
    num_workers: int = Field(2, ge=0)
    strict: bool = True
    allow_pipe: bool = False
    verify: bool = False  # check every shard's sha256 against its manifest before training (uact data verify)


class ModelSection(_Strict):
    size: str = "tiny"
    overrides: dict[str, Any] = Field(default_factory=dict)


class OptimSection(_Strict):
    lr: float = Field(3e-4, gt=0)
    min_lr: float = Field(3e-5, ge=0)  # the cosine decay ends here
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = Field(1.0, ge=0)  # 0 disables clipping


class TrainSection(_Strict):
    # 0 only in a fine-tuning job: it registers and initialises the new embodiments and exports at once (zero-shot)
    steps: int = Field(ge=0, description="optimizer steps in the whole run")
    micro_batch: int = Field(8, ge=1, description="clips per process per forward")
    grad_accum: int = Field(1, ge=1)
    seed: int = 0
    deepspeed: str = "pretrain/ds/zero1.json"
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on a GPU, fp32 on CPU
    checkpoint_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    log_every: int = Field(10, ge=1)
    # the controllability monitor (training/monitor.py): loss with real vs shuffled actions every N steps; 0 = off
    monitor_every: int = Field(25, ge=0)


class FinetuneSection(_Strict):
    init_from: str = Field(description="the export directory (uact export) of the pretrained model")
    mode: Literal["full", "lora", "adapter"] = "lora"  # what trains: training/finetune.py
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(16, gt=0)  # the adapters' update is scaled by lora_alpha / lora_rank
    episodes: int | None = Field(None, ge=1, description="K: only the first K episodes of each dataset new to the model")
    # zero the output layer before training, as an untrained model's: the fine-tune starts at copy-last on the new
    # embodiment instead of at the motion the pretrained head draws on a scene it never saw (measured on Meta-World:
    # 0.6 dB below copy-last before any step; with it, K=5 24.76 -> 25.00 dB, K=20 24.82 -> 25.20). The head is
    # relearned, for the pretrained embodiments too: for a job that must keep them, replay them or leave this off
    reset_output: bool = False
    # how a new embodiment's embedding row (its embodiment token's row of the action-token table) starts:
    # unchanged     the row the pretrained table holds for that id (its random initialisation, never trained);
    # shared_slots  the mean of the rows of the pretrained embodiments whose tokenizers share the most slots with
    #               the new one (refused, before any work, when none shares a slot). With train.steps: 0, the job
    #               only registers, initialises and exports: the zero-shot model (K = 0)
    new_embodiment_init: Literal["unchanged", "shared_slots"] = "unchanged"


class TrainConfig(_Strict):
    name: str
    out: str = Field(description="run directory: checkpoints/, tensorboard/, metrics.jsonl, export/")
    model: ModelSection = ModelSection()
    data: DataSection
    optim: OptimSection = OptimSection()
    train: TrainSection
    finetune: FinetuneSection | None = None  # set: a fine-tuning job (uact finetune)


SECTIONS: tuple[type[BaseModel], ...] = (TrainConfig, DatasetEntry, DataSection, ModelSection, OptimSection, TrainSection,
                                         FinetuneSection)


def _known_keys() -> set[str]:
    return {k for m in SECTIONS for k in m.model_fields}


def resolve_config_path(name_or_path: str, config_dir: Path = CONFIG_DIR) -> Path:
    """A path to a YAML file, or the name of one in `config_dir`; unknown names get "did you mean"."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if p.is_file():
            return p
        names = sorted(q.name for q in p.parent.glob("*.y*ml")) if p.parent.is_dir() else []
        raise ConfigError(f"{p}: no such config file{did_you_mean(p.name, names)}")
    candidate = config_dir / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    names = sorted(q.stem for q in config_dir.glob("*.yaml")) if config_dir.is_dir() else []
    where = f"in {config_dir}/ (run from the repository root, or pass a path)" if names else f"({config_dir}/ does not exist here)"
    raise ConfigError(f"config '{name_or_path}': no such named config {where}{did_you_mean(name_or_path, names)}"
                      + (f"; named configs: {', '.join(names)}" if names else ""))


def _apply_override(d: dict, item: str, where: str) -> None:
    """`a.b.c=value` (value parsed as YAML) into the nested dict d."""
    if "=" not in item:
        raise ConfigError(f"{where}: --set {item!r}: expected key.path=value")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node = d
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: --set {key}: '{p}' is not a section")
    try:
        node[parts[-1]] = safe_load(value)
    except YamlProblem as e:
        raise ConfigError(f"{where}: --set {key}: {e}") from None


def load_config(name_or_path: str, overrides: list[str] | tuple[str, ...] = (), config_dir: Path = CONFIG_DIR) -> TrainConfig:
    path = resolve_config_path(name_or_path, config_dir)
    try:
        raw = safe_load(path.read_text())
    except YamlProblem as e:
        raise ConfigError(f"{path}: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({type(e).__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a YAML mapping of sections, got {type(raw).__name__}")
    for item in overrides:
        _apply_override(raw, item, str(path))
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        lines = pydantic_lines(e, str(path), _known_keys())
        raise ConfigError(lines[0] + (f" (and {len(lines) - 1} more: {'; '.join(lines[1:])})" if len(lines) > 1 else "")) from None


# ----------------------------------------------------------------------------------------- DeepSpeed JSON
JOB_OWNED = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping")


def deepspeed_config(cfg: TrainConfig, world_size: int, bf16: bool) -> dict:
    """The DeepSpeed config dict of this job: the JSON file with the job-owned fields filled in."""
    path = Path(cfg.train.deepspeed)
    if not path.is_file():
        names = sorted(q.name for q in path.parent.glob("*.json")) if path.parent.is_dir() else []
        raise ConfigError(f"train.deepspeed: {path}: no such file{did_you_mean(path.name, names)}")
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    want = {
        "train_micro_batch_size_per_gpu": cfg.train.micro_batch,
        "gradient_accumulation_steps": cfg.train.grad_accum,
        "train_batch_size": cfg.train.micro_batch * cfg.train.grad_accum * world_size,
        "gradient_clipping": cfg.optim.grad_clip,
    }
    for k, v in want.items():
        if ds.get(k, "auto") not in ("auto", v):
            raise ConfigError(f"{path}: {k}: {ds[k]!r}, but the job config makes it {v!r}; set it to \"auto\" "
                              f"(the job config owns batch size, accumulation and clipping)")
        ds[k] = v
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if stage not in (1, 2, 3):
        raise ConfigError(f"{path}: zero_optimization.stage: {stage!r}, expected 1, 2 or 3 (export reads ZeRO checkpoints)")
    for key in ("bf16", "fp16"):
        if ds.get(key, {}).get("enabled") not in (None, "auto", False):
            raise ConfigError(f"{path}: {key}.enabled: set it to \"auto\"; precision comes from train.precision")
    ds["bf16"] = {"enabled": bf16}
    ds.pop("fp16", None)
    ds.setdefault("steps_per_print", 10**9)  # our own progress bar and logs; DeepSpeed's would interleave
    ds.setdefault("wall_clock_breakdown", False)
    return ds
