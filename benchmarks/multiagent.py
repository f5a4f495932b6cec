"""Many agents, one vocabulary: pretrain `tiny` on cooperative pong and simple_spread with 2 and 3 agents, evaluate
every agent swapped alone, and simple_spread with 4 and 5 agents (never trained on).

    PYTHONPATH=. .venv/bin/python benchmarks/multiagent.py            # ~25 min on 2 cores
    PYTHONPATH=. .venv/bin/python benchmarks/multiagent.py --quick    # a smoke run of a few minutes

Per evaluated dataset: PSNR, copy-last, the margin per horizon step, dPSNR and action accuracy (whole-clip swap),
and per agent (evaluation/agents.py): dPSNR and action accuracy with that agent's actions alone swapped, and the
attribution (mean squared change inside the agent's region / elsewhere, for cards that give a region). The 4- and
5-agent tokenizers are registered into the pretrained model's registry by a fine-tuning job of 0 steps (the
embodiment is the same: agent slots 3 and 4 are the ones training never filled). Writes
benchmarks/results/multiagent.json, multiagent.png (each paddle swapped) and multiagent_spread_n{3,5}.png (the
scene's actions swapped, then each agent's), names the CPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from transfer import RESULTS, cpu_name

TRAINED = [("pettingzoo_cooperative_pong", 2), ("pettingzoo_simple_spread_n2", 2), ("pettingzoo_simple_spread_n3", 3)]
UNSEEN = [("pettingzoo_simple_spread_n4", 4), ("pettingzoo_simple_spread_n5", 5)]


def figures(r) -> dict:
    o, s = r.overall(), r.steps()
    return {"psnr": o["psnr"], "baseline_psnr": o["baseline_psnr"], "dpsnr": o["dpsnr"],
            "action_accuracy": o["action_accuracy"], "clips": r.clips,
            "margin_per_step": [float(p - b) for p, b in zip(s["psnr"], s["baseline_psnr"])],
            "agents": {a: {"dpsnr": float(_mean(m["dpsnr"])), "action_accuracy": float(_mean(m["action_accuracy"])),
                           "attribution": m["attribution"], "share": m["share"]} for a, m in r.agents.items()},
            "notes": r.notes}


def _mean(x):
    import numpy as np

    return np.nanmean(x) if np.isfinite(x).any() else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=48, help="episodes recorded per cooperative-pong dataset")
    ap.add_argument("--spread-episodes", type=int, default=None,
                    help="episodes per simple_spread dataset (default: --episodes); 16 frames each, pong's are longer")
    ap.add_argument("--no-agent-field", action="store_true", help="the ablation: model.agent_field off")
    ap.add_argument("--pretrain-steps", type=int, default=1600, help="8 clips a step (2 processes x 4)")
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--procs", type=int, default=2, help="pretraining processes (one thread each)")
    ap.add_argument("--work", default="runs/multiagent")
    ap.add_argument("--out", default=str(RESULTS / "multiagent.json"))
    ap.add_argument("--quick", action="store_true", help="8 episodes, 40 steps, 6 clips")
    a = ap.parse_args(argv)
    if a.quick:
        a.episodes, a.pretrain_steps, a.clips = 8, 40, 6
    a.spread_episodes = a.spread_episodes or a.episodes

    import yaml

    from unified_action.data.convert import SourceSpec, WriteSettings, write_dataset
    from unified_action.data.dataset import open_dataset
    from unified_action.demo import DemoPlan, _done, _job, heldout_split
    from unified_action.evaluation import evaluate
    from unified_action.evaluation.report import strip
    from unified_action.training.distributed import relaunch
    from unified_action.training.finetune import finetune, register_new
    from unified_action.training.trainer import pretrain

    plan = DemoPlan(model_overrides={"max_agents": 8, "agent_field": not a.no_agent_field})
    work, t0, timings = Path(a.work), time.perf_counter(), {}
    results = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(),
               "trained_agent_counts": sorted({n for _, n in TRAINED}), "pretrain_steps": a.pretrain_steps,
               "episodes": {"pong": a.episodes, "spread": a.spread_episodes}, "agent_field": not a.no_agent_field,
               "clips_seen": a.pretrain_steps * plan.micro_batch, "datasets": {}, "seconds": timings}
    dest = Path(a.out)

    def save() -> None:
        results["wall_s"] = round(time.perf_counter() - t0, 1)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(results, indent=1, default=float) + "\n")

    t = time.perf_counter()
    dirs = {}
    for card, _ in TRAINED + UNSEEN:
        steps = 64
        episodes = a.episodes if "pong" in card else a.spread_episodes
        dirs[card] = write_dataset(SourceSpec(f"data_cards/{card}.md", "sim", episodes=episodes, steps=steps, seed=1000),
                                   work / "data" / card, workers=2, settings=WriteSettings(image_size=(64, 64))).root
    timings["record"] = round(time.perf_counter() - t, 1)

    def training(card: str) -> list[int]:
        return list(heldout_split(open_dataset(dirs[card]).episodes)[0])

    t = time.perf_counter()
    run = work / "pretrain"
    cfg = _job(plan, work, "pretrain", [{"path": str(dirs[c]), "episodes": training(c)} for c, _ in TRAINED],
               a.pretrain_steps, lr=plan.pretrain_lr, micro_batch=plan.micro_batch // a.procs)
    export = _done(run, a.pretrain_steps)
    if export is None:
        register_new(cfg, log=print)
        if a.procs == 1:
            export = pretrain(cfg, config_path="benchmarks/multiagent.py", overwrite=True).export
        else:
            job = work / "pretrain.yaml"
            job.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
            if relaunch(a.procs, ["pretrain", "--config", str(job)]) != 0:
                raise SystemExit("pretraining failed; rerun to resume")
            export = run / "export"
    timings["pretrain"] = round(time.perf_counter() - t, 1)

    # the unseen agent counts: registered into a copy of the registry by a 0-step fine-tune (no training)
    t = time.perf_counter()
    reg0 = work / "zero_shot_tokenizers"
    if not reg0.is_dir():
        shutil.copytree(work / "tokenizers", reg0)
    job = _job(plan, work, "zero_shot", [{"path": str(dirs[c]), "episodes": training(c)} for c, _ in UNSEEN], 0, lr=1e-4)
    job = job.model_validate({**job.model_dump(mode="json"), "data": {**job.data.model_dump(mode="json"), "registry": str(reg0)},
                              "finetune": {"init_from": str(export), "mode": "full"}})
    zero = _done(work / "zero_shot", 0) or finetune(job, config_path="benchmarks/multiagent.py", overwrite=True).export
    timings["register unseen"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    res = evaluate(zero, reg0, [dirs[c] for c, _ in TRAINED + UNSEEN], context_frames=plan.context_frames,
                   horizon=plan.eval_horizon, clips=a.clips, steps=plan.eval_steps, guidance=plan.guidance,
                   min_change=plan.min_change, seed=plan.seed, examples=1)
    timings["evaluate"] = round(time.perf_counter() - t, 1)
    for r in res.datasets:
        results["datasets"][r.name] = {"agents_in_scene": len(r.agents), **figures(r)}
    save()

    from PIL import Image  # pictures: pong with each paddle swapped alone; spread with the whole scene's actions swapped
    # (real, generated, other actions, the simulator under them) then each agent alone; spread N=5 the same

    def picture(name: str, suffix: str, whole_scene: bool) -> None:
        r = next((r for r in res.datasets if r.name == name), None)
        if r is None:
            return
        first = [strip(r.examples[0])] if whole_scene and r.examples else []
        strips = first + [strip(ex) for _, ex in r.agent_examples]
        if strips:
            img = Image.new("RGB", (max(s.width for s in strips), sum(s.height for s in strips)), "white")
            y = 0
            for s in strips:
                img.paste(s, (0, y))
                y += s.height
            img.save(dest.with_name(dest.stem + suffix + ".png"))

    picture("pettingzoo_cooperative_pong", "", whole_scene=False)
    picture("pettingzoo_simple_spread_n3", "_spread_n3", whole_scene=True)
    picture("pettingzoo_simple_spread_n5", "_spread_n5", whole_scene=True)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"many agents, one vocabulary ({results['cpu']}, {results['wall_s']:.0f} s)")
    for c in ("dataset", "agents", "PSNR", "copy-last", "min margin", "dPSNR", "agent", "agent dPSNR", "agent acc.", "attribution"):
        table.add_column(c)
    for name, d in results["datasets"].items():
        for i, (agent, m) in enumerate(d["agents"].items()):
            head = [name.replace("pettingzoo_", ""), str(d["agents_in_scene"]), f"{d['psnr']:.2f}", f"{d['baseline_psnr']:.2f}",
                    f"{min(d['margin_per_step']):+.2f}", f"{d['dpsnr']:.2f}"] if i == 0 else [""] * 6
            table.add_row(*head, agent, f"{m['dpsnr']:.2f}", f"{m['action_accuracy']:.2f}", f"{m['attribution']:.1f}")
    Console().print(table)
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
