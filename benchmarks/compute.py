"""Benchmark what buys clips per CPU-second for `tiny` on the demo's clips: threads vs processes, inductor, bf16.

One run on this machine, every configuration in a fresh process (its own thread pool, nothing cached from
another), the same seed, the same synthetic batches of the demo's clip shape (DemoPlan: 64x64, 2 context + 4
future frames, micro batch 8 per process, the arms' 31 action tokens a frame), built as loader batches are
(numpy, the data cards' control rates, frame strides and token layouts) and moved by the trainer's
`models.batch.to_device`; the model is `trainer.build_model` of the demo's pretraining job (`demo._job`), the
optimizer the trainer's (AdamW over `param_groups`, `lr_lambda` warm-up, gradient clipping). Each configuration
trains `--warmup` steps, then `--steps` timed optimizer steps (forward + backward + clip + AdamW); clips/s is
from the median step time (the cores are shared), clips per CPU-second = clips/s / cores used.

1. eager fp32, plain PyTorch loop, 1 and 2 threads;
2. DeepSpeed ZeRO-1, the trainer's step (finiteness all-reduce, engine.backward, engine.step, loss all-reduce):
   1 process x 2 threads, and 2 processes x 1 thread launched as `uact pretrain --nproc 2` launches them
   (torch.distributed.run --standalone, OMP_NUM_THREADS=1, gloo): the demo's layout; clips/s of both together;
3. torch.compile(model) (inductor, C++/OpenMP on CPU, a cold cache each), fp32, 1 and 2 threads, and DeepSpeed's
   engine.compile in the demo's 2 x 1 layout: compile time (the warm-up steps' time beyond steady steps) apart
   from steady-state throughput, and whether it pays back over the demo's 600 steps;
4. bf16 autocast, eager, 1 and 2 threads, only where /proc/cpuinfo has avx512_bf16; the final loss against fp32's
   after the same steps, and how much of fp32's weight update came out differently (a speedup that changes the
   learning is not free);
5. rollout frames/s at batch 1 (sampling.rollout, the demo's evaluation settings: 1 step, guidance 1.5, KV cache),
   fp32 against bf16 autocast.

Recording only the frames used (source.frame_every) is already in the data cards and is not measured here.

    PYTHONPATH=. .venv/bin/python benchmarks/compute.py            # ~4 min on 2 idle cores
    PYTHONPATH=. .venv/bin/python benchmarks/compute.py --quick    # smoke run, ~30 s (no compile; a temp-dir JSON)

Writes benchmarks/results/compute.json; the figures are in benchmarks/README.md ("Compute for tiny on 2 CPUs").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)  # data_cards/ is read relative to the repository root

LOSS_TOLERANCE = 0.02  # relative difference of the final loss that still counts as the same learning


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name"))
        flags = next((ln for ln in out.splitlines() if ln.startswith("Flags")), "")
        isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
        return f"{name} ({isa}{', avx512_bf16' if 'avx512_bf16' in flags else ''})"
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def has_avx512_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


# ----------------------------------------------------------------------------------------- the demo's job and clips
def demo_job(tmp: Path):
    """The demo's pretraining job config (demo._job with DemoPlan's defaults); the datasets are never opened."""
    from unified_action.demo import DemoPlan, _job

    plan = DemoPlan()
    datasets = [{"path": str(tmp / d.card)} for d in plan.pretrain]
    return plan, _job(plan, tmp, "pretrain", datasets, plan.pretrain_steps, lr=plan.pretrain_lr)


def demo_embodiments(plan) -> list[dict]:
    """Per pretraining dataset: control Hz, frame stride (the chunk length) and tokens a frame (its kind's framing
    plus chunk length x slots, the bin kind's padded length), from the data cards."""
    from unified_action.cards.card import load_card
    from unified_action.tokenization.kinds import get_kind

    out = []
    for d in plan.pretrain:
        h = load_card(ROOT / "data_cards" / f"{d.card}.md").header
        slots = sum(len(a.slots) for a in h.action)
        L = h.tokenizer.chunk_length
        out.append({"card": d.card, "hz": float(h.control_frequency_hz), "stride": L,
                    "tokens": get_kind(h.tokenizer.kind).framing + L * slots})
    return out


def synthetic_batch(embodiments: list[dict], B: int, frames: int, size: int, P: int, seed: int) -> dict:
    """A loader-shaped batch (numpy, as ClipLoader yields it) of the demo's clips: textured frames with a square that
    moves, each clip from one of the mixture's embodiments, its chunks' tokens valid up to its length, padded to P."""
    import numpy as np

    from unified_action.tokenization.vocabulary import BIN_BASE, BOS, EMBODIMENT_BASE, EOS, NUM_BINS

    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(embodiments), B)
    base = rng.integers(40, 200, (B, 1, size // 8, size // 8, 3)).repeat(8, 2).repeat(8, 3)  # 8x8 blocks
    video = np.repeat(base, frames, 1).astype(np.int16)
    pos, vel = rng.integers(8, size - 16, (B, 2)), rng.integers(-3, 4, (B, 2))
    for f in range(frames):
        for b in range(B):
            y, x = np.clip(pos[b] + f * vel[b], 0, size - 8)
            video[b, f, y:y + 8, x:x + 8] = 255
    video += rng.integers(-3, 4, video.shape)
    n = np.array([embodiments[w]["tokens"] for w in which])[:, None, None]  # valid tokens of each clip's chunks
    col = np.arange(P)[None, None]
    mask = np.broadcast_to(col < n, (B, frames, P))
    tokens = BIN_BASE + rng.integers(0, NUM_BINS, (B, frames, P))
    tokens[:, :, 0] = BOS
    tokens[:, :, 1] = (EMBODIMENT_BASE + which)[:, None]
    tokens = np.where(col == n - 1, EOS, tokens)
    return {
        "frames": np.clip(video, 0, 255).astype(np.uint8),
        "action_tokens": np.where(mask, tokens, 0),
        "action_mask": mask.copy(),
        "action_slots": np.where(mask, rng.integers(0, 8, (B, frames, P)), -1).astype(np.int32),
        "action_steps": np.where(mask, col % 5, -1).astype(np.int32),
        "embodiment": EMBODIMENT_BASE + which,
        "control_hz": np.array([embodiments[w]["hz"] for w in which], dtype=np.float32),
        "frame_stride": np.array([embodiments[w]["stride"] for w in which]),
    }


# ----------------------------------------------------------------------------------------- one configuration (a worker)
def _setup(spec: dict, tmp: Path, rank: int = 0):
    import torch

    from unified_action.models.batch import to_device
    from unified_action.tokenization.vocabulary import Vocabulary
    from unified_action.training.trainer import build_model

    torch.set_num_threads(spec["threads"])
    tmp.mkdir(parents=True, exist_ok=True)
    plan, cfg = demo_job(tmp)
    emb = demo_embodiments(plan)
    P = max(e["tokens"] for e in emb)
    frames = plan.context_frames + plan.future_frames
    model = build_model(cfg, Vocabulary().size, P)  # the demo's registry has no BPE block: 8192 rows
    # a few different batches, cycled; each rank its own, as each rank reads its own stream
    batches = [to_device(synthetic_batch(emb, plan.micro_batch, frames, plan.image_size, P, 1000 * rank + i),
                         torch.device("cpu")) for i in range(4)]
    return plan, cfg, model, batches


def _timed(step, n_warm: int, n: int, batches) -> dict:
    """Warm-up steps, then n timed steps; per-step wall and this process's CPU seconds."""
    warm, times, losses = [], [], []
    for i in range(n_warm + n):
        t0 = time.perf_counter()
        c0 = time.process_time()
        loss = step(batches[i % len(batches)])
        dt = time.perf_counter() - t0
        if i < n_warm:
            warm.append(dt)
        else:
            times.append(dt)
            if i == n_warm:
                cpu0, wall0 = c0, t0
        losses.append(loss)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"warmup_s": warm, "step_s": times, "median_step_s": statistics.median(times), "losses": losses,
            "busy_cores": cpu / wall}


def worker_plain(spec: dict, tmp: Path) -> dict:
    """Plain PyTorch loop of the trainer's optimizer: eager or torch.compile, fp32 or bf16 autocast."""
    import torch

    from unified_action.training.trainer import lr_lambda, param_groups

    plan, cfg, model, batches = _setup(spec, tmp)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()} if spec.get("weights") else None
    o = cfg.optim
    opt = torch.optim.AdamW(param_groups(model, o.weight_decay), lr=o.lr, betas=o.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, o.warmup_steps, cfg.train.steps, o.min_lr / o.lr))
    fwd = model
    if spec["compile"]:
        fwd = torch.compile(model)
    bf16 = spec["bf16"]
    torch.manual_seed(cfg.train.seed * 100_003 + 1)  # the trainer's rank-0 noise seed

    def step(batch) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = fwd(batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        return float(loss.detach())

    try:
        out = _timed(step, spec["warmup"], spec["steps"], batches)
    except Exception as e:  # noqa: BLE001  (a compile failure is a result: one line of it)
        if not spec["compile"]:
            raise
        return {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"}
    out.update(clips_per_step=plan.micro_batch, params=sum(p.numel() for p in model.parameters()))
    if spec.get("weights"):  # the trained weights, to compare what two precisions learned from the same start
        torch.save({"init": init, "final": {k: v.detach().clone() for k, v in model.state_dict().items()}}, spec["weights"])
    if spec["compile"]:
        import torch._dynamo.utils as du

        out["compile_s"] = max(0.0, sum(out["warmup_s"]) - len(out["warmup_s"]) * out["median_step_s"])
        out["graphs"] = int(du.counters["stats"].get("unique_graphs", 0))
    return out


def worker_deepspeed(spec: dict, tmp: Path) -> dict | None:
    """One rank of a DeepSpeed ZeRO-1 job, the trainer's step on synthetic batches; rank 0 returns the figures."""
    import deepspeed
    import torch

    from unified_action.training.config import deepspeed_config
    from unified_action.training.distributed import all_reduce_, init_distributed
    from unified_action.training.trainer import lr_lambda, param_groups

    dist = init_distributed()
    plan, cfg, model, batches = _setup(spec, tmp / f"rank{dist.rank}", dist.rank)
    o = cfg.optim
    opt = torch.optim.AdamW(param_groups(model, o.weight_decay), lr=o.lr, betas=o.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, o.warmup_steps, cfg.train.steps, o.min_lr / o.lr))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched,
                                           config=deepspeed_config(cfg, dist.world_size, False), dist_init_required=False)
    if spec["compile"]:
        engine.compile(backend="inductor")  # DeepSpeed's own torch.compile of the module
    torch.manual_seed(cfg.train.seed * 100_003 + 1 + dist.rank)

    def step(batch) -> float:  # Trainer.train_step with grad_accum 1, less its metrics
        loss = engine(batch)["loss"]
        bad = torch.zeros(dist.world_size)
        bad[dist.rank] = float(not torch.isfinite(loss.detach()).item())
        all_reduce_(bad, "max")
        engine.backward(loss)
        engine.step()
        total = all_reduce_(loss.detach().double().reshape(1))
        return total.item() / dist.world_size

    try:
        out = _timed(step, spec["warmup"], spec["steps"], batches)
    except Exception as e:  # noqa: BLE001
        if not spec["compile"]:
            raise
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        return {"error": f"{type(e).__name__}: {msg}"} if dist.is_main else None
    if spec["compile"]:
        out["compile_s"] = max(0.0, sum(out["warmup_s"]) - len(out["warmup_s"]) * out["median_step_s"])
    busy = all_reduce_(torch.tensor([out["busy_cores"]], dtype=torch.float64))
    out.update(busy_cores=float(busy), clips_per_step=plan.micro_batch * dist.world_size,
               params=sum(p.numel() for p in model.parameters()))
    return out if dist.is_main else None


