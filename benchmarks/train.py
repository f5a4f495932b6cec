"""Benchmark training and rollout: DeepSpeed overhead, 1 vs 2 processes, loader vs trainer, rollout frames/s.

One run on this machine (ratios, measured in alternation, are what to compare; absolute times vary):

1. step throughput of the DeepSpeed engine (ZeRO-1, fp32 on CPU / bf16 on GPU) against a plain PyTorch loop
   (AdamW, clip_grad_norm_, the same LR schedule) on the same model and the same batch of real clips, one
   process, no loader. Target: DeepSpeed <= 10% slower.
2. `uact pretrain` with 1 and with 2 processes on the same job (clips/s from its TensorBoard log, start-up
   excluded).
3. the ClipLoader's clips/s (the job's workers, no model) against the clips/s the trainer consumes.
   Target: loader >= 5x the trainer.
4. autoregressive rollout frames/s, batch 1, with and without the KV cache. Target: tiny at 64x64 >= 20 frames/s.

Data: the three datasets of pretrain/configs/tiny.yaml (pretrain/prepare_data.sh records them).
Run:  .venv/bin/python benchmarks/train.py [--size tiny] [--steps 20] [--rounds 3] [--skip-procs]
GPU:  python benchmarks/train.py --size small --precision bf16 --skip-procs   (reports MFU)
Writes benchmarks/results/train.json; the figures are in benchmarks/README.md ("Training").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)  # the job config's paths are relative to the repository root

from unified_action.data.loader import ClipLoader  # noqa: E402
from unified_action.models.batch import to_device  # noqa: E402
from unified_action.models.sampling import rollout  # noqa: E402
from unified_action.training.config import deepspeed_config, load_config  # noqa: E402
from unified_action.training.trainer import (  # noqa: E402
    build_model,
    lr_lambda,
    param_groups,
    peak_flops,
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def steps_per_s(step, n: int, device) -> float:
    step()  # warm-up: allocator, first-call paths
    step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync(device)
    return n / (time.perf_counter() - t0)


def engine_vs_plain(cfg, batch, device, bf16: bool, n: int, rounds: int) -> dict:
    import deepspeed

    from unified_action.training.distributed import init_distributed

    init_distributed()
    o = cfg.optim
    vocab, tokens = int(batch["action_tokens"].max()) + 1, batch["action_tokens"].shape[-1]
    vocab = max(vocab, 8192)

    def sched(opt):
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, o.warmup_steps, 10**6, o.min_lr / o.lr))

    # plain PyTorch: the same model, optimizer, clipping and schedule, with autocast for bf16
    plain_model = build_model(cfg, vocab, tokens).to(device)
    plain_opt = torch.optim.AdamW(param_groups(plain_model, o.weight_decay), lr=o.lr, betas=o.betas)
    plain_sched = sched(plain_opt)

    def plain_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = plain_model(batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain_model.parameters(), o.grad_clip)
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)
        plain_sched.step()

    ds_model = build_model(cfg, vocab, tokens)
    ds_opt = torch.optim.AdamW(param_groups(ds_model, o.weight_decay), lr=o.lr, betas=o.betas)
    engine, _, _, _ = deepspeed.initialize(model=ds_model, optimizer=ds_opt, lr_scheduler=sched(ds_opt),
                                           config=deepspeed_config(cfg, 1, bf16), dist_init_required=False)

    def ds_step():
        loss = engine(batch)["loss"]
        engine.backward(loss)
        engine.step()

    figs = {"plain": [], "deepspeed": []}
    for _ in range(rounds):  # alternate, keep the best of each: the machine is shared
        figs["plain"].append(steps_per_s(plain_step, n, device))
        figs["deepspeed"].append(steps_per_s(ds_step, n, device))
    best = {k: max(v) for k, v in figs.items()}
    clips = batch["frames"].shape[0]
    out = {"plain_steps_s": best["plain"], "deepspeed_steps_s": best["deepspeed"],
           "plain_clips_s": best["plain"] * clips, "deepspeed_clips_s": best["deepspeed"] * clips,
           "deepspeed_overhead": best["plain"] / best["deepspeed"] - 1, "rounds": figs,
           "params": sum(p.numel() for p in ds_model.parameters())}
    peak = peak_flops(device)
    if peak:
        fl = ds_model.flops_per_clip(batch["frames"].shape[1])
        out["mfu_deepspeed"] = fl * out["deepspeed_clips_s"] / peak
        out["mfu_plain"] = fl * out["plain_clips_s"] / peak
    return out


def loader_rate(loader: ClipLoader, min_clips: int) -> float:
    it = iter(loader)
    next(it)  # workers started
    n, t0 = 0, time.perf_counter()
    while n < min_clips:
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        n += len(b["key"])
    return n / (time.perf_counter() - t0)


def rollout_rate(model, batch, device, horizon: int, steps: int, cache: bool, rounds: int) -> float:
    model.eval()
    ctx_n = model.cfg.context_frames
    one = {k: v[:1] for k, v in batch.items()}
    actions = {k: one[k][:, :1].expand(1, ctx_n + horizon, -1).contiguous()
               for k in ("action_tokens", "action_mask", "action_slots", "action_steps")}
    actions = {k: torch.cat([one[k][:, :ctx_n + 1], v[:, ctx_n + 1:]], 1) for k, v in actions.items()}
    best = 0.0
    for _ in range(rounds):
        sync(device)
        t0 = time.perf_counter()
        rollout(model, one["frames"][:, :ctx_n], actions, one["embodiment"], one["control_hz"], horizon, steps=steps,
                cache=cache, frame_stride=one["frame_stride"])
        sync(device)
        best = max(best, horizon / (time.perf_counter() - t0))
    return best


def procs_rate(config: str, size: str, nproc: int, steps: int) -> dict:
    """`uact pretrain` with nproc processes; clips/s from its TensorBoard log (after the first window)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tempfile.TemporaryDirectory() as d:
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "MASTER_ADDR")}
        cmd = [sys.executable, "-m", "unified_action.cli", "pretrain", "--config", config, "--nproc", str(nproc),
               "--set", f"out={d}/run", "--set", f"model.size={size}", "--set", f"train.steps={steps}",
               "--set", "train.log_every=5", "--set", f"train.checkpoint_every={steps}"]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"pretrain --nproc {nproc} failed:\n{r.stderr[-3000:]}")
        ev = EventAccumulator(f"{d}/run/tensorboard")
        ev.Reload()
        vals = [e.value for e in ev.Scalars("perf/clips_per_s")][1:]  # the first window holds warm-up
        return {"clips_s": sum(vals) / len(vals), "wall_s": wall, "nproc": nproc, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--proc-steps", type=int, default=40, help="steps of each `uact pretrain` run")
    ap.add_argument("--skip-procs", action="store_true", help="skip the 1 vs 2 process runs")
    ap.add_argument("--out", default=str(RESULTS / "train.json"))
    a = ap.parse_args(argv)

    cfg = load_config(a.config, [f"model.size={a.size}"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = a.precision == "bf16"
    loader = ClipLoader(_loader_cfg(cfg), 0, 1, num_workers=cfg.data.num_workers)
    batch = to_device(next(iter(ClipLoader(_loader_cfg(cfg), 0, 1, num_workers=0))), device)
    res: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                             "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                             "threads": torch.get_num_threads()},
                 "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "config": a.config, "size": a.size,
                 "precision": a.precision, "micro_batch": cfg.train.micro_batch,
                 "frames": cfg.data.context_frames + cfg.data.future_frames, "image_size": list(cfg.data.image_size)}
    res["step"] = engine_vs_plain(cfg, batch, device, bf16, a.steps, a.rounds)
    trainer_clips = res["step"]["deepspeed_clips_s"]
    if not a.skip_procs:
        res["procs"] = {str(n): procs_rate(a.config, a.size, n, a.proc_steps) for n in (1, 2)}
        trainer_clips = max(trainer_clips, max(v["clips_s"] for v in res["procs"].values()))
    res["loader"] = {"workers": cfg.data.num_workers, "clips_s": loader_rate(loader, 400 if device.type == "cpu" else 4000),
                     "trainer_clips_s": trainer_clips}
    res["loader"]["ratio"] = res["loader"]["clips_s"] / trainer_clips
    model = build_model(cfg, max(8192, int(batch["action_tokens"].max()) + 1), batch["action_tokens"].shape[-1]).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        res["rollout"] = {f"cache={c}": rollout_rate(model, batch, device, 16, 4, c, a.rounds) for c in (True, False)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    _print(res)
    return 0


def _loader_cfg(cfg):
    from unified_action.data.loader import LoaderConfig, MixtureEntry

    return LoaderConfig(datasets=tuple(MixtureEntry(**e.model_dump()) for e in cfg.data.datasets), registry=cfg.data.registry,
                        context_frames=cfg.data.context_frames, future_frames=cfg.data.future_frames,
                        image_size=tuple(cfg.data.image_size), batch_size=cfg.train.micro_batch, seed=cfg.train.seed)


def _print(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    s = res["step"]
    t = Table(title=f"Training `{res['size']}` ({res['precision']}, batch {res['micro_batch']}, {res['frames']} frames "
                    f"{res['image_size'][0]}x{res['image_size'][1]}, {s['params']:,} params) on {res['machine']['device']}")
    for c in ("measure", "value", "target"):
        t.add_column(c)
    t.add_row("plain PyTorch, clips/s", f"{s['plain_clips_s']:.1f}", "")
    t.add_row("DeepSpeed ZeRO-1, clips/s", f"{s['deepspeed_clips_s']:.1f}", "")
    t.add_row("DeepSpeed overhead", f"{100 * s['deepspeed_overhead']:+.1f}%", "<= +10%")
    if "mfu_deepspeed" in s:
        t.add_row("MFU DeepSpeed / plain", f"{100 * s['mfu_deepspeed']:.1f}% / {100 * s['mfu_plain']:.1f}%", "")
    for n, p in res.get("procs", {}).items():
        t.add_row(f"uact pretrain --nproc {n}, clips/s", f"{p['clips_s']:.1f}", "")
    lo = res["loader"]
    t.add_row(f"loader ({lo['workers']} workers), clips/s", f"{lo['clips_s']:.0f}", "")
    t.add_row("loader / trainer consumption", f"{lo['ratio']:.1f}x", ">= 5x")
    for k, v in res["rollout"].items():
        t.add_row(f"rollout frames/s ({k}, 4 steps)", f"{v:.1f}", ">= 20" if k == "cache=True" else "")
    Console(width=140).print(t)


if __name__ == "__main__":
    raise SystemExit(main())
