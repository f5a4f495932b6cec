"""The scale plan for the Open X-Embodiment mixture: storage, frames and action tokens, read bandwidth, GPU-hours.

Inputs, and where each comes from:
- benchmarks/openx_datasets.csv: the PUBLISHED episode and step counts, control rates and camera sizes of the
  Open X-Embodiment datasets, one source URL per figure; an empty cell is a figure that was not found.
- bytes per stored frame at 64/128/256 px, MEASURED here: a few Meta-World pick-place episodes rendered at
  256x256 (and CarRacing at its native 96x96) are written with the library's `write_dataset`, then converted
  to each resolution, and the manifest's shard bytes are divided by the frames they hold. The layout the
  library writes today is recorded (LAYOUT_VERSION). `--bytes-per-frame-json FILE` takes the figures from a
  JSON file instead ({"bytes_per_frame": {"64": B, "128": B, "256": B}, "layout_version": N}).
- `flops_per_clip` of the world model sizes small/base/large, from the pretrain configs' clip length and
  image size (the model is built on the meta device: no weights are allocated).
- the GPU's dense bf16 peak (unified_action.training.trainer.PEAK_BF16) and an ASSUMED model FLOPs utilization.

Prints the plan tables, writes benchmarks/results/scaling.json and benchmarks/results/scaling.md, and with
--update-doc replaces the generated block of docs/scaling.md.

    PYTHONPATH=. .venv/bin/python benchmarks/scaling.py --update-doc docs/scaling.md
    PYTHONPATH=. .venv/bin/python benchmarks/scaling.py --bytes-per-frame-json benchmarks/results/data.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_CSV = ROOT / "benchmarks" / "openx_datasets.csv"
RESOLUTIONS = (64, 128, 256)
SIZES = ("small", "base", "large")
# GPUs per job, from the pretrain configs' headers: small "one GPU node (8 x 80 GB)", base "2-4 GPU nodes",
# large "8+ GPU nodes" (8 GPUs a node). Only the configured run's wall-clock depends on it.
CONFIG_GPUS = {"small": 8, "base": 16, "large": 64}
# ClipLoader CPU per 8-frame 64x64 PNG clip, layout v1, 2 workers (benchmarks/README.md, "Data pipeline"); scaled
# linearly to a clip's frames to estimate the loader cores a GPU needs at 64x64 (other sizes: not measured)
# the loader's CPU per 8-frame 64x64 clip: benchmarks/data.py's measurement when its JSON is there (2 workers,
# every thread and process counted), else the layout-1 figure of benchmarks/README.md
LOADER_CPU = {"ms_per_clip": 3.41, "source": "layout 1, 64x64 PNG, benchmarks/README.md"}
FORMATS = ("zlib", "png", "jpeg")  # layout 2's frame codecs (unified_action.data.shards.FRAME_CODECS)
DEFAULT_FORMAT = "zlib"  # WriteSettings().image_format


def read_loader_cpu(path: Path) -> None:
    """Take the loader's CPU ms per clip from benchmarks/data.py's JSON, if it has one."""
    try:
        clips = json.loads(path.read_text())["clips"]["ClipLoader (2 workers)"]
        LOADER_CPU.update(ms_per_clip=float(clips["cpu_ms_per_clip"]), source=f"measured, {path.name}, 2 workers")
    except (OSError, ValueError, KeyError, TypeError):
        pass
ACTION_DIMS = 7  # OXE's common action: xyz delta, rotation delta, gripper (Octo/OpenVLA standardize to this)
CSV_COLUMNS = ("name", "episodes", "steps", "steps_episodes", "control_hz", "camera", "octo_magic_soup_weight",
               "episodes_source", "steps_source", "hz_source", "camera_source", "note")
DOC_BEGIN, DOC_END = "<!-- scaling:begin (benchmarks/scaling.py writes this block) -->", "<!-- scaling:end -->"


def fail(msg: str) -> None:
    from unified_action.errors import UnifiedActionError

    raise UnifiedActionError(msg)


# ----------------------------------------------------------------------------------------- published counts
@dataclass(frozen=True)
class Row:
    name: str
    episodes: int | None
    steps: int | None
    steps_episodes: int | None  # episodes the step count covers (a port may hold one split only)
    control_hz: float | None
    camera: str
    weight: float | None
    duplicate: bool
    sources: dict


def _num(value: str, kind, where: str):
    if value.strip() == "":
        return None
    try:
        out = kind(value)
    except ValueError:
        fail(f"{where}: '{value}' is not a number (leave the cell empty for a figure that was not found)")
    if out <= 0:
        fail(f"{where}: {value} must be > 0")
    return out


def load_mixture(path: Path) -> list[Row]:
    """The dataset table, checked: every figure has a source URL, every count is a positive number."""
    if not path.is_file():
        fail(f"{path}: no such file (the published OXE counts, see docs/scaling.md)")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            fail(f"{path}: header lacks column '{missing[0]}' (expected {', '.join(CSV_COLUMNS)})")
        rows, seen = [], set()
        for i, r in enumerate(reader, start=2):
            at = f"{path}:{i}"
            if r["name"] in seen:
                fail(f"{at}: name: '{r['name']}' is listed twice")
            seen.add(r["name"])
            row = Row(name=r["name"], episodes=_num(r["episodes"], int, f"{at}: episodes"),
                      steps=_num(r["steps"], int, f"{at}: steps"),
                      steps_episodes=_num(r["steps_episodes"], int, f"{at}: steps_episodes"),
                      control_hz=_num(r["control_hz"], float, f"{at}: control_hz"), camera=r["camera"],
                      weight=_num(r["octo_magic_soup_weight"], float, f"{at}: octo_magic_soup_weight"),
                      duplicate="left out of the totals" in r["note"],
                      sources={k: r[k] for k in ("episodes_source", "steps_source", "hz_source", "camera_source")})
            for fig, src in (("episodes", "episodes_source"), ("steps", "steps_source"), ("control_hz", "hz_source")):
                if getattr(row, fig) is not None and not r[src].strip():
                    fail(f"{at}: {fig}: {getattr(row, fig)} has no {src}")
            if (row.steps is None) != (row.steps_episodes is None):
                fail(f"{at}: steps_episodes: give it exactly when steps is given (the episodes the step count covers)")
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------- measured bytes per frame
def _resized_card(card: Path, out: Path, size: int) -> Path:
    """A copy of a simulator card that renders at size x size (the card is data: only its text changes)."""
    text = card.read_text()
    render, camera = "width: 64, height: 64}", "height: 64, width: 64,"
    if render not in text or camera not in text:
        fail(f"{card}: expected '{render}' (env_kwargs) and '{camera}' (cameras) to render it at {size}x{size}")
    new = text.replace(render, f"width: {size}, height: {size}}}").replace(camera, f"height: {size}, width: {size},")
    path = out / card.name
    path.write_text(new)
    return path


def _frame_members(ds_dir: Path) -> tuple[int, int]:
    """(frame images stored, their bytes without tar headers and padding): the frames to divide by, and the
    container's overhead on top of the image payload."""
    count = payload = 0
    for tar in sorted(ds_dir.glob("*.tar")):
        with tarfile.open(tar) as t:
            frames = [m for m in t.getmembers() if m.name.rsplit(".", 1)[-1] in ("png", "jpg")]
        count, payload = count + len(frames), payload + sum(m.size for m in frames)
    return count, payload


