"""The pictures and the report of an evaluation: strips, GIFs, metric plots, metrics.json and one report.html.

report.html embeds every image as a base64 data URI, so the one file opens anywhere (mailed, attached to an
issue) without its directory. The whole directory is written into `<out>.tmp` and renamed into place: an
interrupted run leaves no half-written report where a previous complete one was.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from unified_action.atomic import writing
from unified_action.evaluation import metrics as M
from unified_action.evaluation.rollouts import METRICS, DatasetResult, EvalResult, Example
from unified_action.outputs import OutputKind, fresh_tmp, replace_dir

CONTEXT_RGB = (40, 110, 230)  # border of the real frames given to the model
FUTURE_RGB = (200, 200, 200)  # border of every other frame
BORDER = 3
LABEL_W = 110
MIN_TILE = 96  # frames are upscaled (nearest) to at least this size: 32x32 thumbnails are unreadable
TABLE_METRICS = ("psnr", "ssim", "baseline_psnr", "baseline_ssim", "dpsnr")


def _scale(frame_hw: tuple[int, int]) -> int:
    return max(1, math.ceil(MIN_TILE / max(frame_hw)))


def _tile(frame: np.ndarray, scale: int, colour: tuple[int, int, int]) -> Image.Image:
    img = Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST)
    out = Image.new("RGB", (img.width + 2 * BORDER, img.height + 2 * BORDER), colour)
    out.paste(img, (BORDER, BORDER))
    return out


def strip(ex: Example) -> Image.Image:
    """Rows: real, generated, other actions, the simulator under those actions; columns: the context frames (blue border) then the horizon. The context
    frames are repeated in every row so each row reads as one clip."""
    scale = _scale(ex.context.shape[1:3])
    rows = [("real", ex.real), ("generated", ex.generated)]
    if ex.counterfactual is not None:
        rows.append(("other actions", ex.counterfactual))
    if ex.truth is not None:
        rows.append(("simulator, other", ex.truth))  # what the world does under those other actions
    C = len(ex.context)
    tiles = [[_tile(f, scale, CONTEXT_RGB) for f in ex.context] + [_tile(f, scale, FUTURE_RGB) for f in future]
             for _, future in rows]
    tw, th = tiles[0][0].size
    img = Image.new("RGB", (LABEL_W + tw * len(tiles[0]), 16 + th * len(rows)), "white")
    draw = ImageDraw.Draw(img)
    for c in range(len(tiles[0])):
        draw.text((LABEL_W + c * tw + 4, 2), f"ctx {c + 1}" if c < C else f"+{c - C + 1}", fill="black")
    for r, ((label, _), row) in enumerate(zip(rows, tiles)):
        draw.text((4, 16 + r * th + th // 2 - 6), label, fill="black")
        for c, t in enumerate(row):
            img.paste(t, (LABEL_W + c * tw, 16 + r * th))
    return img


def gif_frames(ex: Example) -> list[Image.Image]:
    """One animation frame per clip frame: real | generated | other actions side by side, context marked."""
    scale = _scale(ex.context.shape[1:3])
    columns = [("real", ex.real), ("generated", ex.generated)]
    if ex.counterfactual is not None:
        columns.append(("other actions", ex.counterfactual))
    if ex.truth is not None:
        columns.append(("simulator, other", ex.truth))
    C, out = len(ex.context), []
    for f in range(C + len(ex.real)):
        if f < C:
            tiles = [_tile(ex.context[f], scale, CONTEXT_RGB) for _ in columns]
        else:
            tiles = [_tile(frames[f - C], scale, FUTURE_RGB) for _, frames in columns]
        img = Image.new("RGB", (sum(t.width for t in tiles), 16 + tiles[0].height), "white")
        draw = ImageDraw.Draw(img)
        for i, ((label, _), t) in enumerate(zip(columns, tiles)):
            img.paste(t, (i * t.width, 16))
            draw.text((i * t.width + 4, 2), f"{label} {'ctx ' + str(f + 1) if f < C else '+' + str(f - C + 1)}", fill="black")
        out.append(img)
    return out


def plot_metrics(r: DatasetResult, path: Path) -> None:
    """PSNR and SSIM per horizon step against copy-last (dashed), and dPSNR: one PNG per embodiment."""
    from matplotlib.figure import Figure  # the Agg canvas, without pyplot's global state or a display

    steps = r.steps()
    x = np.arange(1, len(steps["psnr"]) + 1)
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, key, base in ((axes[0], "psnr", "baseline_psnr"), (axes[1], "ssim", "baseline_ssim"), (axes[2], "dpsnr", None)):
        ax.plot(x, steps[key], "o-", label="model")
        if base:
            ax.plot(x, steps[base], "--", color="grey", label="copy last frame")
        else:
            ax.axhline(0.0, color="grey", linestyle="--", label="no control")
        ax.set_xlabel("horizon step")
        ax.set_title(METRICS[key][0])
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{r.name} ({r.embodiment}): {r.clips} clips of episodes [{r.episodes[0]}, {r.episodes[1]})")
    fig.savefig(path, dpi=90)


def _fmt(v: float, key: str) -> str:
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.4f}" if key in ("ssim", "baseline_ssim") else f"{v:.2f}"


def table_rows(r: DatasetResult) -> list[list[str]]:
    """[step, metric...] per horizon step, then 'all': what both the terminal and the HTML tables show."""
    steps, overall = r.steps(), r.overall()
    rows = [[str(i + 1)] + [_fmt(steps[k][i], k) for k in TABLE_METRICS] for i in range(len(steps["psnr"]))]
    rows.append(["all"] + [_fmt(overall[k], k) for k in TABLE_METRICS])
    return rows


def table_header() -> list[str]:
    return ["step"] + [METRICS[k][0] for k in TABLE_METRICS]


def _data_uri(path: Path) -> str:
    mime = {".png": "image/png", ".gif": "image/gif"}[path.suffix]
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


# Sets body[data-images-loaded] to the number of images that decoded, once everything has loaded: lets a headless
# browser (tests/evaluation) prove the embedded images render, not only that the markup holds them.
_LOAD_SCRIPT = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  document.body.dataset.imagesTotal = imgs.length;
  document.body.dataset.imagesLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
});
</script>"""

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}tr:last-child td{font-weight:bold}
img{image-rendering:pixelated;max-width:100%}.note{color:#a60}figure{margin:1em 0}"""


def _section(r: DatasetResult, files: dict[str, list[Path]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in table_header())
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in table_rows(r))
    parts = [f"<h2>{e(r.name)} <small>({e(r.embodiment)})</small></h2>",
             f"<p>{r.clips} held-out clips of episodes [{r.episodes[0]}, {r.episodes[1]}) of <code>{e(r.path)}</code></p>",
             *(f'<p class="note">{e(n)}</p>' for n in r.notes),
             f"<table><tr>{head}</tr>{body}</table>"]
    if r.agents:  # one agent's actions swapped at a time (evaluation/agents.py)
        rows = "".join(f"<tr><td>{e(a)}</td><td>{M.overall(m['dpsnr']):.2f}</td><td>{M.overall(m['action_accuracy']):.2f}</td>"
                       f"<td>{m['attribution']:.1f}</td><td>{m['share']:.2f}</td></tr>" for a, m in r.agents.items())
        parts.append("<table><tr><th>agent swapped</th><th>dPSNR (dB)</th><th>action accuracy</th>"
                     f"<th>change in its region / elsewhere</th><th>share in its region</th></tr>{rows}</table>")
    for p in files[r.name]:
        parts.append(f'<figure><img src="{_data_uri(p)}" alt="{e(p.name)}"><figcaption>{e(p.name)}</figcaption></figure>')
    return "\n".join(parts)


def comparison_rows(result: EvalResult, reference: EvalResult) -> list[list[str]]:
    """Per dataset both models evaluated on: [dataset, reference PSNR, this PSNR, forgetting (reference - this),
    reference dPSNR, this dPSNR, copy-last PSNR]."""
    ref = {r.name: r.overall() for r in reference.datasets}
    rows = []
    for r in result.datasets:
        if r.name in ref:
            o, q = r.overall(), ref[r.name]
            rows.append([r.name, _fmt(q["psnr"], "psnr"), _fmt(o["psnr"], "psnr"), _fmt(q["psnr"] - o["psnr"], "psnr"),
                         _fmt(q["dpsnr"], "dpsnr"), _fmt(o["dpsnr"], "dpsnr"), _fmt(o["baseline_psnr"], "psnr")])
    return rows


def _comparison(result: EvalResult, reference: EvalResult, label: str) -> str:
    e = html.escape
    head = ["dataset", f"{label} PSNR", "PSNR", "forgetting (dB)", f"{label} dPSNR", "dPSNR", "copy-last PSNR"]
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in comparison_rows(result, reference))
    return (f"<h2>Side by side: <code>{e(reference.model)}</code> ({e(label)}) and this model</h2>"
            f"<p>The same held-out clips, noise and sampling; forgetting = {e(label)} PSNR minus this model's.</p>"
            f"<table><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr>{body}</table>")


