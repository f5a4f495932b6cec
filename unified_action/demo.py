"""`uact demo`: the whole pipeline on embedded defaults, on one CPU machine, re-using every finished stage.

1. record   small datasets from real simulators: three robot arms (robosuite's Panda, Sawyer and Kinova3 lifting a
            cube, end-effector actions) and a vehicle (CarRacing) for pretraining, and a fourth arm (UR5e) that
            shares the arms' action slots, held out of it;
2. pretrain register the three tokenizers into one shared vocabulary (from the training episodes only) and
            pretrain the `tiny` world model on their mixture with DeepSpeed (`uact pretrain --nproc 2` on CPU);
3. finetune register the held-out robot's tokenizer from K episodes (existing ids untouched) and fine-tune
            the pretrained model on them with LoRA, half its clips replayed from the pretraining data;
4. eval     open-loop rollouts on held-out episodes: the fine-tuned model on all four embodiments beside the
            pretrained one on its three (PSNR, SSIM and dPSNR against copy-last, and the forgetting), written as
            an HTML report with rollout strips, GIFs and plots; runs/demo/summary.json has the figures.

Every dataset keeps its last 20% of episodes out of training (evaluation.rollouts.default_heldout), so the
report is measured on episodes no stage trained on. A stage is skipped when its output is complete (a
dataset's manifest, a run's export); a killed run resumes from its last complete checkpoint.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from unified_action.atomic import atomic_write_json, atomic_write_text
from unified_action.console import make_console


@dataclass(frozen=True)
class DemoDataset:
    card: str  # data_cards/<card>.md
    episodes: int
    steps: int
    style: str = "smooth"  # behaviour policy for continuous actions (smooth or waypoint)


@dataclass(frozen=True)
class DemoPlan:
    """Everything the demo does, sized for <= 15 minutes on the slower 2-core CPU kind (benchmarks/README.md has the
    measured times; tests run a smaller plan)."""

    # Arms that share action slots (robosuite's OSC arms: end-effector deltas and gripper) and a vehicle in one
    # vocabulary; the held-out arm (UR5e) shares the arms' slots on a body pretraining never saw. Measured with
    # benchmarks/transfer.py (five arms, 9,600 clips): the arms' action accuracy 0.67-0.81, dPSNR 0.86-1.16 dB; with
    # Pong and CarRacing mixed in at equal compute, 0.54-0.65 and 0.32-0.44: so the game is dropped, the vehicle kept.
    # steps: 96 at 20 Hz, a frame every 4 (the chunk): 24 frames an episode; CarRacing: 20 frames after its zoom-in
    # episodes: 40 per arm, 48 CarRacing (with 12 training episodes a model learns those episodes' actions and nothing
    # that holds on others); fewer arm episodes or steps cost the arms' action accuracy (the trims measured: README's
    # headline table)
    pretrain: tuple[DemoDataset, ...] = (
        DemoDataset("robosuite_lift_panda_osc", episodes=40, steps=96),  # arms: Lift under OSC_POSE
        DemoDataset("robosuite_lift_sawyer_osc", episodes=40, steps=96),
        DemoDataset("robosuite_lift_kinova3_osc", episodes=40, steps=96),
        DemoDataset("carracing", episodes=48, steps=100),  # vehicle: steering, gas, brake
    )
    heldout: DemoDataset = DemoDataset("robosuite_lift_ur5e_osc", episodes=25, steps=96)  # new arm, the same slots
    shots: int = 5  # K: episodes of the new robot fine-tuning sees
    # the new arm's embedding starts as the mean of the pretrained embodiments sharing its slots (finetune.py);
    # 'unchanged' for a held-out robot that shares none
    new_embodiment_init: str = "shared_slots"
    image_size: int = 64
    context_frames: int = 2
    future_frames: int = 4
    micro_batch: int = 8  # per process
    pretrain_steps: int = 600  # most of the demo's time (302 of 540 s on the AMD EPYC AVX-512 kind, 2 processes)
    pretrain_lr: float = 2e-3  # measured: above 1e-3 after 300 steps (Push-T +0.3 dB over the horizon)
    # data-parallel processes for pretraining (`uact pretrain --nproc`), one thread each, micro_batch clips each: what
    # the model lacked was clips seen, not steps (measured, same data: 600 x 8 clips Push-T dPSNR 0.55, 1200 x 4 0.38,
    # 900 x 8 and 1200 x 6 0.61-0.65, 1200 x 8 1.02), and two processes train 9,600 clips in 600 steps at 19-22 clips/s
    # against one process's 17.9 on the same 2 cores; 1 trains in this process
    pretrain_procs: int = 2
    finetune_steps: int = 100
    finetune_mode: str = "lora"
    finetune_lr: float = 5e-4  # measured: 2e-3 gave Meta-World 25.61 vs 25.65 dB here (both at copy-last)
    replay: float = 0.5  # share of the fine-tune's clips drawn from the pretraining datasets
    # (no finetune.reset_output here: with LoRA and replay it measured nil, Meta-World 25.60 vs 25.61 dB; it wins
    # benchmarks/fewshot.py's full fine-tunes, where the option stays)
    # environment steps between the starts of two clips of an episode (data.clip_stride of every job the demo runs);
    # None: the loader's default, half a clip's span
    clip_stride: int | None = None
    eval_steps: int = 1  # sampling steps: 1 = the conditional mean, the best PSNR
    min_change: float = 3.0  # grey levels: smaller predicted changes are dropped (static scenes stay static)
    # classifier-free guidance over actions at rollout; measured with the action history, same export: 1.5 took Push-T's
    # dPSNR 0.44 -> 0.62 dB for 0.01 dB of PSNR (CarRacing -0.24 dB PSNR, +0.3 dPSNR); 2.0 and 2.5 cost more PSNR
    guidance: float = 1.5
    model_overrides: dict = field(default_factory=dict)
    eval_horizon: int = 6  # past the 6-frame training window: the rollout slides
    eval_clips: int = 12  # per embodiment; the simulator's truth is replayed once for both models (truth.py)
    seed: int = 0


def heldout_split(n_episodes: int) -> tuple[int, int]:
    """(training episodes [0, a), held-out [a, n)): the evaluation's default split, so the report's clips are unseen."""
    from unified_action.evaluation.rollouts import default_heldout

    lo, _ = default_heldout(n_episodes)
    return (0, lo), (lo, n_episodes)


def _ds_json(out: Path) -> Path:
    """The demo's own DeepSpeed JSON (ZeRO-1; the job owns batch, clipping and precision), so it runs from anywhere;
    rewritten when it differs, so the demo never trains with a config it did not write."""
    path, text = out / "zero1.json", json.dumps({"zero_optimization": {"stage": 1}}, indent=1) + "\n"
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)
    return path


MARKER = ".uact-demo"  # written into the output directory first: the demo's proof that the directory is its own
# the entries a demo writes at the top of its directory: one made before the marker existed is still taken as a demo's
_DEMO_ENTRIES = re.compile(r"data|tokenizers|pretrain|finetune_\w+|report(\.tmp)?|zero1\.json(\.tmp)?|"
                           r"pretrain\.yaml(\.tmp)?|summary\.json(\.tmp)?")


def claim_output(out: Path) -> None:
    """Make `out` the demo's (new, empty, or a demo's already), or refuse in one line before anything is written:
    the demo writes, reuses and replaces what it finds there, so a directory of other files is not its to use."""
    from unified_action.errors import UnifiedActionError

    if out.is_symlink() and not out.is_dir() or out.exists() and not out.is_dir():
        raise UnifiedActionError(f"{out}: exists and is not a directory; pass another --out")
    if out.is_dir() and not (out / MARKER).is_file():
        foreign = sorted(p.name for p in out.iterdir() if not _DEMO_ENTRIES.fullmatch(p.name))
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise UnifiedActionError(f"{out}: not a directory `uact demo` wrote (no {MARKER}; it holds {shown}); "
                                     f"nothing was changed: pass a new or empty --out")
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MARKER).is_file():
        (out / MARKER).write_text("written by `uact demo`: it writes, reuses and replaces what is in this directory\n")


def _job(plan: DemoPlan, out: Path, name: str, datasets: list[dict], steps: int, lr: float, micro_batch: int | None = None,
         **extra):
    from unified_action.training.config import TrainConfig

    return TrainConfig.model_validate({
        "name": name, "out": str(out / name),
        "model": {"size": "tiny", "overrides": dict(plan.model_overrides)},
        "data": {"registry": str(out / "tokenizers"), "datasets": datasets, "context_frames": plan.context_frames,
                 "future_frames": plan.future_frames, "image_size": [plan.image_size] * 2, "num_workers": 0,
                 "clip_stride": plan.clip_stride},
        "optim": {"lr": lr, "min_lr": lr / 10, "warmup_steps": max(1, steps // 10)},
        "train": {"steps": steps, "micro_batch": micro_batch or plan.micro_batch, "deepspeed": str(_ds_json(out)), "seed": plan.seed,
                  "checkpoint_every": max(1, steps // 2), "keep_checkpoints": 1, "log_every": max(1, steps // 10)},
        **extra,
    })


def record_stage(plan: DemoPlan, cards_dir: Path, out: Path, log) -> dict[str, Path]:
    from unified_action.data.convert import SourceSpec, WriteSettings, write_dataset

    dirs = {}
    for d in (*plan.pretrain, plan.heldout):
        spec = SourceSpec(str(cards_dir / f"{d.card}.md"), "sim", episodes=d.episodes, steps=d.steps, seed=1000,
                          style=d.style)
        ds = write_dataset(spec, out / "data" / d.card, workers=2, log=log,
                           settings=WriteSettings(image_size=(plan.image_size, plan.image_size)))
        dirs[d.card] = ds.root
    return dirs


def _done(run: Path, steps: int) -> Path | None:
    """The run's export when it is complete and from the planned number of steps."""
    cfg = run / "export" / "config.json"
    if cfg.is_file() and json.loads(cfg.read_text())["trained"]["step"] == steps:
        return run / "export"
    return None