def _per_frame(ds_dir: Path) -> dict:
    """Shard bytes per stored frame: every step of every camera is one frame, whatever the layout packs them in."""
    from unified_action.data.dataset import open_dataset

    ds = open_dataset(ds_dir)
    frames = ds.manifest["steps"] * len(ds.card.header.cameras)
    members, payload = _frame_members(ds_dir)  # one image member per frame in layout v1; none if frames are packed
    return {"bytes_per_frame": ds.manifest["bytes"] / frames,
            "frame_payload_bytes": payload / frames if members == frames else None, "frames": frames,
            "shard_bytes": ds.manifest["bytes"], "layout": ds.manifest.get("layout")}


def measure_bytes_per_frame(episodes: int, steps: int, work: Path, log=print) -> dict:
    """Record each source once at its native size, convert it to every resolution and format; bytes per frame."""
    os.environ.setdefault("MUJOCO_GL", "egl")  # Meta-World renders headless; the recording workers inherit it
    from unified_action.data.convert import SourceSpec, WriteSettings, write_dataset
    from unified_action.data.shards import LAYOUT_VERSION

    sources = {"metaworld_256": (_resized_card(ROOT / "data_cards" / "metaworld_pick_place.md", work, 256), 256),
               "carracing_96": (ROOT / "data_cards" / "carracing.md", 96)}
    out: dict = {"layout_version": LAYOUT_VERSION, "episodes": episodes, "steps": steps, "sources": {}}
    for name, (card, native) in sources.items():
        t0 = time.perf_counter()
        raw = work / f"{name}_native"
        write_dataset(SourceSpec(card_path=str(card), kind="sim", episodes=episodes, steps=steps, seed=0), raw,
                      workers=1, settings=WriteSettings(image_size=None), progress=False)
        log(f"{name}: recorded {episodes} x {steps} steps at {native}x{native} in {time.perf_counter() - t0:.0f} s")
        res = {}
        for fmt in FORMATS:
            for r in RESOLUTIONS:
                d = work / f"{name}_{fmt}_{r}"
                write_dataset(SourceSpec(card_path=str(card), kind="shards", root=str(raw)), d, workers=1,
                              settings=WriteSettings(image_size=(r, r), image_format=fmt), progress=False)
                res[f"{fmt}_{r}"] = _per_frame(d) | {"upsampled": r > native}
        out["sources"][name] = {"native": native, "card": str(card.relative_to(ROOT)) if card.is_relative_to(ROOT)
                                else f"data_cards/metaworld_pick_place.md rendered at {native}x{native}", "resolutions": res}
    # the plan uses the default frame codec of the source rendered at or above every resolution
    mw = out["sources"]["metaworld_256"]["resolutions"]
    out["bytes_per_frame"] = {str(r): mw[f"{DEFAULT_FORMAT}_{r}"]["bytes_per_frame"] for r in RESOLUTIONS}
    out["measured_on"] = f"metaworld_256, {DEFAULT_FORMAT} (the default --image-format)"
    return out


