"""Benchmark the world model itself: does it beat copy-last at every horizon step, follow its actions, not forget?

Runs `uact demo`'s plan (record, pretrain, few-shot fine-tune, evaluate; finished stages are reused) into
--out, then reads its evaluation and prints, per embodiment and horizon step: PSNR of the pretrained and of
the fine-tuned model, copy-last PSNR, their margin, dPSNR, and the forgetting of each pretrained embodiment.
Writes benchmarks/results/world_model.json and benchmarks/results/world_model.png (margin over copy-last per
horizon step), and says which CPU ran it.

    .venv/bin/python benchmarks/world_model.py                       # the demo's plan
    .venv/bin/python benchmarks/world_model.py --set guidance=2.0 --out runs/bench_wm_g2   # one recipe change
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name"))
        flags = next((ln for ln in out.splitlines() if ln.startswith("Flags")), "")
        return f"{name} ({'AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags else 'no AVX2'})"
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:  # numbers, true/false/null, lists and objects; anything else (finetune_mode=full) is a string
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def rows(metrics: dict) -> list[dict]:
    """One row per (dataset, horizon step) from the demo's report/metrics.json."""
    before = metrics.get("reference", {}).get("datasets", {})
    out = []
    for name, r in metrics["datasets"].items():
        b = before.get(name, {}).get("per_step", {})
        for i, psnr in enumerate(r["per_step"]["psnr"]):
            out.append({"dataset": name, "step": i + 1, "pretrained_psnr": b.get("psnr", [None] * (i + 1))[i],
                        "finetuned_psnr": psnr, "copy_last_psnr": r["per_step"]["baseline_psnr"][i],
                        "pretrained_dpsnr": b.get("dpsnr", [None] * (i + 1))[i], "finetuned_dpsnr": r["per_step"]["dpsnr"][i]})
    return out


def picture(table: list[dict], summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["dataset"] for r in table})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
        rs = [r for r in table if r["dataset"] == name]
        steps = [r["step"] for r in rs]
        model = "finetuned" if name not in summary["forgetting_db"] else "pretrained"
        axes[0].plot(steps, [r[f"{model}_psnr"] - r["copy_last_psnr"] for r in rs], marker="o", label=f"{name} ({model})")
        axes[1].plot(steps, [r[f"{model}_dpsnr"] for r in rs], marker="o", label=name)
    axes[0].axhline(0, color="grey", lw=1)
    axes[0].set(title="PSNR minus copy-last (dB): > 0 beats it", xlabel="horizon step")
    axes[1].axhline(1, color="grey", lw=1, ls="--")
    axes[1].set(title="dPSNR (dB): real minus other actions", xlabel="horizon step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from unified_action.demo import DemoPlan, run_demo

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench_world_model")
    ap.add_argument("--set", nargs="*", default=[], help="DemoPlan fields, e.g. guidance=2.0 pretrain_steps=400")
    a = ap.parse_args()
    plan = dataclasses.replace(DemoPlan(), **parse_set(a.set))
    t0 = time.perf_counter()
    summary = run_demo(Path(a.out), plan=plan)
    metrics = json.loads(Path(summary["report"]).with_name("metrics.json").read_text())
    table = rows(metrics)

    t = Table(title=f"world model, held-out clips ({cpu_model()})")
    for c in ("dataset", "step", "pretrained PSNR", "fine-tuned PSNR", "copy-last", "margin", "dPSNR"):
        t.add_column(c)
    for r in table:
        model = "finetuned" if r["dataset"] not in summary["forgetting_db"] else "pretrained"
        fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
        t.add_row(r["dataset"], str(r["step"]), fmt(r["pretrained_psnr"]), fmt(r["finetuned_psnr"]), fmt(r["copy_last_psnr"]),
                  f"{r[f'{model}_psnr'] - r['copy_last_psnr']:+.2f}", fmt(r[f"{model}_dpsnr"]))
    console = Console()
    console.print(t)
    console.print("forgetting (pretrained - fine-tuned PSNR, dB): "
                  + ", ".join(f"{k} {v:+.2f}" for k, v in summary["forgetting_db"].items()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"cpu": cpu_model(), "plan": dataclasses.asdict(plan), "demo_seconds": summary["seconds"],
              "wall_seconds": round(time.perf_counter() - t0, 1), "summary_metrics": summary["metrics"],
              "forgetting_db": summary["forgetting_db"], "per_step": table}
    (RESULTS / "world_model.json").write_text(json.dumps(result, indent=1) + "\n")
    picture(table, summary, RESULTS / "world_model.png")
    console.print(f"wrote {RESULTS / 'world_model.json'} and {RESULTS / 'world_model.png'}; demo {summary['seconds']:.0f} s")


if __name__ == "__main__":
    main()