def worker_rollout(spec: dict, tmp: Path) -> dict:
    """Rollout frames/s at batch 1, fp32 and bf16 autocast, the demo's evaluation settings."""
    import torch

    from unified_action.models.batch import ACTION_KEYS
    from unified_action.models.sampling import rollout

    plan, cfg, model, batches = _setup(spec, tmp)
    model.eval()
    b = batches[0]
    C, H = plan.context_frames, spec["horizon"]
    actions = {k: b[k][:1, :1].expand(1, C + H, -1).contiguous() for k in ACTION_KEYS}
    out = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        if bf16 and not spec["bf16"]:
            out[name] = None
            continue
        best = 0.0
        for _ in range(spec["rounds"]):
            torch.manual_seed(0)
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                rollout(model, b["frames"][:1, :C], actions, b["embodiment"][:1], b["control_hz"][:1], H,
                        steps=plan.eval_steps, cache=True, frame_stride=b["frame_stride"][:1], guidance=plan.guidance,
                        min_change=plan.min_change)
            best = max(best, H / (time.perf_counter() - t0))
        out[name] = best
    return out


def run_worker(spec_json: str) -> None:
    spec = json.loads(spec_json)
    with tempfile.TemporaryDirectory() as d:
        fn = {"plain": worker_plain, "deepspeed": worker_deepspeed, "rollout": worker_rollout}[spec["kind"]]
        res = fn(spec, Path(d))
    if res is not None:
        Path(spec["result"]).write_text(json.dumps(res))


