"""From the per clip x configuration JSONs to summary.json, summary.md and rate-distortion plots.

Everything here reads only the JSON files, so `bandwidth.py --plot-only DIR` redraws it all.

Per clip and fvcall profile:
- ratio at equal quality: the profile's default operating point against the lower envelope of
  every conventional point of that clip (all codecs, resolutions, frame rates): the kbit/s the
  best conventional setting needs for the same quality, divided by fvcall's kbit/s.
- BD-rate vs x264: the envelope of all the profile's points (every knob) against the envelope
  of all x264 points (both presets, all resolutions and frame rates).
Across clips: geometric mean of the ratios, arithmetic mean of the BD-rates, over the clips where
the curves overlap; the count of clips without overlap is reported with the reason.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from codec.metrics import HIGHER_IS_BETTER, METRICS, UNITS

from . import bdrate
from .fvcall import DEFAULT_SETTING

RUNS_DIR = "runs"
RATE_KINDS = ("payload", "wire", "stream_payload")  # stream: keyframes left out (a long call's view)
BD_ANCHOR_FAMILY = "x264"  # BD-rate reference: every x264 setting
DEFAULT_LABEL = DEFAULT_SETTING.label()  # the operating point a call uses
PLOT_DPI = 110


def load(out: Path) -> list[dict[str, Any]]:
    docs = []
    for p in sorted((out / RUNS_DIR).glob("*.json")):
        try:
            docs.append(json.loads(p.read_text()))
        except ValueError:
            continue
    return docs


def _q(point: dict[str, Any], metric: str) -> float:
    v = point["metrics"].get(metric)
    if v is None:
        return float("nan")
    return float(v) if HIGHER_IS_BETTER[metric] else -float(v)  # envelopes want "higher is better"


def _rate(point: dict[str, Any], kind: str) -> float:
    return float(point["rate"][f"{kind}_kbps"])


def _gmean(xs: list[float]) -> float | None:
    return float(math.exp(np.mean(np.log(xs)))) if xs else None


def analyse(docs: list[dict[str, Any]]) -> dict[str, Any]:
    by_clip: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in docs:
        by_clip[d["clip"]].append(d)
    profiles = sorted({d["family"] for d in docs if d["kind"] == "fvcall"})
    per_clip: dict[str, dict[str, Any]] = {}
    for clip, ds in sorted(by_clip.items()):
        conv = [p for d in ds if d["kind"] == "anchor" for p in d["points"]]
        x264 = [
            p for d in ds if d["kind"] == "anchor" and d["family"].startswith(BD_ANCHOR_FAMILY) for p in d["points"]
        ]
        entry: dict[str, Any] = {}
        for prof in profiles:
            pts = [p for d in ds if d["kind"] == "fvcall" and d["family"] == prof for p in d["points"]]
            default = next((p for p in pts if p["label"] == DEFAULT_LABEL), None)
            if default is None:
                continue
            e: dict[str, Any] = {
                "payload_kbps": _rate(default, "payload"),
                "wire_kbps": _rate(default, "wire"),
                "keyframe_bytes": default["rate"]["keyframe_bytes"],
                "stream_payload_kbps": default["rate"]["stream_payload_kbps"],
                "stream_wire_kbps": default["rate"]["stream_wire_kbps"],
                "metrics": default["metrics"],
                "ratio": {},
                "ratio_note": {},
                "bd": {},
            }
            for kind in RATE_KINDS:
                for m in METRICS:
                    key = m if kind == "payload" else f"{m}_{kind}"
                    if conv:
                        r, note = bdrate.ratio_at_equal_quality(
                            [_rate(p, kind) for p in conv],
                            [_q(p, m) for p in conv],
                            _rate(default, kind),
                            _q(default, m),
                        )
                    else:
                        r, note = None, "no conventional points"
                    e["ratio"][key], e["ratio_note"][key] = r, note
                    e["bd"][key] = (
                        bdrate.bd_rate(
                            [_rate(p, kind) for p in x264],
                            [_q(p, m) for p in x264],
                            [_rate(p, kind) for p in pts],
                            [_q(p, m) for p in pts],
                        )
                        if x264
                        else None
                    )
            entry[prof] = e
        per_clip[clip] = entry

    summary: dict[str, Any] = {"profiles": {}, "clips": sorted(per_clip)}
    for prof in profiles:
        rows = [per_clip[c][prof] for c in per_clip if prof in per_clip[c]]
        if not rows:
            continue
        s: dict[str, Any] = {
            "n_clips": len(rows),
            "payload_kbps": float(np.mean([r["payload_kbps"] for r in rows])),
            "wire_kbps": float(np.mean([r["wire_kbps"] for r in rows])),
            "keyframe_bytes": float(np.mean([r["keyframe_bytes"] for r in rows])),
            "stream_payload_kbps": float(np.mean([r["stream_payload_kbps"] for r in rows])),
            "stream_wire_kbps": float(np.mean([r["stream_wire_kbps"] for r in rows])),
            "metrics": {m: _nanmean([r["metrics"].get(m) for r in rows]) for m in METRICS},
            "ratio_clips_with_overlap": {},
            "ratio_notes": {},
            "bd_clips_with_overlap": {},
        }
        for kind in RATE_KINDS:
            suffix = "" if kind == "payload" else f"_{kind}"
            s["ratio_at_equal_quality" + suffix] = {}
            s["bd_rate_vs_x264" + suffix] = {}
        for m in METRICS:
            for kind in RATE_KINDS:
                key = m if kind == "payload" else f"{m}_{kind}"
                ratios = [r["ratio"][key] for r in rows if r["ratio"][key] is not None]
                bds = [r["bd"][key] for r in rows if r["bd"][key] is not None]
                rkey = "ratio_at_equal_quality" + ("" if kind == "payload" else f"_{kind}")
                bkey = "bd_rate_vs_x264" + ("" if kind == "payload" else f"_{kind}")
                s[rkey][m] = _gmean(ratios)
                s[bkey][m] = float(np.mean(bds)) if bds else None
                if kind == "payload":
                    s["ratio_clips_with_overlap"][m] = len(ratios)
                    s["bd_clips_with_overlap"][m] = len(bds)
                    reasons = Counter(_reason(r["ratio_note"][key]) for r in rows if r["ratio"][key] is None)
                    if reasons:
                        s["ratio_notes"][m] = "; ".join(
                            f"{n} of {len(rows)} clips: {why}" for why, n in reasons.most_common()
                        )
        summary["profiles"][prof] = s
    summary["per_clip"] = per_clip
    return summary


def _reason(note: str) -> str:
    if "below the anchors' worst" in note:
        return "fvcall's quality is below the worst conventional point (even the lowest conventional rate does better)"
    if "above the anchors' best" in note:
        return "fvcall's quality is above the best conventional point"
    return note


def _nanmean(xs: list[float | None]) -> float | None:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else None


def mean_curves(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per configuration and point label: rates and metrics averaged over the clips that have it."""
    acc: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    kinds: dict[str, tuple[str, str]] = {}
    for d in docs:
        kinds[d["name"]] = (d["kind"], d["family"])
        for p in d["points"]:
            acc[d["name"]][p["label"]].append(p)
    out: dict[str, dict[str, Any]] = {}
    for name, by_label in acc.items():
        pts = []
        for label, ps in by_label.items():
            pts.append(
                {
                    "label": label,
                    "n": len(ps),
                    "payload_kbps": float(np.mean([_rate(p, "payload") for p in ps])),
                    "wire_kbps": float(np.mean([_rate(p, "wire") for p in ps])),
                    "keyframe_bytes": float(np.mean([p["rate"]["keyframe_bytes"] for p in ps])),
                    "metrics": {m: _nanmean([p["metrics"].get(m) for p in ps]) for m in METRICS},
                }
            )
        pts.sort(key=lambda p: p["payload_kbps"])
        out[name] = {"kind": kinds[name][0], "family": kinds[name][1], "points": pts}
    return out