def bytes_from_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        fail(f"{path}: cannot be read as JSON ({type(e).__name__})")
    bpf = d.get("bytes_per_frame")
    if not isinstance(bpf, dict) or not all(str(r) in bpf for r in RESOLUTIONS):
        fail(f"{path}: bytes_per_frame: expected a mapping with keys {', '.join(map(str, RESOLUTIONS))} "
             f"(bytes per stored frame at each square resolution)")
    return d | {"bytes_per_frame": {str(r): float(bpf[str(r)]) for r in RESOLUTIONS},
                "layout_version": d.get("layout_version"),
                "measured_on": f"{d.get('measured_on', 'given')}, read from {path}"}


# ----------------------------------------------------------------------------------------- model FLOPs
def model_figures(size: str, image_size: tuple[int, int], frames: int, context: int, max_action_tokens: int) -> dict:
    """flops_per_clip and parameter count of a size, built on the meta device (no memory for weights)."""
    import torch

    from unified_action.models.world_model import WorldModel, count_parameters, model_config

    cfg = model_config(size, image_size=image_size, max_frames=frames, context_frames=context,
                       max_action_tokens=max_action_tokens)
    with torch.device("meta"):
        model = WorldModel(cfg)
    return {"flops_per_clip": float(model.flops_per_clip(frames)), "parameters": count_parameters(model),
            "tokens_per_frame": cfg.tokens_per_frame, "width": cfg.width, "depth": cfg.depth}