# ----------------------------------------------------------------------------------------- the parent
def launch(spec: dict, tmp: Path, log, wait_s: float = 120.0) -> dict:
    """Run one configuration in fresh process(es); -> its result, or {"error": one line}."""
    key = "".join(ch if ch.isalnum() else "_" for ch in spec["name"])
    spec = {**spec, "result": str(tmp / f"{key}.json")}
    if spec.get("kind") == "plain" and not spec.get("compile"):
        spec["weights"] = str(tmp / f"{key}.pt")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "MASTER_ADDR")}
    env.update(OMP_NUM_THREADS=str(spec["threads"]), PYTHONPATH=str(ROOT),
               TORCHINDUCTOR_CACHE_DIR=str(tmp / f"inductor_{key}"))  # each compile cold; no spaces (g++ paths)
    me = [str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    if spec.get("procs", 1) > 1:  # as distributed.relaunch runs `uact pretrain --nproc N`
        env["LOCAL_SIZE"] = str(spec["procs"])
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={spec['procs']}", *me]
    else:
        cmd = [sys.executable, *me]
    wait_idle(log, wait_s)
    t0, busy0, mine0 = time.perf_counter(), cpu_busy_s(), children_cpu_s()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    foreign = max(0.0, (cpu_busy_s() - busy0) - (children_cpu_s() - mine0)) / wall
    if r.returncode != 0 or not Path(spec["result"]).is_file():
        lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "Warning" not in ln]
        err = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else f"rc {r.returncode}")
        log(f"{spec['name']}: failed: {err.strip()[:300]}")
        return {"error": err.strip()[:300], "process_wall_s": wall, "foreign_cores": foreign}
    res = json.loads(Path(spec["result"]).read_text())
    res.update(process_wall_s=wall, foreign_cores=foreign)
    if "weights" in spec:
        res["weights"] = spec["weights"]
    return res


