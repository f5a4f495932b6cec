"""The pretraining loop: a DeepSpeed engine over the ClipLoader, resumable exactly, refusing non-finite steps.

One function, `pretrain(cfg)`, run by every process of the job (1 with no launcher, N under torchrun or
DeepSpeed's launcher). Per optimizer step: `grad_accum` micro-batches, each one forward, a finiteness check
of the loss agreed by all ranks (all-reduce MAX) BEFORE its backward, backward, and `engine.step()`, which
DeepSpeed turns into an optimizer step at the accumulation boundary. A non-finite loss anywhere raises on
every rank before any gradient of it exists, so the weights and the checkpoints stay as they were.

Exact resume: a checkpoint holds the engine (module, optimizer, LR scheduler), every rank's torch RNG state
(the diffusion noise is drawn from it) and every rank's loader state (what that rank consumed). Restoring
all three continues the run bit for bit on CPU fp32 (tests/training/test_resume.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unified_action.atomic import writing
from unified_action.errors import ConfigError, TrainingError
from unified_action.models.batch import to_device
from unified_action.training import faults
from unified_action.training.checkpoint import CheckpointManager
from unified_action.training.config import TrainConfig, deepspeed_config
from unified_action.training.distributed import DistInfo, all_reduce_, barrier, init_distributed
from unified_action.training.monitor import ControllabilityMonitor
from unified_action.training.preflight import check_job

# Dense bf16 peak FLOP/s per GPU, for MFU (vendor datasheets). Unknown GPUs report no MFU rather than a guess.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "4090": 165e12}


@dataclass
class RunResult:
    out: Path
    step: int  # optimizer steps done when the run stopped
    resumed_from: int  # step of the checkpoint it resumed from (0: a fresh start)
    last_loss: float
    export: Path | None


def lr_lambda(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to min_ratio at `total` (a multiplier of the peak LR)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class Adaptation:
    """What a fine-tuning mode did to the model after its weights were loaded, before the optimizer (finetune.py)."""
    info: dict  # recorded as run["finetune"] in every checkpoint's meta and in the export's config
    no_decay: Collection[torch.nn.Parameter] = ()  # trainable parameters AdamW must not decay
    tokenizers: Collection[str] = ()  # tokenizers the weights know besides the job's own (checked by the caller)
    summary: str = ""  # one line for the log: what trains


def param_groups(model: torch.nn.Module, weight_decay: float, no_decay: Collection[torch.nn.Parameter] = ()) -> list[dict]:
    """Weight decay on matrices only: decaying norms, biases and embedding gains only hurts (GPT-2/DiT practice).
    `no_decay`: matrices kept out of decay too (fine-tuning's embedding tables, whose untouched rows must stay)."""
    skip = {id(p) for p in no_decay}
    decay, rest = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and p.numel() > 0 and id(p) not in skip else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def _check_datasets(cfg: TrainConfig, where: str) -> None:
    for i, e in enumerate(cfg.data.datasets):
        if e.shards is None and not Path(e.path).exists():
            card = Path(e.path).name
            raise ConfigError(f"{where}: data.datasets[{i}].path: {e.path} does not exist; record it with "
                              f"`uact data record data_cards/{card}.md -o {e.path}` (simulators) or write it with "
                              f"`uact data convert` (RLDS / LeRobot), then register its tokenizer")


def build_model(cfg: TrainConfig, vocab_size: int, max_action_tokens: int):
    from unified_action.models.spec import model_spec
    from unified_action.training.preflight import job_model_config

    mcfg = job_model_config(cfg, vocab_size, max_action_tokens)
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
    return model_spec().build(mcfg)


def init_weights_from(model, export_dir: str | Path, registry, names: list[str]) -> None:
    """Start from exported weights (the model config must match but for a larger vocabulary or longer action chunks)."""
    from unified_action.models.pretrained import check_weights
    from unified_action.models.spec import model_spec
    from unified_action.training.export import WEIGHTS, check_tokenizers, read_export

    config, state = read_export(export_dir)
    check_tokenizers(config, registry, str(export_dir), [n for n in names if n in config["tokenizers"]])
    spec = model_spec()
    old = spec.config_from_dict(config["model"])
    new = model.cfg
    grows = {"vocab_size": 0, "max_action_tokens": 0}  # what a fine-tuning job may enlarge
    if {**old.to_dict(), **grows} != {**new.to_dict(), **grows}:
        diff = [k for k, v in new.to_dict().items() if k not in grows and old.to_dict().get(k) != v]
        raise TrainingError(f"{export_dir}: model config differs from this job's in {', '.join(diff)}")
    for k in grows:
        if getattr(new, k) < getattr(old, k):
            raise TrainingError(f"{export_dir}: {k}: the job's model has {getattr(new, k)}, the export {getattr(old, k)}; "
                                f"it can only grow")
    src = spec.build(old)
    check_weights(state, src, Path(export_dir) / WEIGHTS)
    src.load_state_dict(state, strict=True)
    if old.vocab_size != new.vocab_size:
        src.resize_vocab(new.vocab_size)
    if old.max_action_tokens != new.max_action_tokens:
        src.resize_action_tokens(new.max_action_tokens)
    model.load_state_dict(src.state_dict(), strict=True)


def loader_config(cfg: TrainConfig):
    """The ClipLoader config of a job: its mixture and data section (clip_stride included), its micro-batch and seed."""
    from unified_action.data.loader import LoaderConfig, MixtureEntry

    return LoaderConfig(
        datasets=tuple(MixtureEntry(**e.model_dump()) for e in cfg.data.datasets), registry=cfg.data.registry,
        context_frames=cfg.data.context_frames, future_frames=cfg.data.future_frames,
        image_size=tuple(cfg.data.image_size), aspect=cfg.data.aspect, clip_stride=cfg.data.clip_stride,
        batch_size=cfg.train.micro_batch, seed=cfg.train.seed, strict=cfg.data.strict, allow_pipe=cfg.data.allow_pipe)


class MetricLog:
    """Rank 0's metrics.jsonl (one line per optimizer step) and TensorBoard writer."""

    def __init__(self, out: Path, resumed_step: int, enabled: bool):
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        if self.path.exists():  # a resumed run rewrites the steps after its checkpoint
            keep = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln)["step"] <= resumed_step]
            self.path.write_text("".join(ln + "\n" for ln in keep))
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=resumed_step + 1)

    def step(self, record: dict) -> None:
        if self.enabled:
            with writing(self.path), open(self.path, "a") as f:  # a full disk: one line naming it
                f.write(json.dumps(record) + "\n")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            with writing(self.path.parent / "tensorboard"):
                self.tb.close()


