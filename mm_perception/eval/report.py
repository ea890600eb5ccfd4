"""Evaluation report: ``metrics.json``, ``report.md``, ``report.html`` and pictures.

Written by :func:`write_report` from an :class:`~mm_perception.eval.runner.EvalResult`:

* ``metrics.json``: every list's detection metrics (AP per class and threshold, TP errors,
  counts, precision-recall curves) and tracking metrics, the headline summary, stage timings,
  the offline replay summaries and the pipeline's notes;
* ``pr_curves.png``: precision-recall curves at 2 m of every list for each class with ground
  truth;
* ``bev_<k>.png``: bird's-eye views of kept frames: LiDAR points, ground truth, the fused
  (output-level) detections, and the tracks with ids and velocity arrows;
* ``camera_<k>.png``: the camera image with the projected LiDAR points (coloured by depth),
  the 2D detections and the fused 3D boxes projected;
* ``report.md`` / ``report.html``: tables (headline, AP per class, TP errors, tracking, and
  with BEV variants evaluated the section "Feature-level fusion: models and modalities") and
  the pictures.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mm_perception.core.calibration import Rig
from mm_perception.core.types import Box3D, ObjectClass, TrackStatus
from mm_perception.eval.feature_table import TABLE_COLUMNS, format_cell
from mm_perception.eval.runner import EvalResult, PictureFrame

#: list name -> what it is, for the report
LIST_TITLES: Mapping[str, str] = {
    "lidar": "LiDAR only", "radar": "radar only", "camera": "camera only",
    "data": "data-level fusion (painted LiDAR)", "output": "output-level fusion",
    "feature": "feature-level fusion (BEV model)",
}
_COLOURS = {"lidar": "tab:blue", "radar": "tab:red", "camera": "tab:green",
            "data": "tab:purple", "output": "black", "feature": "tab:orange"}
#: heading of the feature-level comparison section
FEATURE_SECTION = "Feature-level fusion: models and modalities"


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _box_outline(box: Box3D) -> np.ndarray:
    """``(5, 2)`` closed BEV outline of a box."""
    c = box.corners()[:4, :2]
    return np.vstack([c, c[:1]])


def plot_pr_curves(result: EvalResult, path: Path, threshold: float = 2.0) -> None:
    """Precision-recall curves at ``threshold`` metres, one panel per class with truth."""
    plt = _plt()
    classes = [c for c in result.detection[result.lists[0]].config.classes
               if any(result.detection[n].counts.get(c) is not None
                      and result.detection[n].counts[c].num_gt > 0 for n in result.lists)]
    if not classes:
        classes = [ObjectClass.CAR]
    fig, axes = plt.subplots(1, len(classes), figsize=(4.2 * len(classes), 4), squeeze=False)
    for ax, cls in zip(axes[0], classes, strict=True):
        for name in result.lists:
            curves = result.detection[name].curves.get(cls, {})
            cur = curves.get(threshold)
            if cur is None or np.all(np.isnan(cur.precision)):
                continue
            ap = result.detection[name].ap[cls][threshold]
            ax.plot(cur.recall, cur.precision, color=_COLOURS.get(name),
                    label=f"{name} AP={_fmt(ap, 2)}")
        ax.set_title(f"{cls.value} @ {threshold:g} m")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_bev(frame: PictureFrame, rig: Rig, path: Path, list_name: str = "output",
             extent_m: float = 55.0) -> None:
    """Bird's-eye view of one frame: points, truth (green), detections, confirmed tracks."""
    plt = _plt()
    res = frame.result
    fig, ax = plt.subplots(figsize=(7.5, 7.5))
    for name, painted in res.data_level.painted.items():
        spec = rig.sensors.get(name)
        if spec is None or spec.extrinsics is None or len(painted) == 0:
            continue
        xyz = spec.extrinsics.apply(np.stack([painted["x"], painted["y"], painted["z"]], 1))
        keep = xyz[:, 2] > 0.3  # above the road: the points objects are made of
        ax.scatter(xyz[keep, 0], xyz[keep, 1], s=0.2, c="0.6")
    for k, obj in enumerate(frame.truth):
        o = _box_outline(obj.box_base)
        ax.plot(o[:, 0], o[:, 1], color="tab:green", lw=1.5,
                label="ground truth" if k == 0 else None)
    for k, det in enumerate(res.objects.get(list_name, [])):
        o = _box_outline(det.box)
        ax.plot(o[:, 0], o[:, 1], color="tab:blue", lw=1, ls="--",
                label=f"{list_name} detections" if k == 0 else None)
    first = True
    for trk in res.tracks.get(list_name, []):
        if trk.status is not TrackStatus.CONFIRMED:
            continue
        box = trk.object.box
        o = _box_outline(box)
        ax.plot(o[:, 0], o[:, 1], color="tab:orange", lw=1.2,
                label="confirmed tracks" if first else None)
        first = False
        ax.text(box.center[0], box.center[1] + 1.2, str(trk.track_id), fontsize=7,
                color="tab:orange")
        if trk.object.velocity is not None:
            v = trk.object.velocity
            ax.arrow(box.center[0], box.center[1], v[0] * 0.5, v[1] * 0.5, width=0.08,
                     color="tab:orange", length_includes_head=True)
    ax.plot([0], [0], marker="^", color="k", ms=8)
    ax.set_xlim(-15, extent_m)
    ax.set_ylim(-35, 35)
    ax.set_aspect("equal")
    ax.set_xlabel("x base_link [m]")
    ax.set_ylabel("y base_link [m]")
    ax.set_title(f"{Path(frame.bag).name} t={res.stamp_ns * 1e-9:.2f} s — {list_name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    # an equal-aspect axes cannot always be laid out tightly: crop on saving instead
    fig.savefig(path, dpi=85, bbox_inches="tight")
    plt.close(fig)


def plot_camera(frame: PictureFrame, rig: Rig, path: Path, list_name: str = "output") -> bool:
    """Camera overlay: projected LiDAR points by depth, 2D detections (yellow), fused 3D
    boxes (cyan) and ground-truth boxes (green) projected. False when there is no camera."""
    res = frame.result
    cams = [n for n in res.data_level.cameras if n in frame.cameras]
    if not cams:
        return False
    name = cams[0]
    fused = res.data_level.cameras[name]
    cam_frame = frame.cameras[name]
    spec = rig.sensors[name]
    model = cam_frame.camera if cam_frame.camera is not None else spec.intrinsics
    if model is None or spec.extrinsics is None:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 9 * model.height / model.width))
    ax.imshow(cam_frame.rgb())
    for proj in fused.projections.values():
        if proj.count:
            ax.scatter(proj.uv_valid[:, 0], proj.uv_valid[:, 1], c=proj.depth_valid, s=1,
                       cmap="turbo", vmin=0, vmax=60)
    dets = res.camera_2d.get(name)
    if dets is not None:
        for (x1, y1, x2, y2), lab, sc in zip(dets.boxes, dets.labels, dets.scores,
                                             strict=True):
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="yellow",
                                       lw=1))
            ax.text(x1, y1 - 2, f"{lab.value} {sc:.2f}", color="yellow", fontsize=6)
    T_cam_base = spec.extrinsics.inverse()
    edges = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5),
             (2, 6), (3, 7)]

    def draw(box: Box3D, colour: str) -> None:
        pts = T_cam_base.apply(box.corners())
        if np.any(pts[:, 2] < 0.5):
            return  # a box reaching behind the camera has no sensible drawing
        uv, ok = model.project(pts)
        if not np.all(ok):
            return
        for a, b in edges:
            ax.plot(uv[[a, b], 0], uv[[a, b], 1], color=colour, lw=0.8)

    for obj in frame.truth:
        draw(obj.box_base, "lime")
    for det in res.objects.get(list_name, []):
        draw(det.box, "cyan")
    ax.set_xlim(0, model.width)
    ax.set_ylim(model.height, 0)
    ax.axis("off")
    ax.set_title(f"{name}: LiDAR by depth, 2D detections (yellow), {list_name} boxes (cyan), "
                 f"truth (green)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def metrics_dict(result: EvalResult) -> dict[str, Any]:
    """Everything of the result that goes into ``metrics.json`` (NaN -> None)."""
    return {
        "bags": list(result.bags), "num_frames": result.num_frames,
        "frames_without_truth": result.frames_without_truth,
        "lists": list(result.lists), "summary": result.summary(),
        "detection": {n: m.to_dict() for n, m in result.detection.items()},
        "tracking": {n: m.to_dict() for n, m in result.tracking.items()},
        "tracking_radar_fov": {n: m.to_dict() for n, m in result.tracking_radar_fov.items()},
        "timings_ms_median": dict(result.timings_ms),
        "notes": dict(result.notes), "replay": dict(result.replay),
        "feature_table": [r.to_dict() for r in result.feature_table],
    }


def _feature_section(result: EvalResult) -> list[str]:
    """The feature-level comparison: one row per BEV variant (table order), then the
    pipeline lists of the same run."""
    if not result.feature_table:
        return []
    rows = [r.to_dict() for r in result.feature_table]
    lines = ["", f"## {FEATURE_SECTION}", "",
             "Trained BEV models with modalities removed at test time, on the same frames and "
             "ground truth as the lists above; the pipeline's lists follow for comparison. "
             "AP at 2 m centre distance; mATE / mAVE: mean translation / velocity error of "
             "true positives at 2 m.", ""]
    body = [[r["name"] if r["kind"] == "variant" else
             f"{LIST_TITLES.get(r['name'], r['name'])} (list)"]
            + [format_cell(fn(r)) for _, fn in TABLE_COLUMNS] for r in rows]
    return lines + _table(["variant"] + [h for h, _ in TABLE_COLUMNS], body)


def _markdown(result: EvalResult, pictures: Sequence[str]) -> str:
    det0 = result.detection[result.lists[0]].config
    lines = ["# Perception evaluation", "",
             f"Bags: {', '.join(Path(b).name for b in result.bags)}; "
             f"{result.num_frames} frames with ground truth"
             f"{f', {result.frames_without_truth} without' if result.frames_without_truth else ''}"
             f". Objects within {det0.max_range_m:g} m with sensor evidence; BEV centre-"
             f"distance matching (nuScenes style).", "", "## Headline", ""]
    summary = result.summary()
    rows = []
    for name in result.lists:
        s = summary[name]
        rows.append([LIST_TITLES.get(name, name), _fmt(s["car_ap_2m"]), _fmt(s["mean_ap"]),
                     _fmt(s["mean_ate_m"], 2), _fmt(s.get("mota")), _fmt(s.get("idf1")),
                     _fmt(s.get("id_switches"), 0), _fmt(s.get("track_velocity_error_mps"), 2)])
    lines += _table(["list", "car AP@2m", "mAP", "ATE m", "MOTA", "IDF1", "ID sw.",
                     "track vel. err m/s"], rows)
    lines += ["", "## Detection AP per class (mean over 0.5/1/2/4 m)", ""]
    classes = list(det0.classes)
    rows = []
    for name in result.lists:
        m = result.detection[name]
        rows.append([name] + [_fmt(m.ap_per_class.get(c)) for c in classes])
    lines += _table(["list"] + [c.value for c in classes], rows)
    lines += ["", "## True-positive errors at 2 m (mean over classes)", ""]
    rows = []
    for name in result.lists:
        e = result.detection[name].mean_tp_errors
        rows.append([name, _fmt(e.translation, 2), _fmt(e.scale, 2), _fmt(e.orientation, 2),
                     _fmt(e.velocity, 2)])
    lines += _table(["list", "ATE m", "ASE", "AOE rad", "AVE m/s"], rows)
    if result.tracking:
        lines += ["", "## Tracking (confirmed tracks)", ""]
        rows = []
        for name, t in result.tracking.items():
            fov = result.tracking_radar_fov.get(name)
            rows.append([name, _fmt(t.mota), _fmt(t.motp, 2), _fmt(t.idf1),
                         str(t.num_switches), str(t.num_false_positives), str(t.num_misses),
                         _fmt(t.velocity_error, 2),
                         _fmt(None if fov is None else fov.velocity_error, 2)])
        lines += _table(["list", "MOTA", "MOTP m", "IDF1", "ID sw.", "FP", "misses",
                         "vel. err m/s", "vel. err in radar FOV m/s"], rows)
    lines += _feature_section(result)
    if result.timings_ms:
        lines += ["", "## Median time per frame (ms)", ""]
        lines += _table(list(result.timings_ms),
                        [[_fmt(v, 1) for v in result.timings_ms.values()]])
    if result.notes:
        lines += ["", "## Pipeline notes", ""]
        lines += [f"- {n} (x{c})" for n, c in sorted(result.notes.items(),
                                                    key=lambda kv: -kv[1])[:20]]
    lines += ["", "## Pictures", ""]
    lines += [f"![{p}]({p})" for p in pictures]
    return "\n".join(lines) + "\n"


def _html(markdown: str) -> str:
    """A small self-contained HTML rendering of the report's Markdown (tables, headings,
    lists, images) — the subset this report uses, so no Markdown dependency is needed."""
    body: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            head, *rest = rows
            body.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head)
                        + "</tr>" + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>"
                                                             for c in r) + "</tr>"
                                            for r in rest) + "</table>")
            rows.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                rows.append(cells)
            continue
        flush()
        if line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("![") and "](" in line:
            src = line[line.index("](") + 2:-1]
            body.append(f'<p><img src="{html.escape(src)}" style="max-width:100%"></p>')
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}"
             "table{border-collapse:collapse;margin:8px 0}"
             "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
             "th{background:#eee}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Perception evaluation"
            f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(result: EvalResult, rig: Rig, out: str | Path) -> dict[str, Path]:
    """Write metrics, pictures and the Markdown/HTML report into ``out``.

    Returns:
        name -> path of every file written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    metrics = metrics_dict(result)
    files["metrics"] = out / "metrics.json"
    files["metrics"].write_text(json.dumps(metrics, indent=1, allow_nan=False))
    pictures: list[str] = []
    plot_pr_curves(result, out / "pr_curves.png")
    pictures.append("pr_curves.png")
    main = "output" if "output" in result.lists else result.lists[-1]
    for k, frame in enumerate(result.pictures):
        plot_bev(frame, rig, out / f"bev_{k}.png", main)
        pictures.append(f"bev_{k}.png")
        if plot_camera(frame, rig, out / f"camera_{k}.png", main):
            pictures.append(f"camera_{k}.png")
    md = _markdown(result, pictures)
    files["markdown"] = out / "report.md"
    files["markdown"].write_text(md)
    files["html"] = out / "report.html"
    files["html"].write_text(_html(md))
    for p in pictures:
        files[p] = out / p
    return files


__all__ = ["FEATURE_SECTION", "LIST_TITLES", "metrics_dict", "plot_bev", "plot_camera",
           "plot_pr_curves", "write_report"]