def cpu_busy_s() -> float:
    """CPU-seconds all cores have been busy since boot (/proc/stat), whoever ran."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait; guest time is in user


def children_cpu_s() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def wait_idle(log, limit_s: float = 120.0, busy: float = 0.3) -> None:
    """Wait (up to limit_s) until other work uses less than `busy` cores: the cores are shared, and a 2-thread run
    with one core taken measures the other work. The load during each run is recorded either way."""
    t0, said = time.perf_counter(), False
    while time.perf_counter() - t0 < limit_s:
        b0 = cpu_busy_s()
        time.sleep(1.0)
        if cpu_busy_s() - b0 < busy:
            return
        if not said:
            log(f"other work is using the cores; waiting up to {limit_s:.0f} s for them to be idle")
            said = True


def configurations(a, bf16: bool) -> list[dict]:
    s = {"warmup": a.warmup, "steps": a.steps, "compile": False, "bf16": False}
    eager = {"kind": "plain", **s}
    ds = {"kind": "deepspeed", **s}
    out = [
        {"name": "eager fp32, 1 thread", **eager, "threads": 1, "cores": 1},
        {"name": "eager fp32, 2 threads", **eager, "threads": 2, "cores": 2},
        {"name": "DeepSpeed fp32, 1 process x 2 threads", **ds, "threads": 2, "procs": 1, "cores": 2},
        {"name": DEMO, **ds, "threads": 1, "procs": 2, "cores": 2},
    ]
    if not a.skip_compile:
        cw = {"compile": True, "warmup": a.compile_warmup}
        out += [{"name": "compile fp32, 1 thread", **eager, **cw, "threads": 1, "cores": 1},
                {"name": "compile fp32, 2 threads", **eager, **cw, "threads": 2, "cores": 2},
                {"name": "DeepSpeed + compile fp32, 2 processes x 1 thread", **ds, **cw, "threads": 1, "procs": 2,
                 "cores": 2}]
    for n in (1, 2):
        name = f"eager bf16 autocast, {n} thread{'s' if n > 1 else ''}"
        out.append({"name": name, **eager, "bf16": True, "threads": n, "cores": n} if bf16 else
                   {"name": name, "skip": "skipped: no avx512_bf16"})
    return out


DEMO = "DeepSpeed fp32, 2 processes x 1 thread (the demo)"
DEMO_CLIPS = 600 * 16  # DemoPlan: 600 pretraining steps x (2 processes x 8 clips)
DEMO_PRETRAIN_S = 280  # the demo's pretraining on the AVX2 kind (benchmarks/README.md)


def _fp32_of(c: dict) -> str:
    return f"eager fp32, {c['threads']} thread{'s' if c['threads'] > 1 else ''}"


def update_diffs(configs: list[dict], raw: dict) -> dict[str, float]:
    """|w - w_fp32| / |w_fp32 - w_init| over all weights after the same steps: how much of what fp32 learned a run
    learned differently. bf16 against fp32 at the same threads; fp32 at 2 threads against 1 thread is the floor
    (only the summation order differs)."""
    import torch

    def load(name: str):
        w = raw.get(name, {}).get("weights")
        return torch.load(w) if w and Path(w).is_file() else None

    def vec(d: dict):
        return torch.cat([v.float().flatten() for v in d.values()])

    out = {}
    pairs = [(c["name"], _fp32_of(c)) for c in configs if c.get("bf16")] + [("eager fp32, 2 threads", "eager fp32, 1 thread")]
    for name, ref in pairs:
        a, b = load(name), load(ref)
        if a is not None and b is not None:
            w0, wr = vec(b["init"]), vec(b["final"])
            out[name] = float((vec(a["final"]) - wr).norm() / (wr - w0).norm())
    return out


def summarise(c: dict, r: dict, rows_raw: dict, updates: dict[str, float]) -> dict:
    name = c["name"]
    if "error" in r or "skip" in r:
        return {"config": name, **{k: v for k, v in r.items() if k in ("error", "skip")}}
    clips_s = r["clips_per_step"] / r["median_step_s"]
    row = {"config": name, "clips_s": clips_s, "clips_per_cpu_s": clips_s / c["cores"], "cores": c["cores"],
           "busy_cores": r["busy_cores"], "step_s": r["median_step_s"], "final_loss": r["losses"][-1],
           "steps_trained": len(r["losses"])}
    if "compile_s" in r:
        row["compile_s"] = r["compile_s"]
    row["foreign_cores"] = r.get("foreign_cores")
    if c["name"] in updates:
        row["update_rel_diff"] = updates[c["name"]]
    if c.get("bf16"):  # the same steps, seed, batches and noise draws as eager fp32 at the same threads
        ref = rows_raw.get(_fp32_of(c), {})
        if len(ref.get("losses", [])) == len(r["losses"]):
            row["loss_rel_diff"] = abs(r["losses"][-1] - ref["losses"][-1]) / abs(ref["losses"][-1])
            row["loss_max_rel_diff"] = max(abs(x - y) / abs(y) for x, y in zip(r["losses"], ref["losses"]))
    return row


def conclude(rows: list[dict]) -> dict:
    """Which configuration trains the most clips per wall-second on all the cores (any, and without bf16, which the
    AVX2 kind lacks), and whether compiling pays back within the demo's pretraining."""
    by = {r["config"]: r for r in rows if "clips_s" in r}
    two = [r for r in by.values() if r["cores"] == 2]
    ok = [r for r in two if r.get("loss_rel_diff", 0) <= LOSS_TOLERANCE]

    def demo_rate(r: dict) -> float:  # clips/s over the demo's 9,600 clips, a compile's seconds included
        return DEMO_CLIPS / (DEMO_CLIPS / r["clips_s"] + r.get("compile_s", 0.0))

    for r in two:
        r["demo_clips_s"] = demo_rate(r)
    best = max(ok, key=demo_rate, default=None)
    portable = max((r for r in two if "bf16" not in r["config"]), key=demo_rate, default=None)
    out: dict = {"best": best and best["config"], "best_clips_s": best and best["demo_clips_s"],
                 "best_without_bf16": portable and portable["config"],
                 "best_without_bf16_clips_s": portable and portable["demo_clips_s"]}
    demo = by.get(DEMO)
    if demo:
        out["demo_clips_s"] = demo["demo_clips_s"]
        for k in ("best", "best_without_bf16"):
            if out[k]:
                out[f"{k}_vs_demo"] = out[f"{k}_clips_s"] / demo["clips_s"] - 1
    pairs = [("compile fp32, 1 thread", "eager fp32, 1 thread"), ("compile fp32, 2 threads", "eager fp32, 2 threads"),
             ("DeepSpeed + compile fp32, 2 processes x 1 thread", DEMO)]
    payback = {}
    for comp, eager in pairs:
        if comp in by and eager in by:
            c, e = by[comp], by[eager]
            gain = 1 - e["clips_s"] / c["clips_s"]  # share of the step time compiling saves
            payback[comp] = {
                "speedup": c["clips_s"] / e["clips_s"] - 1, "compile_s": c["compile_s"],
                # the demo's 9,600 clips at this machine's rates, and its ~280 s pretraining on the AVX2 kind
                "net_s_here": DEMO_CLIPS / e["clips_s"] - DEMO_CLIPS / c["clips_s"] - c["compile_s"],
                "net_s_of_280": DEMO_PRETRAIN_S * gain - c["compile_s"],
                "break_even_s": c["compile_s"] / gain if gain > 0 else None}
    out["compile_payback"] = payback
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=15, help="timed optimizer steps per configuration")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--compile-warmup", type=int, default=3, help="untimed steps of the compiled model (compile included)")
    ap.add_argument("--horizon", type=int, default=16, help="rollout frames timed")
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--wait", type=float, default=120.0, help="seconds to wait, before each configuration, for other work "
                    "to leave the cores idle (the load during each run is recorded either way)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1+3 steps, no compile, horizon 4, no waiting")
    ap.add_argument("--only", nargs="+", metavar="TEXT", help="rerun only the configurations whose names contain one of "
                    "these (e.g. 'compile' '2 threads' 'rollout'), keeping --out's other results (a run the load spoiled)")
    ap.add_argument("--out", help="default benchmarks/results/compute.json (--quick: compute_quick.json in the temp dir)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        run_worker(a.worker)
        return 0
    if a.quick:  # the demo's layout, the thread counts and bf16 once each: the paths work, the figures mean little
        a.steps, a.warmup, a.horizon, a.skip_compile, a.wait = 3, 1, 4, True, min(a.wait, 5.0)
        a.only = a.only or ["eager fp32", DEMO, "bf16 autocast, 2", "rollout 2"]
    a.out = a.out or str(Path(tempfile.gettempdir()) / "compute_quick.json" if a.quick else RESULTS / "compute.json")

    from rich.console import Console
    from rich.progress import Progress

    console = Console(width=150)
    bf16 = has_avx512_bf16()
    configs = configurations(a, bf16)
    res: dict = {"cpu": cpu_model(), "avx512_bf16": bf16, "cores": os.cpu_count(), "platform": platform.platform(),
                 "python": platform.python_version(), "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "steps": a.steps, "warmup": a.warmup, "quick": a.quick, "loss_tolerance": LOSS_TOLERANCE}
    import torch

    res["torch"] = torch.__version__

    def wanted(name: str) -> bool:
        return not a.only or any(t in name for t in a.only)

    old = json.loads(Path(a.out).read_text()) if a.only and not a.quick and Path(a.out).is_file() else {}
    raw: dict[str, dict] = {k: v for k, v in old.get("raw", {}).items() if not wanted(k)}
    rollouts = {k: v for k, v in old.get("rollout_frames_s", {}).items() if not wanted(f"rollout {k[0]}")}
    if old:
        res["rerun"] = [*old.get("rerun", []), {"when": res["when"], "only": a.only}]
        res["when"] = old["when"]
    t_start = time.perf_counter()
    todo = [c for c in configs if wanted(c["name"])]
    threads = [n for n in (1, 2) if wanted(f"rollout {n}")]
    with tempfile.TemporaryDirectory() as d, Progress(console=console, transient=True) as bar:
        task = bar.add_task("configurations", total=len(todo) + len(threads))
        for c in todo:
            bar.update(task, description=c["name"])
            raw[c["name"]] = {"skip": c["skip"]} if "skip" in c else launch(c, Path(d), console.log, a.wait)
            bar.advance(task)
        for n in threads:
            bar.update(task, description=f"rollout, {n} thread{'s' if n > 1 else ''}")
            rollouts[f"{n} thread{'s' if n > 1 else ''}"] = launch(
                {"name": f"rollout {n}", "kind": "rollout", "threads": n, "bf16": bf16, "horizon": a.horizon,
                 "rounds": 1 if a.quick else 3}, Path(d), console.log, a.wait)
            bar.advance(task)
        # weights exist for this run's configurations only: a pair not rerun keeps its earlier figure
        updates = {**{r["config"]: r["update_rel_diff"] for r in old.get("rows", []) if "update_rel_diff" in r},
                   **old.get("update_rel_diff", {}), **update_diffs(configs, raw)}
        for r in raw.values():
            r.pop("weights", None)  # a temporary file, gone now
    configs = [c for c in configs if c["name"] in raw]
    res["rollout_frames_s"] = dict(sorted(rollouts.items()))
    rows = [summarise(c, raw[c["name"]], raw, updates) for c in configs]
    res["rows"], res["raw"], res["update_rel_diff"] = rows, raw, updates
    res["param_count"] = next((r["params"] for r in raw.values() if "params" in r), None)
    res["conclusion"] = conclude(rows)
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    _print(res, console)
    console.print(f"wrote {a.out} in {res['seconds']:.0f} s")
    return 0


def _print(res: dict, console) -> None:
    from rich.table import Table

    t = Table(title=f"`tiny` training on the demo's clips (8 per process, 6 frames 64x64), {res['cpu']}, torch {res['torch']}")
    for c in ("configuration", "clips/s", "clips/CPU-s", "busy cores", "others' cores", "s/step", "compile s",
              "final loss", "loss vs fp32", "update vs fp32"):
        t.add_column(c)
    for r in res["rows"]:
        if "clips_s" not in r:
            t.add_row(r["config"], r.get("skip") or f"error: {r.get('error', '')[:100]}", *[""] * 8)
            continue
        t.add_row(r["config"], f"{r['clips_s']:.1f}", f"{r['clips_per_cpu_s']:.1f}", f"{r['busy_cores']:.2f}",
                  f"{r['foreign_cores']:.2f}", f"{r['step_s']:.3f}", f"{r['compile_s']:.0f}" if "compile_s" in r else "",
                  f"{r['final_loss']:.5f}", f"{100 * r['loss_rel_diff']:.2f}%" if "loss_rel_diff" in r else "",
                  f"{100 * r['update_rel_diff']:.1f}%" if "update_rel_diff" in r else "")
    console.print(t)
    for n, ro in res["rollout_frames_s"].items():
        if "error" not in ro:
            console.print(f"rollout, batch 1, {n}, 1 step, guidance 1.5, KV cache: fp32 {ro['fp32']:.1f} frames/s, "
                          + (f"bf16 autocast {ro['bf16']:.1f} frames/s" if ro.get("bf16") else "bf16 skipped: no avx512_bf16"))
    c = res["conclusion"]
    if c.get("best"):
        console.print(f"most clips per wall-second on 2 cores over the demo's 9,600 clips, compiling included: {c['best']} "
                      f"({c['best_clips_s']:.1f} clips/s"
                      + (f", {100 * c['best_vs_demo']:+.0f}% vs the demo's layout" if "best_vs_demo" in c else "") + ")")
    if c.get("best_without_bf16"):
        console.print(f"without bf16 (the AVX2 kind has none): {c['best_without_bf16']} "
                      f"({c['best_without_bf16_clips_s']:.1f} clips/s"
                      + (f", {100 * c['best_without_bf16_vs_demo']:+.0f}% vs the demo's layout" if "best_without_bf16_vs_demo" in c
                         else "") + ")")
    for k, p in c.get("compile_payback", {}).items():
        console.print(f"{k}: {100 * p['speedup']:+.0f}% steady, compile {p['compile_s']:.0f} s; the demo's 600 steps here: "
                      f"{p['net_s_here']:+.0f} s net, of 280 s on the AVX2 kind: {p['net_s_of_280']:+.0f} s net")


if __name__ == "__main__":
    raise SystemExit(main())