# ----------------------------------------------------------------------------------------- the plan
def chunk_length(hz: float, seconds: float) -> int:
    """Steps per action chunk = per frame: the project's cards use one second (fractal 3 steps at 3 Hz, bridge 5 at 5)."""
    return max(1, round(hz * seconds))


def bin_tokens(chunk: int, dims: int) -> int:
    """A bin tokenizer's padded length: <bos> <embodiment> chunk x dims values <eos> (carracing: 5 x 3 + 3 = 18)."""
    return chunk * dims + 3


def scopes(rows: list[Row]) -> dict[str, list[dict]]:
    """Per-dataset steps for the two scopes of the plan: published step counts only, and every listed episode
    with the steps of uncovered episodes extrapolated at the covered datasets' mean steps per episode."""
    used = [r for r in rows if not r.duplicate and r.control_hz is not None]
    covered = [r for r in used if r.steps is not None]
    mean = sum(r.steps for r in covered) / sum(r.steps_episodes for r in covered)
    pub = [{"name": r.name, "steps": r.steps, "episodes": r.steps_episodes, "hz": r.control_hz} for r in covered]
    ext = []
    for r in used:
        if r.episodes is None and r.steps is None:
            continue
        eps = r.episodes or r.steps_episodes
        known = r.steps or 0
        extra = (eps - (r.steps_episodes or 0)) * mean
        ext.append({"name": r.name, "steps": known + extra, "episodes": eps, "hz": r.control_hz,
                    "extrapolated_steps": extra})
    return {"published": pub, "extrapolated": ext, "mean_steps_per_episode": mean}


def plan(datasets: list[dict], bpf: dict, models: dict, configs: dict, gpu: str, peak: float, mfu: float,
         chunk_seconds: float) -> dict:
    frames = sum(d["steps"] for d in datasets)
    episodes = sum(d["episodes"] for d in datasets)
    per = []
    for d in datasets:
        L = chunk_length(d["hz"], chunk_seconds)
        per.append(d | {"chunk": L, "stride_frames": d["steps"] / L, "action_tokens": d["steps"] / L * bin_tokens(L, ACTION_DIMS),
                        "mean_episode_steps": d["steps"] / d["episodes"]})
    stride_frames = sum(p["stride_frames"] for p in per)
    tokens = sum(p["action_tokens"] for p in per)
    storage = {r: frames * bpf[str(r)] for r in RESOLUTIONS}
    out = {"datasets": len(datasets), "episodes": episodes, "stored_frames": frames, "stride_frames": stride_frames,
           "action_tokens_per_pass": tokens, "storage_bytes": {str(r): storage[r] for r in RESOLUTIONS}, "sizes": {}}
    for size in SIZES:
        c, m = configs[size], models[size]
        F, res = c["frames"], c["image_size"][0]
        clips = stride_frames / F  # one pass: every frame at the chunk stride enters one clip once
        spans = [p for p in per if p["mean_episode_steps"] < F * p["chunk"] and not p.get("extrapolated_steps")]
        rate = peak * mfu / m["flops_per_clip"]  # clips per second per GPU
        # The loader streams every shard once per epoch and its default clip stride (half a span) puts each
        # frame in two clips: an epoch is two passes, and reads the stored bytes once.
        bytes_per_clip = storage[res] / (2 * clips) if res in storage else None
        run_clips = c["steps"] * c["global_batch"]
        cores = rate * LOADER_CPU["ms_per_clip"] * F / 8 / 1e3 if res == 64 else None
        out["sizes"][size] = {
            "loader_cores_per_gpu": cores,
            "image_size": res, "frames_per_clip": F, "parameters": m["parameters"], "flops_per_clip": m["flops_per_clip"],
            "clips_per_pass": clips, "clips_per_s_per_gpu": rate,
            "gpu_hours_per_pass": clips * m["flops_per_clip"] / (peak * mfu) / 3600,
            "read_mb_s_per_gpu": rate * bytes_per_clip / 1e6 if bytes_per_clip else None,
            "configured_run": {"optimizer_steps": c["steps"], "global_batch": c["global_batch"], "gpus": c["gpus"],
                               "clips": run_clips, "passes": run_clips / clips,
                               "gpu_hours": run_clips * m["flops_per_clip"] / (peak * mfu) / 3600,
                               "wall_hours": run_clips * m["flops_per_clip"] / (peak * mfu * c["gpus"]) / 3600},
            "datasets_shorter_than_clip": [p["name"] for p in spans],
        }
    out["per_dataset"] = per
    return out