def render_html(result: EvalResult, files: dict[str, list[Path]], reference: EvalResult | None = None,
                reference_label: str = "reference") -> str:
    e = html.escape
    sections = "\n".join(_section(r, files) for r in result.datasets)
    if reference is not None:
        sections = _comparison(result, reference, reference_label) + "\n" + sections
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>uact eval: {e(result.model)}</title><style>{_STYLE}</style></head>
<body>
<h1>World model evaluation</h1>
<p>Model <code>{e(result.model)}</code>: {result.context_frames} context frames, {result.horizon} generated open-loop with the
real actions ({result.steps} sampling steps, guidance {result.guidance:g}, changes under {result.min_change:g} grey levels
dropped, seed {result.seed}). copy-last: the last context frame repeated.
dPSNR: PSNR with the clip's own actions minus PSNR with the actions of a clip of another episode, same noise
(&gt; 0: the model follows its actions). For a dataset recorded from a simulator, the simulator is stepped again under
those other actions: PSNR vs simulator and action accuracy (the share of clip steps where the rollout under the other
actions is closer to the simulator under them than to the real future; ~0.5 for a model that ignores its actions).
Strips: real, generated, other actions, simulator under them; context frames with a blue border.</p>
{sections}
{_LOAD_SCRIPT}
</body></html>
"""


def _clean_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


# every file write_report makes: an existing report directory is replaced only when it holds nothing else
REPORT = OutputKind("an evaluation report", r"metrics\.json|report\.html|[\w-]+_metrics\.png|[\w-]+_clip\d+\.(png|gif)")


def write_report(result: EvalResult, out: str | Path, reference: EvalResult | None = None,
                 reference_label: str = "reference") -> Path:
    """Write strips, GIFs, plots, metrics.json and report.html into `out` (replaced whole) -> report.html's path.
    reference: another model's evaluation on some of the same datasets (e.g. the pretrained model before a
    fine-tune), shown side by side at the top and kept in metrics.json as "reference"."""
    out = Path(out)
    tmp = fresh_tmp(out, REPORT)
    with writing(out, tmp):  # a full disk: one line, and no half report left holding space
        files: dict[str, list[Path]] = {}
        for r in result.datasets:
            stem = _clean_name(r.name)
            files[r.name] = [tmp / f"{stem}_metrics.png"]
            plot_metrics(r, files[r.name][0])
            for i, ex in enumerate(r.examples):
                png, gif = tmp / f"{stem}_clip{i}.png", tmp / f"{stem}_clip{i}.gif"
                strip(ex).save(png)
                frames = gif_frames(ex)
                frames[0].save(gif, save_all=True, append_images=frames[1:], duration=250, loop=0)
                files[r.name] += [png, gif]
            for i, (agent, ex) in enumerate(r.agent_examples):  # one strip per swapped agent
                png = tmp / f"{stem}_agent_{_clean_name(agent)}_clip{i}.png"
                strip(ex).save(png)
                files[r.name].append(png)
        metrics = result.to_json()
        if reference is not None:
            metrics["reference"] = {"label": reference_label, **reference.to_json()}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        (tmp / "report.html").write_text(render_html(result, files, reference, reference_label), encoding="utf-8")
    return replace_dir(tmp, out, REPORT) / "report.html"