def pretrain_stage(plan: DemoPlan, dirs: dict[str, Path], out: Path, log) -> Path:
    import torch

    from unified_action.data.dataset import open_dataset
    from unified_action.training.finetune import register_new
    from unified_action.training.trainer import pretrain

    datasets = [{"path": str(dirs[d.card]), "episodes": list(heldout_split(open_dataset(dirs[d.card]).episodes)[0])}
                for d in plan.pretrain]
    # CPU: the planned processes; a GPU machine trains in one process with the same global batch (a second process
    # would look for a second GPU)
    procs = 1 if torch.cuda.is_available() else plan.pretrain_procs
    cfg = _job(plan, out, "pretrain", datasets, plan.pretrain_steps, lr=plan.pretrain_lr,
               micro_batch=plan.micro_batch * plan.pretrain_procs // procs)
    done = _done(out / "pretrain", plan.pretrain_steps)
    if done is not None:
        log(f"pretrain: {done} is complete, reused")
        return done
    register_new(cfg, log=log)  # from the training episodes only: the held-out ones stay unseen
    if procs == 1:
        return pretrain(cfg, config_path="uact demo").export
    return _pretrain_in_processes(cfg, procs, out)


def _pretrain_in_processes(cfg, nproc: int, out: Path) -> Path:
    """The job as `uact pretrain --config <its YAML> --nproc N` runs it (torchrun, N local processes), so the
    command a user would type is the one the demo runs. -> the export."""
    import yaml

    from unified_action.errors import TrainingError
    from unified_action.training.distributed import relaunch

    job = out / f"{cfg.name}.yaml"
    atomic_write_text(job, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    rc = relaunch(nproc, ["pretrain", "--config", str(job)])
    if rc != 0:
        raise TrainingError(f"uact demo: pretraining ({job}, {nproc} processes) exited with status {rc}: "
                            f"its message is above; `uact demo` again resumes from the last checkpoint")
    return Path(cfg.out) / "export"


def finetune_stage(plan: DemoPlan, dirs: dict[str, Path], pretrained: Path, out: Path, log) -> Path:
    from unified_action.data.dataset import open_dataset
    from unified_action.training.finetune import finetune

    train, _ = heldout_split(open_dataset(dirs[plan.heldout.card]).episodes)
    shots = min(plan.shots, train[1])
    # replay: the pretraining datasets' training episodes stay in the mixture (a share `replay` of the clips), so
    # fine-tuning on the new robot does not overwrite what the model knows of the others
    share = plan.replay / len(plan.pretrain)
    replay = [{"path": str(dirs[d.card]), "weight": share,
               "episodes": list(heldout_split(open_dataset(dirs[d.card]).episodes)[0])} for d in plan.pretrain]
    cfg = _job(plan, out, f"finetune_{plan.finetune_mode}",
               [{"path": str(dirs[plan.heldout.card]), "weight": 1 - plan.replay}, *replay],
               plan.finetune_steps, lr=plan.finetune_lr,
               finetune={"init_from": str(pretrained), "mode": plan.finetune_mode, "episodes": shots,
                         "new_embodiment_init": plan.new_embodiment_init})
    done = _done(out / cfg.name, plan.finetune_steps)
    if done is not None:
        log(f"finetune: {done} is complete, reused")
        return done
    return finetune(cfg, config_path="uact demo").export


def _evaluate(plan: DemoPlan, dirs: dict[str, Path], model: Path, names: list[str], out: Path):
    from unified_action.evaluation import evaluate

    return evaluate(model, out / "tokenizers", [dirs[n] for n in names], context_frames=plan.context_frames,
                    horizon=plan.eval_horizon, clips=plan.eval_clips, steps=plan.eval_steps, guidance=plan.guidance,
                    min_change=plan.min_change, seed=plan.seed)


def _rollout_settings(plan: DemoPlan) -> dict:
    from unified_action.evaluation.rollouts import rollout_settings

    return rollout_settings(plan.context_frames, plan.eval_horizon, plan.eval_clips, plan.eval_steps, plan.guidance,
                            plan.min_change, plan.seed)


def eval_stage(plan: DemoPlan, dirs: dict[str, Path], pretrained: Path, tuned: Path, out: Path, log) -> tuple[Path, dict]:
    """The fine-tuned model on all four embodiments, beside the pretrained one on the three it was trained on
    (forgetting = pretrained PSNR - fine-tuned PSNR). -> (report.html, metrics.json's content)."""
    from unified_action.evaluation import write_report

    report = out / "report"
    if (report / "report.html").is_file() and (report / "metrics.json").is_file():
        metrics = json.loads((report / "metrics.json").read_text())
        newer = all((report / "metrics.json").stat().st_mtime_ns > (m / "model.safetensors").stat().st_mtime_ns
                    for m in (pretrained, tuned))  # a model trained again since is evaluated again
        wanted = _rollout_settings(plan)  # a plan with other rollout settings (guidance, steps, ...) is evaluated again
        same = metrics.get("rollout") == wanted and metrics.get("reference", {}).get("rollout") == wanted
        if newer and same and metrics.get("model") == str(tuned) and metrics.get("reference", {}).get("model") == str(pretrained):
            log(f"eval: {report} is complete, reused")
            return report / "report.html", metrics
    before = _evaluate(plan, dirs, pretrained, [d.card for d in plan.pretrain], out)
    after = _evaluate(plan, dirs, tuned, [d.card for d in (*plan.pretrain, plan.heldout)], out)
    html = write_report(after, report, reference=before, reference_label="pretrained")
    return html, json.loads((report / "metrics.json").read_text())


def _summary_table(metrics: dict, heldout: str):
    from rich.table import Table

    t = Table(title="held-out episodes: open-loop rollouts (mean over the horizon)")
    for c in ("embodiment", "dataset", "pretrained PSNR", "fine-tuned PSNR", "copy-last PSNR", "pretrained dPSNR",
              "fine-tuned dPSNR", "fine-tuned SSIM"):
        t.add_column(c)

    def fmt(o: dict | None, k: str, digits: int = 2) -> str:
        return "n/a" if o is None or o.get(k) is None else f"{o[k]:.{digits}f}"

    before = metrics.get("reference", {}).get("datasets", {})
    for name, r in metrics["datasets"].items():
        o, b = r["overall"], before.get(name, {}).get("overall")
        t.add_row(r["embodiment"], name + (" (new, few-shot)" if name == heldout else ""), fmt(b, "psnr"), fmt(o, "psnr"),
                  fmt(o, "baseline_psnr"), fmt(b, "dpsnr"), fmt(o, "dpsnr"), fmt(o, "ssim", 3))
    return t


def _figures(r: dict) -> dict:
    """One dataset's figures in summary.json: metrics.json's means over the horizon (cf_psnr and action_accuracy
    among them, null without a simulator), and the margin over copy-last at each horizon step."""
    steps = r["per_step"]
    margin = [None if p is None or b is None else p - b for p, b in zip(steps["psnr"], steps["baseline_psnr"])]
    return {**r["overall"], "margin_per_step": margin}


def run_demo(out: Path = Path("runs/demo"), cards_dir: Path = Path("data_cards"), plan: DemoPlan = DemoPlan()) -> dict:
    console = make_console()
    out = Path(out)
    claim_output(out)
    t0 = time.perf_counter()
    stages = [("record", "datasets from real simulators"), ("pretrain", "tiny on three arms + a vehicle"),
              ("finetune", f"{plan.finetune_mode} on {plan.heldout.card}, K={plan.shots}"), ("eval", "held-out rollouts")]

    def head(i: int) -> None:
        console.rule(f"[{i + 1}/{len(stages)}] {stages[i][0]}: {stages[i][1]}  ({time.perf_counter() - t0:.0f} s)")

    head(0)
    dirs = record_stage(plan, Path(cards_dir), out, console.log)
    head(1)
    pretrained = pretrain_stage(plan, dirs, out, console.log)
    head(2)
    tuned = finetune_stage(plan, dirs, pretrained, out, console.log)
    head(3)
    html, metrics = eval_stage(plan, dirs, pretrained, tuned, out, console.log)
    console.print(_summary_table(metrics, plan.heldout.card))
    tuned_m = {n: _figures(r) for n, r in metrics["datasets"].items()}
    pre_m = {n: _figures(r) for n, r in metrics["reference"]["datasets"].items()}
    summary = {"pretrained": str(pretrained), "finetuned": str(tuned), "report": str(html),
               "datasets": {k: str(v) for k, v in dirs.items()},
               # each embodiment scored by the model meant for it: the pretrained one on its own embodiments, the
               # fine-tuned one on the new robot; the fine-tuned model on every embodiment is in finetuned_metrics
               "metrics": {**pre_m, plan.heldout.card: tuned_m[plan.heldout.card]},
               "finetuned_metrics": tuned_m,
               "forgetting_db": {n: pre_m[n]["psnr"] - tuned_m[n]["psnr"] for n in pre_m},
               "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_json(out / "summary.json", summary)
    console.print(f"report: {html}  (open it in a browser)   total {time.perf_counter() - t0:.0f} s")
    return summary