def load_configs(max_action_tokens: int) -> tuple[dict, dict]:
    from unified_action.training.config import load_config

    configs, models = {}, {}
    for size in SIZES:
        cfg = load_config(size)
        F = cfg.data.context_frames + cfg.data.future_frames
        configs[size] = {"frames": F, "context": cfg.data.context_frames, "image_size": tuple(cfg.data.image_size),
                         "steps": cfg.train.steps, "gpus": CONFIG_GPUS[size],
                         "global_batch": cfg.train.micro_batch * cfg.train.grad_accum * CONFIG_GPUS[size]}
        models[size] = model_figures(cfg.model.size, tuple(cfg.data.image_size), F, cfg.data.context_frames,
                                     max_action_tokens)
    return configs, models


# ----------------------------------------------------------------------------------------- tables
def _si(x: float, unit: str = "") -> str:
    for k, p in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= p:
            return f"{x / p:.2f} {k}{unit}".rstrip()
    return f"{x:.0f} {unit}".rstrip()


def _tb(x: float) -> str:
    return f"{x / 1e12:.2f} TB" if x >= 1e11 else f"{x / 1e9:.1f} GB"


def markdown(result: dict) -> str:
    b, p, c = result["bytes"], result["plans"], result["coverage"]
    lines = [f"Coverage of `benchmarks/openx_datasets.csv`: {c['rows']} datasets listed; published episode counts "
             f"for {c['with_episodes']}, step counts for {c['with_steps']}, control rates for {c['with_hz']} "
             "(the rest are marked missing below).", "",
             f"Measured bytes per stored frame ({b.get('measured_on')}, layout v{b.get('layout_version')}):", "",
             "| resolution | bytes/frame | of which frame payload |", "|---|---|---|"]
    src = result["bytes"].get("sources", {}).get("metaworld_256", {}).get("resolutions", {})
    for r in RESOLUTIONS:
        pay = src.get(f"{DEFAULT_FORMAT}_{r}", {}).get("frame_payload_bytes")
        lines.append(f"| {r}x{r} | {b['bytes_per_frame'][str(r)]:,.0f} | {f'{pay:,.0f}' if pay else 'n/a'} |")
    if src:
        lines += ["", "Other measured sources and formats (bytes/frame; 'up' = upsampled above the native render):", "",
                  "| source | " + " | ".join(f"{f} {r}" for f in FORMATS for r in RESOLUTIONS) + " |",
                  "|---|" + "---|" * (len(FORMATS) * len(RESOLUTIONS))]
        for name, s in result["bytes"]["sources"].items():
            cells = [f"{s['resolutions'][f'{f}_{r}']['bytes_per_frame']:,.0f}{' up' if s['resolutions'][f'{f}_{r}']['upsampled'] else ''}"
                     for f in FORMATS for r in RESOLUTIONS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for scope, title in (("published", "published step counts only"),
                         ("extrapolated", "all listed episodes, uncovered steps extrapolated")):
        q = p[scope]
        lines += ["", f"**Scope: {title}** ({q['datasets']} datasets, {q['episodes']:,} episodes, "
                  f"{q['stored_frames']:,.0f} stored frames, {_si(q['action_tokens_per_pass'])} action tokens per pass)", "",
                  "| | 64x64 | 128x128 | 256x256 |", "|---|---|---|---|",
                  "| storage (one camera) | " + " | ".join(_tb(q["storage_bytes"][str(r)]) for r in RESOLUTIONS) + " |", "",
                  "| size | image | params | FLOPs/clip | clips/pass (upper bound) | clips/s/GPU | GPU-h/pass | read MB/s/GPU "
                  "| configured run: clips, passes, GPU-h, wall h on N GPUs |", "|---|---|---|---|---|---|---|---|---|"]
        for size, s in q["sizes"].items():
            run = s["configured_run"]
            lines.append(f"| {size} | {s['image_size']} | {_si(s['parameters'])} | {_si(s['flops_per_clip'], 'FLOP')} "
                         f"| {_si(s['clips_per_pass'])} | {s['clips_per_s_per_gpu']:,.0f} | {s['gpu_hours_per_pass']:.3g} "
                         f"| {s['read_mb_s_per_gpu']:.1f} | {_si(run['clips'])}, {run['passes']:.1f}, "
                         f"{run['gpu_hours']:,.0f}, {run['wall_hours']:,.1f} on {run['gpus']} |")
        cores = {k: v["loader_cores_per_gpu"] for k, v in q["sizes"].items() if v["loader_cores_per_gpu"]}
        lines += ["", f"Loader CPU cores a GPU needs at that rate ({LOADER_CPU['source']}: "
                  f"{LOADER_CPU['ms_per_clip']} ms per 8-frame clip): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in cores.items()) + "."]
        short = q["sizes"]["small"]["datasets_shorter_than_clip"]
        if scope == "published":
            lines += ["", "Datasets whose MEAN published episode is shorter than a 16-frame clip's span (16 chunks): "
                      f"{', '.join(short) if short else 'none'}. The loader cuts no clip from an episode shorter than "
                      "the span, so for these the clips per pass are far below the upper bound."]
    a = result["assumptions"]
    lines += ["", f"GPU {a['gpu']} at {a['peak_flops'] / 1e12:.0f} TFLOP/s dense bf16, MFU {a['mfu']:.0%} (assumed); "
              f"action chunk {a['chunk_seconds']:g} s, {a['action_dims']} action dims, bin tokenizer. "
              f"Generated {result['generated_at']} by `{result['command']}`."]
    return "\n".join(lines) + "\n"


def per_dataset_table(rows: list[Row]) -> str:
    lines = ["| dataset | episodes | steps | Hz | mean episode | camera (H x W) | Octo weight |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        def cell(v, fmt="{:,}"):
            return fmt.format(v) if v is not None else "missing"
        steps = cell(r.steps) + (f" ({r.steps_episodes:,} ep)" if r.steps and r.steps_episodes != r.episodes else "")
        name = f"{r.name} (duplicate, not counted)" if r.duplicate else r.name
        mean = (f"{r.steps / r.steps_episodes:.0f} steps" + (f", {r.steps / r.steps_episodes / r.control_hz:.1f} s"
                                                               if r.control_hz else "")) if r.steps else ""
        lines.append(f"| {name} | {cell(r.episodes)} | {steps} | {cell(r.control_hz, '{:g}')} | {mean} "
                     f"| {r.camera or 'missing'} | {cell(r.weight, '{:g}') if r.weight else ''} |")
    return "\n".join(lines) + "\n"


def update_doc(doc: Path, block: str) -> None:
    text = doc.read_text()
    if DOC_BEGIN not in text or DOC_END not in text:
        fail(f"{doc}: the generated block markers are missing ('{DOC_BEGIN}' ... '{DOC_END}')")
    head, rest = text.split(DOC_BEGIN, 1)
    tail = rest.split(DOC_END, 1)[1]
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(head + DOC_BEGIN + "\n" + block + DOC_END + tail)
    tmp.replace(doc)


# ----------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", type=Path, default=DEFAULT_CSV, help="published counts (CSV)")
    ap.add_argument("--bytes-per-frame-json", type=Path, help="take bytes per frame from this JSON instead of measuring")
    ap.add_argument("--episodes", type=int, default=4, help="episodes recorded per source for the measurement")
    ap.add_argument("--steps", type=int, default=100, help="steps per recorded episode")
    ap.add_argument("--gpu", default="H100", help="GPU whose dense bf16 peak sets the step rate (trainer.PEAK_BF16)")
    ap.add_argument("--mfu", type=float, default=0.40, help="assumed model FLOPs utilization (0-1)")
    ap.add_argument("--chunk-seconds", type=float, default=1.0, help="action chunk = frame stride, in seconds")
    ap.add_argument("--out", type=Path, default=RESULTS / "scaling.json")
    ap.add_argument("--update-doc", type=Path, help="replace the generated block of this markdown file")
    args = ap.parse_args(argv)
    from unified_action.training.trainer import PEAK_BF16

    if args.gpu not in PEAK_BF16:
        fail(f"--gpu: unknown GPU '{args.gpu}' (known: {', '.join(PEAK_BF16)})")
    if not 0 < args.mfu <= 1:
        fail(f"--mfu: {args.mfu} must be in (0, 1]")
    rows = load_mixture(args.datasets)
    read_loader_cpu(RESULTS / "data.json")
    if args.bytes_per_frame_json:
        bpf = bytes_from_json(args.bytes_per_frame_json)
    else:
        with tempfile.TemporaryDirectory(prefix="uact_scaling_") as tmp:
            bpf = measure_bytes_per_frame(args.episodes, args.steps, Path(tmp))
        # in the --bytes-per-frame-json format, so a later run can reuse the measurement
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "bytes_per_frame.json").write_text(json.dumps(bpf, indent=1) + "\n")
    sc = scopes(rows)
    hz = [r.control_hz for r in rows if r.control_hz and not r.duplicate]
    max_tokens = bin_tokens(chunk_length(max(hz), args.chunk_seconds), ACTION_DIMS)
    configs, models = load_configs(max_tokens)
    peak = PEAK_BF16[args.gpu]
    plans = {k: plan(sc[k], bpf["bytes_per_frame"], models, configs, args.gpu, peak, args.mfu, args.chunk_seconds)
             for k in ("published", "extrapolated")}
    result = {
        "generated_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/scaling.py" + (f" --bytes-per-frame-json {args.bytes_per_frame_json}"
                                                     if args.bytes_per_frame_json else ""),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs (shared)",
        "assumptions": {"gpu": args.gpu, "peak_flops": peak, "mfu": args.mfu, "chunk_seconds": args.chunk_seconds,
                        "action_dims": ACTION_DIMS, "max_action_tokens": max_tokens, "config_gpus": CONFIG_GPUS,
                        "mean_steps_per_episode_for_extrapolation": sc["mean_steps_per_episode"]},
        "bytes": bpf, "configs": configs, "models": models, "plans": plans,
        "coverage": {"rows": len(rows), "with_episodes": sum(r.episodes is not None for r in rows),
                     "with_steps": sum(r.steps is not None for r in rows),
                     "with_hz": sum(r.control_hz is not None for r in rows)},
        "datasets": [asdict(r) for r in rows],
    }
    md = markdown(result)
    print(md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    md_path = args.out.with_suffix(".md")
    md_path.write_text(md + "\n" + per_dataset_table(rows))
    print(f"wrote {args.out} and {md_path}")
    if args.update_doc:
        update_doc(args.update_doc, md + "\n### Per dataset\n\n" + per_dataset_table(rows))
        print(f"updated {args.update_doc}")
    return 0


if __name__ == "__main__":
    from unified_action.errors import UnifiedActionError

    try:
        raise SystemExit(main())
    except UnifiedActionError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
