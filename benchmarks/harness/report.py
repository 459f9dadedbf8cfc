"""From the per clip x configuration JSONs to summary.json, summary.md and rate-distortion plots.

Everything here reads only the JSON files, so `bandwidth.py --plot-only DIR` redraws it all.

Rates: for calls of 10 s, 60 s (the lead figures) and 10 min, rate.call_kbps: the start-up bytes
(header + first keyframe, or the IDR) once, everything else at the rate measured over the clip.
Also the plain clip-length rate (payload, wire) and the stream without keyframes.

Per clip and fvcall profile, per metric and rate kind:
- ratio at equal quality: the profile's default operating point against the lower envelope of
  every conventional point of that clip (all codecs, resolutions, frame rates): the kbit/s the
  best conventional setting needs for the same quality, divided by fvcall's kbit/s.
- BD-rate vs the conventional envelope (all conventional points) and vs x264 (all x264 points):
  the envelope of all the profile's points (every knob) against it.
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

from codec.metrics import VMAF_FRAME_SHARE

from . import bdrate, media
from .fvcall import DEFAULT_SETTING
from .rate import CALL_SECONDS, call_kbps
from .scoring import HIGHER_IS_BETTER, IDENTITY_SHARE, METRICS, UNITS

RUNS_DIR = "runs"
CALL_KINDS = {f"call{int(t)}": t for t in CALL_SECONDS}  # payload kbit/s of a call of t seconds
LEAD_KIND = "call60"
WIRE_LEAD_KIND = "wire_call60"
# clip: over the clip as measured; stream: keyframes left out on both sides (a long call's limit)
RATE_KINDS = (*CALL_KINDS, WIRE_LEAD_KIND, "payload", "wire", "stream_payload")
RATE_TITLES = {
    "call10": "10 s call",
    "call60": "60 s call",
    "call600": "10 min call",
    "wire_call60": "60 s call, wire",
    "payload": "clip length",
    "wire": "clip length, wire",
    "stream_payload": "stream without keyframes",
}
BD_ANCHOR_FAMILY = "x264"  # BD-rate reference: every x264 setting
DEFAULT_LABEL = DEFAULT_SETTING.label()  # the operating point a call uses
PLOT_DPI = 110


COMPLETE_SUFFIX = ".complete"  # runner.complete_path: all configurations of that clip are done


def load(out: Path) -> list[dict[str, Any]]:
    """Result documents of the clips that finished (all of them where no clip has a completion marker)."""
    docs = []
    for p in sorted((out / RUNS_DIR).glob("*.json")):
        try:
            docs.append(json.loads(p.read_text()))
        except ValueError:
            continue
    complete = {p.name[: -len(COMPLETE_SUFFIX)] for p in (out / RUNS_DIR).glob(f"*{COMPLETE_SUFFIX}")}
    if complete:
        docs = [d for d in docs if d.get("clip") in complete]
    return docs


def _q(point: dict[str, Any], metric: str) -> float:
    v = point["metrics"].get(metric)
    if v is None:
        return float("nan")
    return float(v) if HIGHER_IS_BETTER[metric] else -float(v)  # envelopes want "higher is better"


def _rate(point: dict[str, Any], kind: str) -> float:
    if kind in CALL_KINDS:
        return call_kbps(point["rate"], CALL_KINDS[kind])
    if kind == WIRE_LEAD_KIND:
        return call_kbps(point["rate"], 60.0, wire=True)
    return float(point["rate"][f"{kind}_kbps"])


def _gmean(xs: list[float]) -> float | None:
    return float(math.exp(np.mean(np.log(xs)))) if xs else None


MIN_CLIP_SECONDS = 2.0  # shorter (from the first face on): the start-up bytes swamp every rate


def analyse(docs: list[dict[str, Any]]) -> dict[str, Any]:
    by_clip: dict[str, list[dict[str, Any]]] = defaultdict(list)
    too_short: dict[str, float] = {}
    for d in docs:
        seconds = d["frames"] / d["clip_fps"]
        cap = d.get("run_key", {}).get("frames")
        if seconds < MIN_CLIP_SECONDS and (cap is None or d["frames"] < cap):  # a --frames cap is the user's choice
            too_short[d["clip"]] = seconds
            continue
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
                "rates": {k: _rate(default, k) for k in RATE_KINDS},
                "keyframe_bytes": default["rate"]["keyframe_bytes"],
                "startup_bytes": default["rate"].get("startup_bytes"),
                "metrics": default["metrics"],
                "ratio": {},
                "ratio_note": {},
                "bd_env": {},
                "bd_x264": {},
            }
            for kind in RATE_KINDS:
                for key in ("ratio", "ratio_note", "bd_env", "bd_x264"):
                    e[key][kind] = {}
                for m in METRICS:
                    if conv:
                        r, note = bdrate.ratio_at_equal_quality(
                            [_rate(p, kind) for p in conv],
                            [_q(p, m) for p in conv],
                            _rate(default, kind),
                            _q(default, m),
                        )
                    else:
                        r, note = None, "no conventional points"
                    e["ratio"][kind][m], e["ratio_note"][kind][m] = r, note
                    test = ([_rate(p, kind) for p in pts], [_q(p, m) for p in pts])
                    e["bd_env"][kind][m] = (
                        bdrate.bd_rate([_rate(p, kind) for p in conv], [_q(p, m) for p in conv], *test)
                        if conv
                        else None
                    )
                    e["bd_x264"][kind][m] = (
                        bdrate.bd_rate([_rate(p, kind) for p in x264], [_q(p, m) for p in x264], *test)
                        if x264
                        else None
                    )
            entry[prof] = e
        per_clip[clip] = entry

    summary: dict[str, Any] = {
        "profiles": {},
        "clips": sorted(per_clip),
        "clips_too_short": {c: round(t, 2) for c, t in sorted(too_short.items())},
    }
    for prof in profiles:
        rows = [per_clip[c][prof] for c in per_clip if prof in per_clip[c]]
        if not rows:
            continue
        s: dict[str, Any] = {
            "n_clips": len(rows),
            "rates": {k: float(np.mean([r["rates"][k] for r in rows])) for k in RATE_KINDS},
            "keyframe_bytes": float(np.mean([r["keyframe_bytes"] for r in rows])),
            "metrics": {m: _nanmean([r["metrics"].get(m) for r in rows]) for m in METRICS},
            "by_rate": {},
        }
        for kind in RATE_KINDS:
            k: dict[str, Any] = {
                "ratio_at_equal_quality": {},
                "bd_rate_vs_envelope": {},
                "bd_rate_vs_envelope_median": {},
                "bd_rate_vs_x264": {},
                "ratio_clips": {},
                "bd_envelope_clips": {},
                "bd_x264_clips": {},
                "ratio_notes": {},
            }
            for m in METRICS:
                ratios = [r["ratio"][kind][m] for r in rows if r["ratio"][kind][m] is not None]
                env = [r["bd_env"][kind][m] for r in rows if r["bd_env"][kind][m] is not None]
                bds = [r["bd_x264"][kind][m] for r in rows if r["bd_x264"][kind][m] is not None]
                k["ratio_at_equal_quality"][m] = _gmean(ratios)
                k["bd_rate_vs_envelope"][m] = float(np.mean(env)) if env else None
                k["bd_rate_vs_envelope_median"][m] = float(np.median(env)) if env else None
                k["bd_rate_vs_x264"][m] = float(np.mean(bds)) if bds else None
                k["ratio_clips"][m], k["bd_envelope_clips"][m], k["bd_x264_clips"][m] = len(ratios), len(env), len(bds)
                reasons = Counter(_reason(r["ratio_note"][kind][m]) for r in rows if r["ratio"][kind][m] is None)
                if reasons:
                    k["ratio_notes"][m] = "; ".join(
                        f"{n} of {len(rows)} clips: {why}" for why, n in reasons.most_common()
                    )
            s["by_rate"][kind] = k
        # the lead figures (60 s call) at the top level
        lead = s["by_rate"][LEAD_KIND]
        s["ratio_at_equal_quality"] = lead["ratio_at_equal_quality"]
        s["bd_rate_vs_envelope"] = lead["bd_rate_vs_envelope"]
        s["bd_rate_vs_envelope_median"] = lead["bd_rate_vs_envelope_median"]
        s["bd_rate_vs_x264"] = lead["bd_rate_vs_x264"]
        s["payload_kbps"] = s["rates"]["payload"]
        s["wire_kbps"] = s["rates"]["wire"]
        s["call60_kbps"] = s["rates"][LEAD_KIND]
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
                    "rates": {k: float(np.mean([_rate(p, k) for p in ps])) for k in RATE_KINDS},
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


def plot(out: Path, curves: dict[str, dict[str, Any]], kind: str = LEAD_KIND) -> list[str]:
    """One PNG per metric: clip-averaged curves, conventional lower envelope, fvcall knobs."""
    files = []
    conv = [(p["rates"][kind], p["metrics"]) for c in curves.values() if c["kind"] == "anchor" for p in c["points"]]
    for m in METRICS:
        if not any(p["metrics"].get(m) is not None for c in curves.values() for p in c["points"]):
            continue  # not computed in this run (LPIPS / DISTS without weights)
        fig, ax = plt.subplots(figsize=(8, 5.5))
        for name, c in sorted(curves.items(), key=lambda kv: (kv[1]["kind"] != "anchor", kv[0])):
            xs = [p["rates"][kind] for p in c["points"] if p["metrics"].get(m) is not None]
            ys = [p["metrics"][m] for p in c["points"] if p["metrics"].get(m) is not None]
            if xs:
                order = np.argsort(xs)
                ax.plot(np.array(xs)[order], np.array(ys)[order], label=name, **_style(name, c["kind"]))
        pts = [(r, q[m]) for r, q in conv if q.get(m) is not None]
        if pts:
            sign = 1 if HIGHER_IS_BETTER[m] else -1
            er, eq = bdrate.lower_envelope([r for r, _ in pts], [sign * q for _, q in pts])
            ax.plot(er, sign * eq, color="black", linewidth=2.5, alpha=0.35, label="conventional envelope")
        ax.set_xscale("log")
        ax.set_xlabel(f"kbit/s, {RATE_TITLES[kind]} (clip mean)")
        unit = f" ({UNITS[m]})" if UNITS[m] else ""
        ax.set_ylabel(m + unit + ("" if HIGHER_IS_BETTER[m] else ", lower is better"))
        if not HIGHER_IS_BETTER[m]:
            ax.invert_yaxis()
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, ncol=2, loc="best")
        ax.set_title(f"{m} vs rate ({RATE_TITLES[kind]}), mean over clips")
        fig.tight_layout()
        name = f"rd_{m}.png" if kind == LEAD_KIND else f"rd_{m}_wire.png"
        fig.savefig(out / name, dpi=PLOT_DPI)
        plt.close(fig)
        files.append(name)
    return files


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _ratio_cell(k: dict[str, Any], m: str) -> str:
    return f"{_fmt(k['ratio_at_equal_quality'][m])} [{k['ratio_clips'][m]}]"


def _bd_cell(k: dict[str, Any], m: str, which: str = "envelope") -> str:
    return f"{_fmt(k[f'bd_rate_vs_{which}'][m], '+.1f')}% [{k[f'bd_{which}_clips'][m]}]"


def _metrics_present(summary: dict[str, Any]) -> list[str]:
    return [m for m in METRICS if any(s["metrics"].get(m) is not None for s in summary["profiles"].values())]


def markdown(summary: dict[str, Any], curves: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    metrics = _metrics_present(summary)
    lines = ["# fvcall bandwidth benchmark", ""]
    lines += [
        f"- clips: {len(summary['clips'])}; codec size {meta.get('size')}; "
        f"frames per clip: {meta.get('frames') or 'all (full length)'}; "
        f"scored frames per clip {meta.get('scored_frames')} (VMAF on every {VMAF_FRAME_SHARE}th, dlib identity on "
        f"every {IDENTITY_SHARE}th of them)",
        "- rates: kbit/s of a call of 10 s / 60 s / 10 min = start-up bytes (header + first keyframe, or the IDR) "
        "once, plus everything else at the rate measured over the clip; payload = codec bytes, wire = + "
        "per-message SCTP/DTLS/UDP/IP (fvcall) or RTP/SRTP/UDP/IP (video) overhead",
        "- ratio at equal quality = (kbit/s the conventional envelope (best conventional point at each rate: all "
        "codecs, sizes, frame rates) needs for fvcall's default quality) / (fvcall kbit/s); > 1 means fvcall needs "
        "fewer bits. Geometric mean over the clips where the curves overlap (count in brackets).",
        "- BD-rate (PCHIP, overlapping quality range) of all the profile's points against the conventional "
        "envelope (and against all x264 points); negative means fewer bits. Mean over clips with overlap, and the "
        "median (a few clips with a narrow shared quality range give BD-rates of thousands of percent that dominate "
        "the mean).",
        "- akd68 / id_dist / *_corr / *_mae: dlib 68-point landmarks detected on input and output, "
        "face-recognition embedding distance, per-feature expression tracking over the scored frames; "
        "face_missing: share of scored frames whose output has no face dlib's detector finds.",
        "",
    ]
    for prof, s in summary["profiles"].items():
        r = s["rates"]
        lines += [
            f"## {prof}: 60 s call",
            "",
            f"default setting over {s['n_clips']} clips: {_fmt(r['call60'])} kbit/s payload in a 60 s call "
            f"({_fmt(r['wire_call60'])} wire); 10 s call {_fmt(r['call10'])}, 10 min call {_fmt(r['call600'])}; "
            f"clip length {_fmt(r['payload'])}; stream without keyframes {_fmt(r['stream_payload'])}; "
            f"keyframe {_fmt(s['keyframe_bytes'], '.0f')} bytes",
            "",
            "| metric | fvcall quality | ratio @ equal q, 60 s | BD-rate vs envelope, 60 s (mean) | (median) "
            "| ratio, 60 s wire | BD-rate vs x264, 60 s |",
            "|---" * 7 + "|",
        ]
        lead, wire = s["by_rate"][LEAD_KIND], s["by_rate"][WIRE_LEAD_KIND]
        for m in metrics:
            lines.append(
                f"| {m} | {_fmt(s['metrics'][m], '.4g')} | {_ratio_cell(lead, m)} | {_bd_cell(lead, m)} | "
                f"{_fmt(lead['bd_rate_vs_envelope_median'][m], '+.1f')}% | {_ratio_cell(wire, m)} | "
                f"{_bd_cell(lead, m, 'x264')} |"
            )
        lines += [
            "",
            f"### {prof}: 10 s and 10 min calls, clip length, stream",
            "",
            "| metric | ratio 10 s | BD env 10 s (mean) | (median) | ratio 10 min | BD env 10 min (mean) | (median) "
            "| ratio clip | BD env clip | ratio stream | BD env stream |",
            "|---" * 11 + "|",
        ]
        for m in metrics:
            cells = []
            for kind in ("call10", "call600", "payload", "stream_payload"):
                k = s["by_rate"][kind]
                cells += [_ratio_cell(k, m), _bd_cell(k, m)]
                if kind in CALL_KINDS:
                    cells.append(f"{_fmt(k['bd_rate_vs_envelope_median'][m], '+.1f')}%")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        if lead["ratio_notes"]:
            lines += ["", "Curves that do not overlap (60 s ratio null for these clips):", ""]
            lines += [f"- {m}: {note}" for m, note in lead["ratio_notes"].items() if m in metrics]
        lines.append("")
    if summary.get("clips_too_short"):
        lines += [
            f"Left out (under {MIN_CLIP_SECONDS:g} s from the first detected face on): "
            + ", ".join(f"{c} ({t} s)" for c, t in summary["clips_too_short"].items()),
            "",
        ]
    lines += _media_lines(summary, meta)
    lines += [
        "## All configurations (means over clips, 60 s call rate)",
        "",
        "| configuration | point | clips | kbit/s 60 s | wire 60 s | keyframe B | " + " | ".join(metrics) + " |",
        "|---" * (6 + len(metrics)) + "|",
    ]
    for name, c in sorted(curves.items(), key=lambda kv: (kv[1]["kind"], kv[0])):
        for p in c["points"]:
            lines.append(
                f"| {name} | {p['label']} | {p['n']} | {_fmt(p['rates'][LEAD_KIND])} | "
                f"{_fmt(p['rates'][WIRE_LEAD_KIND])} | {_fmt(p['keyframe_bytes'], '.0f')} | "
                + " | ".join(_fmt(p["metrics"][m], ".4g") for m in metrics)
                + " |"
            )
    if meta.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in meta["notes"]]
    return "\n".join(lines) + "\n"


def _media_lines(summary: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    out_dir = Path(meta.get("out", "."))
    rows = []
    for clip in summary["clips"]:
        sheet, video = media.sheet_path(out_dir, clip), media.video_path(out_dir, clip)
        if sheet.is_file() or video.is_file():
            rel = f"{media.MEDIA_DIR}/{sheet.name}", f"{media.MEDIA_DIR}/{video.name}"
            rows.append(f"| {clip} | [sheet]({rel[0]}) | [video]({rel[1]}) |")
    if not rows:
        return []
    return [
        "## Pictures at matched rates",
        "",
        "Columns: input | fvcall default | x264-medium (real-time, full size) at the nearest 60 s-call rate at or "
        "above fvcall's | the best-PSNR-Y conventional point at or below that rate. Sheet rows: the scored frames "
        "with the eyes most closed, the inner brows closest (frown), the mouth most open, and a typical one. "
        f"Videos: the first {media.VIDEO_SECONDS:g} s.",
        "",
        "| clip | contact sheet | side-by-side |",
        "|---|---|---|",
        *rows,
        "",
    ]


def build(out: Path, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write summary.json, summary.md and the plots from out/runs/*.json; returns the summary."""
    meta = dict(meta or {})
    meta_path = out / "run.json"
    if not meta and meta_path.exists():
        meta = json.loads(meta_path.read_text())
    docs = load(out)
    summary = analyse(docs)
    curves = mean_curves(docs)
    meta.setdefault("out", str(out))
    plots = plot(out, curves, LEAD_KIND) + plot(out, curves, WIRE_LEAD_KIND)
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
