"""Transfer benchmark: does pretraining on other arms help a new one? robosuite's arms, one held out.

The suite (data_cards/robosuite_lift_*.md): Lift under Panda, Sawyer, IIWA, Jaco and Kinova3 with OSC_POSE, whose
actions fill the same slots (end-effector position and rotation deltas, gripper), pretrain `tiny`; UR5e, the same
slots on a body never seen, is held out. Two pretraining mixtures at the same steps and clips:
  arms        the five arms;
  arms+games  the five arms, Atari Pong and CarRacing (a game and a vehicle in the same vocabulary).
On the held-out arm, for K in --shots (episodes it trains on), all evaluated on the SAME held-out episodes:
  K = 0       zero-shot: UR5e registered from its card as a new embodiment whose embedding starts as the mean of
              the pretrained arms sharing its slots (finetune.new_embodiment_init: shared_slots, train.steps 0;
              its tokenizer's normalization is fitted on the actions of 5 episodes, no frame trained on), and the
              probe: UR5e's episodes read through Panda's tokenizer (`uact eval --tokenizer`), no data at all;
  K > 0       fine-tuned from each pretrained model (full, shared-slot start; the output layer reset and relearned,
              or kept: --heads) vs scratch (the same job from random weights), the same steps.
Figures per run: PSNR, copy-last, dPSNR, cfPSNR (the model under another clip's actions against the simulator's
own frames under them), action accuracy (the share of clip steps where that rollout is closer to the simulator's
truth than to the real future; 0.5 = ignores actions) and the margin over copy-last per horizon step.

Run:   .venv/bin/python benchmarks/transfer.py [--pretrain-steps 600] [--shots 0 1 5 20] [--finetune-steps 150]
Writes benchmarks/results/transfer.json (runs.<name>.{k, init, mixture, psnr, baseline_psnr, dpsnr, cf_psnr,
action_accuracy, margin_per_step}) and benchmarks/results/transfer.png; names the CPU; every finished stage
(dataset, export) is reused by a rerun. Figures: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)

RESULTS = ROOT / "benchmarks" / "results"
ARMS = ["panda", "sawyer", "iiwa", "jaco", "kinova3"]
HELDOUT = "robosuite_lift_ur5e_osc"
PROBE = "robosuite_lift_panda_osc"  # the tokenizer the zero-shot probe reads the held-out arm through
GAMES = [("ale_pong", 64, 100), ("carracing", 64, 100)]  # the demo's recordings of a game and a vehicle
FIGURES = ("psnr", "baseline_psnr", "dpsnr", "cf_psnr", "action_accuracy")


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
        flags = next((ln for ln in out.splitlines() if ln.startswith("Flags")), "")
        return f"{name} ({os.cpu_count()} cores, {'AVX-512' if 'avx512f' in flags else 'AVX2 only'})"
    except (OSError, subprocess.SubprocessError, StopIteration):
        return platform.processor() or "unknown"


def figures(result) -> dict:
    """One dataset's evaluation -> the benchmark's figures (means over the horizon, the margin per step)."""
    o, s = result.overall(), result.steps()
    return {**{k: float(o[k]) for k in FIGURES}, "clips": result.clips,
            "margin_per_step": [float(p - b) for p, b in zip(s["psnr"], s["baseline_psnr"])],
            "action_accuracy_per_step": [float(x) for x in s["action_accuracy"]], "notes": result.notes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=48, help="episodes recorded per pretraining arm")
    ap.add_argument("--heldout-episodes", type=int, default=30, help="episodes of the held-out arm (the last 20%% evaluated)")
    ap.add_argument("--steps-per-episode", type=int, default=96)
    ap.add_argument("--mixtures", nargs="+", default=["arms", "arms+games"], choices=["arms", "arms+games"])
    ap.add_argument("--pretrain-steps", type=int, default=600, help="2 processes x 8 clips a step (the demo's recipe)")
    ap.add_argument("--shots", type=int, nargs="+", default=[0, 1, 5, 20])
    ap.add_argument("--finetune-steps", type=int, default=150)
    ap.add_argument("--finetune-lr", type=float, default=1e-3)
    ap.add_argument("--heads", nargs="+", default=["reset", "kept"], choices=["reset", "kept"],
                    help="fine-tune the pretrained models with the output layer reset (relearned), kept, or both")
    ap.add_argument("--clips", type=int, default=24, help="held-out clips evaluated per run")
    ap.add_argument("--guidance", type=float, default=None, help="default: the demo's")
    ap.add_argument("--work", default="runs/transfer")
    ap.add_argument("--out", default=str(RESULTS / "transfer.json"))
    a = ap.parse_args(argv)
    train_k = a.heldout_episodes - max(1, a.heldout_episodes // 5)
    if max(a.shots) > train_k:
        raise SystemExit(f"--shots {max(a.shots)}: the held-out arm has {train_k} training episodes (--heldout-episodes)")

    import yaml

    from unified_action.data.convert import SourceSpec, WriteSettings, write_dataset
    from unified_action.data.dataset import open_dataset
    from unified_action.demo import DemoPlan, _done, _job, heldout_split
    from unified_action.evaluation import evaluate
    from unified_action.training.distributed import relaunch
    from unified_action.training.finetune import finetune, register_new
    from unified_action.training.trainer import pretrain

    plan, work, t0 = DemoPlan(), Path(a.work), time.perf_counter()
    guidance = plan.guidance if a.guidance is None else a.guidance
    timings: dict[str, float] = {}
    results = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(), "heldout": HELDOUT,
               "arms": ARMS, "pretrain_steps": a.pretrain_steps, "clips_seen": a.pretrain_steps * plan.micro_batch * 2,
               "finetune_steps": a.finetune_steps, "guidance": guidance, "runs": {}, "pretrained": {}, "seconds": timings}
    dest = Path(a.out)
    # a rerun reuses the figures of the exports it reuses (same steps): only what is new is evaluated again
    before = json.loads(dest.read_text()) if dest.is_file() else {}
    if (before.get("pretrain_steps"), before.get("finetune_steps")) != (a.pretrain_steps, a.finetune_steps):
        before = {}

    def save() -> None:  # after every run: a killed benchmark keeps what it measured
        results["wall_s"] = round(time.perf_counter() - t0, 1)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(results, indent=1) + "\n")

    # 1. data: the arms, the held-out arm, a game and a vehicle (a finished dataset is reused)
    t = time.perf_counter()
    wanted = [(f"robosuite_lift_{arm}_osc", a.episodes, a.steps_per_episode) for arm in ARMS]
    wanted += [(HELDOUT, a.heldout_episodes, a.steps_per_episode)]
    if "arms+games" in a.mixtures:
        wanted += GAMES
    dirs = {}
    for card, n, steps in wanted:
        ds = write_dataset(SourceSpec(f"data_cards/{card}.md", "sim", episodes=n, steps=steps, seed=1000),
                           work / "data" / card, workers=2, settings=WriteSettings(image_size=(64, 64)))
        dirs[card] = ds.root
    timings["record"] = round(time.perf_counter() - t, 1)

    def training(card: str) -> list[int]:
        return list(heldout_split(open_dataset(dirs[card]).episodes)[0])

    def score(export: Path, registry: Path, cards: list[str], tokenizer: str | None = None) -> dict[str, dict]:
        res = evaluate(export, registry, [dirs[c] for c in cards], context_frames=plan.context_frames,
                       horizon=plan.eval_horizon, clips=a.clips, steps=plan.eval_steps, guidance=guidance,
                       min_change=plan.min_change, seed=plan.seed, tokenizer=tokenizer)
        return {r.name: figures(r) for r in res.datasets}

    # 2. pretraining, one registry and one model per mixture (2 processes, as the demo)
    pretrained: dict[str, tuple[Path, Path]] = {}
    for mixture in a.mixtures:
        t = time.perf_counter()
        cards = [f"robosuite_lift_{arm}_osc" for arm in ARMS] + ([g for g, *_ in GAMES] if mixture == "arms+games" else [])
        run = work / f"pretrain_{mixture.replace('+', '_')}"
        cfg = _job(plan, run.parent, run.name, [{"path": str(dirs[c]), "episodes": training(c)} for c in cards],
                   a.pretrain_steps, lr=plan.pretrain_lr)
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"registry": str(run / "tokenizers")})})
        export = _done(run, a.pretrain_steps)
        if export is None:
            register_new(cfg, log=print)  # from the training episodes only
            job = run.parent / f"{run.name}.yaml"
            job.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
            if relaunch(2, ["pretrain", "--config", str(job)]) != 0:
                raise SystemExit(f"pretraining {mixture} failed; rerun to resume")
            export = run / "export"
        pretrained[mixture] = (export, run / "tokenizers")
        timings[f"pretrain {mixture}"] = round(time.perf_counter() - t, 1)
        probe = f"probe {mixture}"
        if mixture in before.get("pretrained", {}) and probe in before.get("runs", {}):
            results["pretrained"][mixture], results["runs"][probe] = before["pretrained"][mixture], before["runs"][probe]
        else:
            results["pretrained"][mixture] = score(export, run / "tokenizers", [f"robosuite_lift_{arm}_osc" for arm in ARMS])
            results["runs"][probe] = {"k": 0, "init": "pretrained", "mixture": mixture, "how": f"read through {PROBE}'s tokenizer",
                                      **score(export, run / "tokenizers", [HELDOUT], tokenizer=PROBE)[HELDOUT]}
        save()

    # 3. the held-out arm: zero-shot, fine-tuned from each pretrained model, and from scratch, for each K
    # the pretrained runs once per --heads: the output layer reset and relearned, or kept as pretrained
    inits = [(m, h) for m in a.mixtures for h in a.heads] + [("scratch", "reset")]
    for k in a.shots:
        for init, head in inits:
            if (init == "scratch" or head == "kept") and k == 0:  # K = 0 keeps the pretrained head: one run
                continue
            t = time.perf_counter()
            kept = head == "kept" and k > 0
            name = f"K{k} {'scratch' if init == 'scratch' else 'pretrained ' + init}" + (", head kept" if kept else "")
            run = work / (f"K{k}_{init.replace('+', '_')}" + ("_kept" if kept else ""))
            base = pretrained[a.mixtures[0] if init == "scratch" else init]
            registry = run.parent / f"{run.name}_tokenizers"  # beside the run: --overwrite replaces the run, not its input
            if not registry.is_dir():  # the pretrained registry; this run registers the held-out arm into its copy
                shutil.copytree(base[1], registry)
            # K = 0 trains on nothing: its tokenizer's normalization is fitted on 5 episodes' actions (no frames)
            data = [{"path": str(dirs[HELDOUT]), "episodes": [0, k or 5]}]
            job = _job(plan, run.parent, run.name, data, a.finetune_steps if k else 0, lr=a.finetune_lr)
            job = job.model_copy(update={"data": job.data.model_copy(update={"registry": str(registry), "clip_stride": 4})})
            if name in before.get("runs", {}) and _done(run, job.train.steps) is not None:  # measured from this export
                results["runs"][name] = before["runs"][name]
                continue
            if init == "scratch":  # the same job from random weights (the tokenizer fitted on the same K episodes)
                register_new(job, log=print)
                export = _done(run, job.train.steps) or pretrain(job, config_path="benchmarks/transfer.py", overwrite=True).export
            else:
                job = job.model_validate({**job.model_dump(mode="json"), "finetune": {
                    "init_from": str(base[0]), "mode": "full", "new_embodiment_init": "shared_slots",
                    # K > 0: the head zeroed and relearned (it wins benchmarks/fewshot.py); K = 0 keeps the pretrained one
                    "reset_output": k > 0 and head == "reset"}})
                export = _done(run, job.train.steps) or finetune(job, config_path="benchmarks/transfer.py", overwrite=True).export
            results["runs"][name] = {"k": k, "init": "scratch" if init == "scratch" else "pretrained", "head": head if k else "kept",
                                     "mixture": None if init == "scratch" else init, **score(export, registry, [HELDOUT])[HELDOUT]}
            timings[name] = round(time.perf_counter() - t, 1)
            print(name, json.dumps({f: results["runs"][name][f] for f in FIGURES}), flush=True)
            save()
    save()
    _print(results)
    _plot(results, dest.with_suffix(".png"))
    return 0


def _print(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Transfer to {r['heldout']} (held out; {r['cpu']}): pretrain {r['pretrain_steps']} steps "
                    f"({r['clips_seen']} clips), fine-tune {r['finetune_steps']} steps")
    for c in ("run", "K", "PSNR", "copy-last", "dPSNR", "cfPSNR", "action acc.", "margin per step"):
        t.add_column(c)
    for name, x in r["runs"].items():
        t.add_row(name, str(x["k"]), f"{x['psnr']:.2f}", f"{x['baseline_psnr']:.2f}", f"{x['dpsnr']:+.2f}",
                  f"{x['cf_psnr']:.2f}", f"{x['action_accuracy']:.2f}", " ".join(f"{m:+.2f}" for m in x["margin_per_step"]))
    for mixture, arms in r["pretrained"].items():
        for card, x in arms.items():
            t.add_row(f"pretrained {mixture} on {card}", "-", f"{x['psnr']:.2f}", f"{x['baseline_psnr']:.2f}",
                      f"{x['dpsnr']:+.2f}", f"{x['cf_psnr']:.2f}", f"{x['action_accuracy']:.2f}",
                      " ".join(f"{m:+.2f}" for m in x["margin_per_step"]))
    Console(width=160).print(t)


def _plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    series: dict[str, list[tuple[int, dict]]] = {}
    for name, x in r["runs"].items():
        if name.startswith("probe"):
            continue
        label = "scratch" if x["init"] == "scratch" else f"pretrained {x['mixture']}, head {x.get('head', 'reset')}"
        series.setdefault(label, []).append((x["k"], x))
    for label, pts in series.items():
        pts.sort(key=lambda p: p[0])
        ks = [p[0] for p in pts]
        axes[0].plot(ks, [p[1]["psnr"] - p[1]["baseline_psnr"] for p in pts], "o-", label=label)
        axes[1].plot(ks, [p[1]["action_accuracy"] for p in pts], "o-", label=label)
    axes[0].axhline(0, color="grey", lw=0.5)
    axes[1].axhline(0.5, color="grey", lw=0.5)
    axes[0].set(xlabel="K (episodes of the held-out arm)", ylabel="PSNR - copy-last (dB)", title="prediction")
    axes[1].set(xlabel="K", ylabel="action accuracy", title="follows the actions (vs the simulator)")
    axes[0].legend()
    fig.suptitle(f"{r['heldout']} held out: {r['cpu']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