def _style(name: str, kind: str) -> dict[str, Any]:
    if kind == "fvcall":
        return {"marker": "*", "markersize": 9, "linewidth": 2.0}
    base = name.split("~")[0]
    colors = {
        "x264-medium": "tab:blue",
        "x264-veryfast": "tab:cyan",
        "x265": "tab:green",
        "vp9": "tab:orange",
        "av1": "tab:purple",
    }
    reduced = "~" in name
    return {
        "color": colors.get(base, "grey"),
        "marker": "." if reduced else "o",
        "markersize": 4,
        "linestyle": ":" if reduced else "-",
        "linewidth": 0.8 if reduced else 1.3,
        "alpha": 0.7 if reduced else 1,
    }


def plot(out: Path, curves: dict[str, dict[str, Any]], kind: str = "payload") -> list[str]:
    """One PNG per metric: clip-averaged curves, conventional lower envelope, fvcall knobs."""
    files = []
    conv = [(p[f"{kind}_kbps"], p["metrics"]) for c in curves.values() if c["kind"] == "anchor" for p in c["points"]]
    for m in METRICS:
        fig, ax = plt.subplots(figsize=(8, 5.5))
        for name, c in sorted(curves.items(), key=lambda kv: (kv[1]["kind"] != "anchor", kv[0])):
            xs = [p[f"{kind}_kbps"] for p in c["points"] if p["metrics"].get(m) is not None]
            ys = [p["metrics"][m] for p in c["points"] if p["metrics"].get(m) is not None]
            if xs:
                ax.plot(xs, ys, label=name, **_style(name, c["kind"]))
        pts = [(r, q[m]) for r, q in conv if q.get(m) is not None]
        if pts:
            sign = 1 if HIGHER_IS_BETTER[m] else -1
            er, eq = bdrate.lower_envelope([r for r, _ in pts], [sign * q for _, q in pts])
            ax.plot(er, sign * eq, color="black", linewidth=2.5, alpha=0.35, label="conventional envelope")
        ax.set_xscale("log")
        ax.set_xlabel(f"{kind} kbit/s (clip mean; keyframes amortized)")
        unit = f" ({UNITS[m]})" if UNITS[m] else ""
        ax.set_ylabel(m + unit + ("" if HIGHER_IS_BETTER[m] else ", lower is better"))
        if not HIGHER_IS_BETTER[m]:
            ax.invert_yaxis()
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, ncol=2, loc="best")
        ax.set_title(f"{m} vs {kind} rate, mean over clips")
        fig.tight_layout()
        name = f"rd_{m}.png" if kind == "payload" else f"rd_{m}_{kind}.png"
        fig.savefig(out / name, dpi=PLOT_DPI)
        plt.close(fig)
        files.append(name)
    return files


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def markdown(summary: dict[str, Any], curves: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = ["# fvcall bandwidth benchmark", ""]
    lines += [
        f"- clips: {len(summary['clips'])}; codec size {meta.get('size')}; "
        f"frames per clip <= {meta.get('frames')}; "
        f"scored frames per clip {meta.get('scored_frames')} (VMAF on every 2nd of them)",
        "- rates in kbit/s over the clip, keyframes amortized; payload = codec bytes, wire = + per-message "
        "SCTP/DTLS/UDP/IP (fvcall) or RTP/SRTP/UDP/IP (video) overhead",
        "- ratio at equal quality = (kbit/s the best conventional setting needs for fvcall's default quality) / "
        "(fvcall kbit/s); > 1 means fvcall needs fewer bits. Geometric mean over the clips where the curves "
        "overlap (count in brackets).",
        "- stream = payload without keyframes on either side (what a long call converges to).",
        "- BD-rate vs x264 (PCHIP, overlapping quality range) of all the profile's knob points vs all x264 "
        "points; negative means fewer bits than x264. Mean over clips with overlap.",
        "",
    ]
    for prof, s in summary["profiles"].items():
        lines += [
            f"## {prof}",
            "",
            f"default setting over {s['n_clips']} clips: payload {_fmt(s['payload_kbps'])} kbit/s, wire "
            f"{_fmt(s['wire_kbps'])} kbit/s, keyframe {_fmt(s['keyframe_bytes'], '.0f')} bytes, stream without "
            f"keyframe {_fmt(s['stream_payload_kbps'])} kbit/s payload / {_fmt(s['stream_wire_kbps'])} wire",
            "",
            "| metric | fvcall quality | ratio @ equal q (payload) | ratio (wire) | ratio (stream) "
            "| BD-rate vs x264 (payload) | BD-rate (wire) | BD-rate (stream) |",
            "|---" * 8 + "|",
        ]
        for m in METRICS:
            lines.append(
                f"| {m} | {_fmt(s['metrics'][m], '.4g')} | {_fmt(s['ratio_at_equal_quality'][m])} "
                f"[{s['ratio_clips_with_overlap'][m]}] | {_fmt(s['ratio_at_equal_quality_wire'][m])} | "
                f"{_fmt(s['ratio_at_equal_quality_stream_payload'][m])} | "
                f"{_fmt(s['bd_rate_vs_x264'][m], '+.1f')}% [{s['bd_clips_with_overlap'][m]}] | "
                f"{_fmt(s['bd_rate_vs_x264_wire'][m], '+.1f')}% | "
                f"{_fmt(s['bd_rate_vs_x264_stream_payload'][m], '+.1f')}% |"
            )
        if s["ratio_notes"]:
            lines += ["", "Curves that do not overlap (ratio null for these clips):", ""]
            lines += [f"- {m}: {note}" for m, note in s["ratio_notes"].items()]
        lines.append("")
    lines += [
        "## All configurations (means over clips)",
        "",
        "| configuration | point | clips | payload kbit/s | wire kbit/s | keyframe B | " + " | ".join(METRICS) + " |",
        "|---" * (6 + len(METRICS)) + "|",
    ]
    for name, c in sorted(curves.items(), key=lambda kv: (kv[1]["kind"], kv[0])):
        for p in c["points"]:
            lines.append(
                f"| {name} | {p['label']} | {p['n']} | {_fmt(p['payload_kbps'])} | {_fmt(p['wire_kbps'])} | "
                f"{_fmt(p['keyframe_bytes'], '.0f')} | "
                + " | ".join(_fmt(p["metrics"][m], ".4g") for m in METRICS)
                + " |"
            )
    if meta.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in meta["notes"]]
    return "\n".join(lines) + "\n"


def build(out: Path, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write summary.json, summary.md and the plots from out/runs/*.json; returns the summary."""
    meta = dict(meta or {})
    meta_path = out / "run.json"
    if not meta and meta_path.exists():
        meta = json.loads(meta_path.read_text())
    docs = load(out)
    summary = analyse(docs)
    curves = mean_curves(docs)
    plots = plot(out, curves, "payload") + plot(out, curves, "wire")
    summary["plots"] = plots
    summary["mean_curves"] = curves
    summary["run"] = meta
    (out / "summary.json").write_text(json.dumps(_clean(summary), indent=1))
    (out / "summary.md").write_text(markdown(summary, curves, meta))
    return summary


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj
