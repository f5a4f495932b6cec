"""Few-shot benchmark: pretrained + fine-tuned vs the same model trained from scratch on the same K episodes.

The robot `metaworld_pick_place` (a Sawyer arm) is held out of pretraining (pretrain/configs/tiny.yaml: Push-T,
Pong, CarRacing). For each K in --shots, two runs with the same step budget, the same job otherwise and the
same tokenizer (fitted on those K episodes, in a registry of its own per K so the runs of one K share it):
- fine-tuned: `uact finetune`'s path from the `tiny` pretraining export (finetune/configs/tiny_metaworld.yaml),
  its output layer zeroed first (finetune.reset_output; --keep-output for the head as pretrained);
- scratch: `uact pretrain`'s path, random initial weights, on the same K episodes only.
Both are evaluated by `uact eval`'s code on the SAME held-out episodes (never trained on): PSNR, SSIM, latent
MSE and dPSNR over the horizon, with the copy-last baseline. Target: fine-tuned at K=5 at least as good as
scratch at K=20, and dPSNR > 0 for the fine-tuned model.

Data: pretrain/prepare_data.sh (the pretraining mixture), then this script records the held-out robot.
Run:  .venv/bin/python benchmarks/fewshot.py [--shots 1 5 20] [--steps 150] [--modes full lora]
Writes benchmarks/results/fewshot.json and prints the table; figures are in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)  # the named configs' paths are relative to the repository root

from unified_action.training.config import FINETUNE_CONFIG_DIR, load_config  # noqa: E402

ROBOT = "metaworld_pick_place"
RESULTS = ROOT / "benchmarks" / "results"


def run_in_process(fn, cfg) -> Path:
    """Train one job and return its export (reused when a previous run of this script finished it)."""
    export = Path(cfg.out) / "export"
    cfgfile = export / "config.json"
    if cfgfile.is_file() and json.loads(cfgfile.read_text())["trained"]["step"] == cfg.train.steps:
        return export
    return fn(cfg, config_path="benchmarks/fewshot.py", overwrite=True).export


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embodiment", default=ROBOT, help="the card held out of pretraining (e.g. ale_breakout: a game)")
    ap.add_argument("--record-steps", type=int, default=160, help="steps per recorded episode")
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5, 20])
    ap.add_argument("--steps", type=int, default=150, help="optimizer steps of every fine-tuning and scratch run")
    ap.add_argument("--modes", nargs="+", default=["full"], choices=["full", "lora", "adapter"])
    ap.add_argument("--pretrain-steps", type=int, default=None, help="default: the tiny config's")
    ap.add_argument("--finetune-lr", type=float, default=None, help="peak LR of the fine-tuning runs (default: the config's)")
    ap.add_argument("--pretrained", default=None, help="reuse this export (e.g. runs/demo/pretrain/export) instead of "
                    "pretraining tiny; its robot-free mixture must not include the held-out robot")
    ap.add_argument("--registry", default=None, help="with --pretrained: the registry it was trained with")
    ap.add_argument("--episodes", type=int, default=25, help="episodes of the held-out robot to record")
    ap.add_argument("--heldout", type=int, default=5, help="the last N of them are evaluated, never trained on")
    ap.add_argument("--clip-stride", type=int, default=5, help="environment steps between two clips' starts in "
                    "the fine-tuning and scratch runs (data.clip_stride): 5 gives K=1 16 clips of a 160-step episode")
    ap.add_argument("--horizon", type=int, default=6)
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--guidance", type=float, default=None, help="classifier-free guidance over actions at rollout "
                    "(default: the demo's, DemoPlan.guidance)")
    ap.add_argument("--keep-output", action="store_true", help="fine-tune from the pretrained output layer as it is "
                    "(default: finetune.reset_output, zeroed first: the fine-tune starts at copy-last on the robot)")
    ap.add_argument("--work", default="runs/fewshot")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/fewshot_<embodiment>.json")
    a = ap.parse_args(argv)
    if a.clip_stride < 1:
        raise SystemExit(f"--clip-stride {a.clip_stride}: expected at least 1 step")
    if max(a.shots) > a.episodes - a.heldout:
        raise SystemExit(f"--shots {max(a.shots)} needs {max(a.shots) + a.heldout} episodes, --episodes is {a.episodes}")

    from unified_action.data.convert import SourceSpec, WriteSettings, write_dataset
    from unified_action.demo import DemoPlan
    from unified_action.evaluation import evaluate
    from unified_action.training.finetune import finetune
    from unified_action.training.trainer import pretrain

    work = Path(a.work)
    guidance = DemoPlan().guidance if a.guidance is None else a.guidance
    t0 = time.perf_counter()
    # 1. the pretrained model: the tiny recipe as it is (its data from pretrain/prepare_data.sh), or a given export
    pre_cfg = load_config("tiny", [f"train.steps={a.pretrain_steps}"] if a.pretrain_steps else [])
    if a.pretrained:
        m = json.loads((Path(a.pretrained) / "config.json").read_text())
        if a.embodiment in m["tokenizers"]:
            raise SystemExit(f"{a.pretrained} was trained on {a.embodiment}: it is not held out")
        m = m["model"]
        pre_cfg = load_config("tiny", [f"data.registry={a.registry}", f"data.context_frames={m['context_frames']}",
                                       f"data.future_frames={m['max_frames'] - m['context_frames']}",
                                       f"data.image_size={m['image_size']}", f"model.overrides={{depth: {m['depth']}}}"])
        pretrained = Path(a.pretrained)
    else:
        pretrained = run_in_process(pretrain, pre_cfg)
    # 2. the held-out robot, recorded from its simulator; evaluation episodes: the last --heldout
    robot = write_dataset(SourceSpec(f"data_cards/{a.embodiment}.md", "sim", episodes=a.episodes, steps=a.record_steps,
                                     seed=5000), work / "data" / a.embodiment, workers=2,
                          settings=WriteSettings(image_size=tuple(pre_cfg.data.image_size)))
    heldout = (a.episodes - a.heldout, a.episodes)

    rows = []
    for k in a.shots:
        registry = work / a.embodiment / f"K{k}" / "tokenizers"  # the pretrained registry + this K's tokenizer for the robot
        if not registry.is_dir():  # only the tokenizers the pretrained model knows: the robot is registered per K
            known = json.loads((Path(pretrained) / "config.json").read_text())["tokenizers"]
            for name in known:
                shutil.copytree(Path(pre_cfg.data.registry) / name, registry / name)
        dataset = f"[{{path: {robot.root}, episodes: [0, {k}]}}]"
        common = [f"data.registry={registry}", f"data.datasets={dataset}", f"train.steps={a.steps}",
                  f"train.checkpoint_every={a.steps}", "train.keep_checkpoints=1", "data.num_workers=0",
                  f"data.clip_stride={a.clip_stride}",  # default 5: K=1 still gives 16 clips of its 160-step episode
                  f"data.context_frames={pre_cfg.data.context_frames}", f"data.future_frames={pre_cfg.data.future_frames}",
                  f"data.image_size={list(pre_cfg.data.image_size)}", f"model.overrides={dict(pre_cfg.model.overrides)}"]
        runs = {}
        for mode in a.modes:
            lr = [f"optim.lr={a.finetune_lr}", f"optim.min_lr={a.finetune_lr / 10}"] if a.finetune_lr else []
            tag = (f"{mode}_lr{a.finetune_lr:g}" if a.finetune_lr else mode) + ("" if a.keep_output else "_reset")
            cfg = load_config("tiny_metaworld", [*common, *lr, f"out={work}/{a.embodiment}/K{k}/finetune_{tag}", f"finetune.mode={mode}",
                                                 f"finetune.init_from={pretrained}", f"finetune.episodes={k}",
                                                 f"finetune.reset_output={str(not a.keep_output).lower()}"],
                              config_dir=FINETUNE_CONFIG_DIR)
            runs[f"pretrained+{tag}"] = run_in_process(finetune, cfg)
        # scratch: the fine-tuning job's data, optimizer and steps (registry already holds this K's tokenizer)
        ft = load_config("tiny_metaworld", common, config_dir=FINETUNE_CONFIG_DIR)
        # from scratch with the pretraining recipe's optimizer (its higher LR suits random weights better)
        scratch = ft.model_copy(update={"finetune": None, "out": f"{work}/{a.embodiment}/K{k}/scratch", "optim": pre_cfg.optim})
        runs["scratch"] = run_in_process(pretrain, scratch)
        for name, export in runs.items():
            res = evaluate(export, registry, [robot.root], episodes=heldout, context_frames=pre_cfg.data.context_frames,
                           horizon=a.horizon, clips=a.clips, guidance=guidance, seed=0).datasets[0]
            o = res.overall()
            rows.append({"K": k, "model": name, "clips": res.clips, **{m: float(v) for m, v in o.items()},
                         "psnr_per_step": [float(x) for x in res.steps()["psnr"]]})
            print(json.dumps(rows[-1]), flush=True)

    out = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "robot": a.embodiment, "shots": a.shots,
           "steps": a.steps, "clip_stride": a.clip_stride, "modes": a.modes, "reset_output": not a.keep_output, "pretrained": str(pretrained), "pretrain_steps": pre_cfg.train.steps,
           "heldout_episodes": list(heldout), "horizon": a.horizon, "guidance": guidance, "wall_s": time.perf_counter() - t0, "rows": rows}
    dest = Path(a.out or RESULTS / f"fewshot_{a.embodiment}.json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1) + "\n")
    _print(out)
    return 0


def _print(out: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Few-shot on {out['robot']} (held out of pretraining): {out['steps']} steps per run, held-out "
                    f"episodes {out['heldout_episodes']}, horizon {out['horizon']}")
    for c in ("K", "model", "PSNR", "SSIM", "dPSNR", "copy-last PSNR"):
        t.add_column(c)
    for r in out["rows"]:
        t.add_row(str(r["K"]), r["model"], f"{r['psnr']:.2f}", f"{r['ssim']:.3f}",
                  f"{r['dpsnr']:+.2f}", f"{r['baseline_psnr']:.2f}")
    Console(width=140).print(t)


if __name__ == "__main__":
    raise SystemExit(main())