class Trainer:
    """One process's side of a pretraining job: built ready to train (resumed if a checkpoint exists)."""

    def __init__(self, cfg: TrainConfig, *, config_path: str = "", resume: bool = True, overwrite: bool = False,
                 init_from: str | None = None, dist: DistInfo | None = None,
                 adapt: Callable[[torch.nn.Module], Adaptation] | None = None):
        import deepspeed

        from unified_action.data.loader import ClipLoader
        from unified_action.tokenization import Registry
        from unified_action.training.export import export_meta

        self.cfg = cfg
        where = config_path or cfg.name
        if cfg.train.steps == 0:
            raise ConfigError(f"{where}: train.steps: 0 trains nothing; only a fine-tuning job (uact finetune) takes it, "
                              f"to export its initialised model (zero-shot)")
        _check_datasets(cfg, where)
        deepspeed_config(cfg, 1, False)  # refuse a bad DeepSpeed JSON before any process does real work
        self.dist = dist = dist or init_distributed()
        self.out = out = Path(cfg.out)
        # the whole job is checked before anything is deleted or written (preflight.py)
        check_job(cfg, where, overwrite=overwrite, init_from=init_from, world_size=dist.world_size)
        if overwrite and dist.is_main and out.exists():
            shutil.rmtree(out)
        barrier()
        out.mkdir(parents=True, exist_ok=True)

        registry = Registry(cfg.data.registry)
        self.loader = loader = ClipLoader(loader_config(cfg), dist.rank, dist.world_size, num_workers=cfg.data.num_workers)
        self.names = names = [p.ds.card.name for p in loader.plans]

        max_tokens = loader.max_tokens
        if init_from:  # keep the pretrained model's room for action tokens (a job's own chunks may be shorter)
            from unified_action.training.export import CONFIG

            init_model = json.loads((Path(init_from) / CONFIG).read_text())["model"] if (Path(init_from) / CONFIG).is_file() else {}
            max_tokens = max(max_tokens, init_model.get("max_action_tokens", 0))
        model = build_model(cfg, registry.vocabulary().size, max_tokens)
        if init_from:
            init_weights_from(model, init_from, registry, names)
        self.adaptation = adaptation = adapt(model) if adapt is not None else None  # before the optimizer sees a parameter
        if adaptation is not None and dist.is_main:
            print(adaptation.summary, flush=True)
        self.bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and dist.device.type == "cuda")
        ds_cfg = deepspeed_config(cfg, dist.world_size, self.bf16)
        o = cfg.optim
        optimizer = torch.optim.AdamW(param_groups(model, o.weight_decay, adaptation.no_decay if adaptation else ()),
                                      lr=o.lr, betas=o.betas)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_lambda(s, o.warmup_steps, cfg.train.steps, o.min_lr / o.lr))
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_cfg, dist_init_required=False)
        self.model = model
        torch.manual_seed(cfg.train.seed * 100_003 + 1 + dist.rank)  # each rank its own diffusion noise

        run_info = {"config": where, "job": cfg.model_dump(mode="json"), "world_size": dist.world_size,
                    "zero_stage": ds_cfg["zero_optimization"]["stage"], "bf16": self.bf16}
        if adaptation is not None:
            run_info["finetune"] = adaptation.info
        known = sorted(set(names) | set(adaptation.tokenizers)) if adaptation else names
        self.meta = export_meta(model.cfg.to_dict(), registry, known, run_info)
        self.ckpts = CheckpointManager(out / "checkpoints", cfg.train.keep_checkpoints, dist)
        self.ckpts.remove_incomplete()
        self.step = self.resumed = 0
        self.latest = latest = self.ckpts.latest() if resume else None
        if latest is None and not resume and self.ckpts.complete():
            raise TrainingError(f"{out}: holds checkpoints; resume (the default), pass --overwrite, or choose another out")
        if latest is not None:
            saved, loader_state = self.ckpts.load(self.engine, latest)
            if saved["tokenizers"] != self.meta["tokenizers"]:
                changed = {n for n, _ in set(saved["tokenizers"].items()) ^ set(self.meta["tokenizers"].items())}
                raise TrainingError(f"{latest}: trained with other tokenizers than {cfg.data.registry} holds now "
                                    f"({', '.join(sorted(changed))}); resume with the registry it was trained with")
            loader.load_state_dict(loader_state)
            self.step = self.resumed = int(saved["step"])
        self._stream = self._batches()
        self.n_ds = len(loader.plans)
        self.monitor = ControllabilityMonitor(names, cfg.train.monitor_every, cfg.train.steps, cfg.train.seed)
        self.control: dict[str, float] = {}  # the monitor's latest scalars
        self._reset_window()

    def _batches(self):
        while True:
            yield from self.loader

    def _reset_window(self) -> None:
        self.window = {"t": time.perf_counter(), "steps": 0, "sums": torch.zeros(2 * self.n_ds, dtype=torch.float64)}

    def train_step(self) -> float:
        """One optimizer step (grad_accum micro-batches); -> the loss averaged over micro-batches and ranks."""
        cfg, dist, engine = self.cfg, self.dist, self.engine
        step_loss = torch.zeros(1, dtype=torch.float64)
        for micro in range(cfg.train.grad_accum):
            raw = next(self._stream)
            batch = to_device(raw, dist.device)
            outputs = engine(batch)
            loss = outputs["loss"]
            if faults.nan_at(self.step + 1):
                loss = loss * float("nan")
            bad = torch.zeros(dist.world_size, device=dist.device)
            bad[dist.rank] = float(not torch.isfinite(loss.detach()).item())
            all_reduce_(bad, "max")
            if bad.any():
                ranks = [i for i in range(dist.world_size) if bad[i] > 0]
                raise TrainingError(
                    f"step {self.step + 1}: non-finite loss on rank(s) {ranks} (batch {raw['key'][0]} ...); the step was "
                    f"not taken on any rank, weights are as after step {self.step}; last complete checkpoint: "
                    f"{self.ckpts.latest() or 'none'}. Lower optim.lr or check the data (uact data info)")
            engine.backward(loss)
            engine.step()
            step_loss += loss.detach().double().cpu()
            ds_idx = torch.as_tensor(np.asarray(raw["dataset"]), dtype=torch.int64)
            if micro == 0 and self.monitor.due(self.step + 1):  # once a step, on its first micro-batch
                self.control = self.monitor.measure(self.model, batch, ds_idx, self.step + 1)
            per = outputs["per_sample"].detach().double().cpu()
            self.window["sums"][:self.n_ds].index_add_(0, ds_idx, per)
            self.window["sums"][self.n_ds:].index_add_(0, ds_idx, torch.ones_like(per))
        self.step += 1
        self.window["steps"] += 1
        all_reduce_(step_loss)
        return step_loss.item() / (cfg.train.grad_accum * dist.world_size)

    def window_scalars(self, loss: float) -> dict[str, float]:
        """TensorBoard scalars over the steps since the last call: loss per embodiment, throughput, MFU."""
        cfg = self.cfg
        sums = all_reduce_(self.window["sums"].clone())
        dt = time.perf_counter() - self.window["t"]
        clips_s = self.window["steps"] * cfg.train.micro_batch * cfg.train.grad_accum * self.dist.world_size / dt
        scalars = {"train/loss": loss, "train/lr": self.scheduler.get_last_lr()[0], "perf/clips_per_s": clips_s,
                   "perf/step_s": dt / self.window["steps"]}
        for i, name in enumerate(self.names):
            if sums[self.n_ds + i] > 0:
                scalars[f"loss/{name}"] = (sums[i] / sums[self.n_ds + i]).item()
        scalars.update(self.control)
        peak = peak_flops(self.dist.device)
        if peak:
            flops = self.model.flops_per_clip(cfg.data.context_frames + cfg.data.future_frames)
            scalars["perf/mfu"] = flops * clips_s / (peak * self.dist.world_size)
        self._reset_window()
        return scalars

    def save(self) -> Path:
        return self.ckpts.save(self.engine, self.step, self.loader.state_dict(), {**self.meta, "step": self.step})

    def run(self, stop_at: int | None = None, progress: bool = True) -> RunResult:
        from tqdm import tqdm

        from unified_action.training.export import export_checkpoint

        cfg, dist = self.cfg, self.dist
        log = MetricLog(self.out, self.resumed, dist.is_main)
        end = min(cfg.train.steps, stop_at) if stop_at is not None else cfg.train.steps
        bar = tqdm(total=cfg.train.steps, initial=self.step, desc=f"{'finetune' if self.adaptation else 'pretrain'} {cfg.name}", unit="step",
                   disable=not (progress and dist.is_main), dynamic_ncols=True)
        if dist.is_main and self.resumed:
            bar.write(f"resumed from {self.latest} (step {self.resumed})")
        loss = float("nan")
        try:
            while self.step < end:
                loss = self.train_step()
                log.step({"step": self.step, "loss": loss, "lr": self.scheduler.get_last_lr()[0]})
                bar.update(1)
                if self.step % cfg.train.log_every == 0 or self.step == end:
                    sc = self.window_scalars(loss)
                    log.scalars(self.step, sc)
                    bar.set_postfix(loss=f"{loss:.4f}", clips_s=f"{sc['perf/clips_per_s']:.1f}")
                    if dist.is_main:
                        ctrl = self.monitor.summary(self.control)
                        bar.write(f"step {self.step}/{cfg.train.steps}  loss {loss:.4f}  lr {sc['train/lr']:.2e}  "
                                  f"{sc['perf/clips_per_s']:.1f} clips/s"
                                  + (f"  MFU {100 * sc['perf/mfu']:.1f}%" if "perf/mfu" in sc else "")
                                  + (f"  {ctrl}" if ctrl else ""))
                        warning = self.monitor.warning(self.step, self.control)
                        if warning:
                            bar.write(warning)
                if self.step % cfg.train.checkpoint_every == 0 or self.step == end:
                    self.save()
        except BaseException:
            bar.close()
            with contextlib.suppress(Exception):  # the error in flight is the one to report (a full disk: said once)
                log.close()
            raise
        bar.close()
        log.close()
        export = None
        if self.step == cfg.train.steps:
            export = self.out / "export"
            if dist.is_main:
                export_checkpoint(self.ckpts.latest(), export)  # merges a fine-tuning run's adapters (export.py)
                print(f"exported {export}")
            barrier()
        return RunResult(self.out, self.step, self.resumed, loss, export)


def pretrain(cfg: TrainConfig, *, config_path: str = "", resume: bool = True, overwrite: bool = False,
             stop_at: int | None = None, init_from: str | None = None, progress: bool = True) -> RunResult:
    """Build this process's Trainer (resuming if it can) and train to the end or to `stop_at`."""
    trainer = Trainer(cfg, config_path=config_path, resume=resume, overwrite=overwrite, init_from=init_from)
    return trainer.run(stop_at=stop_at, progress=progress)
