"""Does the face do what the caller does? The mesh profile's expression models on held-out persons.

    .venv/bin/python -m benchmarks.expression_eval [--frames 150] [--models gauss11 learned] [--out results/expr]

For each held-out clip of models/mesh/fit.py (persons the learned model never saw), every
expression model runs through the real codec in memory (FaceEncoder -> codec.loopback.run ->
FaceDecoder, H.264 keyframe, int8 wire values, keyframe refreshes, the receiver renders every
frame), on the same frames. Against the encoder's own input crops, each scored against what the receiver
shows for it (one frame period later at 2 frames per message; frame 0, the keyframe, left out):

- dlib (benchmarks/harness/face_metrics.py, independent of MediaPipe): AKD68, identity distance,
  per-feature tracking (brow_raise, brow_gap, eye_open, mouth_open: correlation over time, MAE);
- gaze (MediaPipe irises, static-image mode on input and output; dlib has no irises): correlation of
  the horizontal and vertical iris offset within the eye;
- PSNR-Y of the whole crop and of the mouth and eye regions (boxes around the input's MediaPipe lip
  and eye landmarks, padded);
- rate: payload bytes per parameter packet, keyframe bytes, a 60 s call (session header and first
  keyframe once, the clip's parameter, reference and keyframe-refresh rates extrapolated to 60 s),
  payload and wire;
- speed: sender ms per frame (FaceEncoder.encode, frames without a keyframe), receiver render ms.

Writes one JSON per clip and model, summary.json, and contact_sheet.png (input | each model) of the
frames with the strongest frown, eye closure, mouth opening and gaze shift of the input. The PNG
shows frames of third-party clips: it stays under results/ (git-ignored), never committed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from benchmarks.harness import face_metrics as fm
from benchmarks.harness.clips import load_clip
from benchmarks.harness.media import label
from codec import driver, wire
from codec import rate as wire_rate
from codec.api import Packet
from codec.bank import BankPolicy
from codec.decoder import FaceDecoder
from codec.encoder import FaceEncoder
from codec.metrics import luma, psnr
from models.face import FaceDetector, FaceMesh
from models.mesh import expression, fit, gaussian, regions
from models.mesh.estimator import KEYFRAME_TRACK_PASSES, MeshEstimator

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "raw"
SIZE = 256
CALL_S = 60.0  # the call length rates are quoted for
REGION_PAD = 0.25  # share of a region box's larger side added around it
MIN_REGION_PX = 8
INPUT_MOVES_STD = {"brow_raise": 0.01, "brow_gap": 0.01, "eye_open": 0.02, "mouth_open": 0.02, "gaze_x": 0.02}
"""A clip counts as moving a feature when the input's std over time is at least this (feature units)."""
SHEET_ROWS = ("frown", "eyes closed", "mouth open", "gaze shift")
SHEET_TILE = 256


def region_box(lm: np.ndarray, idx: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) around landmarks idx, padded, clipped to the crop."""
    p = lm[idx, :2]
    lo, hi = p.min(0), p.max(0)
    pad = REGION_PAD * float((hi - lo).max())
    x0, y0 = np.floor(lo - pad).astype(int)
    x1, y1 = np.ceil(hi + pad).astype(int)
    return max(0, x0), max(0, y0), min(SIZE, max(x1, x0 + MIN_REGION_PX)), min(SIZE, max(y1, y0 + MIN_REGION_PX))


def region_psnr(ref: np.ndarray, out: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> float:
    a = np.concatenate([luma(ref[y0:y1, x0:x1]).ravel() for x0, y0, x1, y1 in boxes])
    b = np.concatenate([luma(out[y0:y1, x0:x1]).ravel() for x0, y0, x1, y1 in boxes])
    return psnr(a, b)


def gaze(lm: np.ndarray | None) -> tuple[float, float]:
    """Iris centre offset from the eye centre along the eye line and across it, in eye widths, both eyes."""
    if lm is None:
        return math.nan, math.nan
    out = []
    for iris, corners in ((468, (33, 133)), (473, (362, 263))):
        a, b = lm[corners[0], :2], lm[corners[1], :2]
        width = float(np.linalg.norm(b - a)) + 1e-9
        ux = (b - a) / width
        uy = np.array([-ux[1], ux[0]])
        d = lm[iris, :2] - (a + b) / 2
        out.append((d @ ux / width, d @ uy / width))
    g = np.mean(out, axis=0)
    return float(g[0]), float(g[1])


def corr(a: list[float], b: list[float]) -> float:
    return fm.tracking(a, b)[0]


@dataclass
class ModelRun:
    outputs: dict[int, np.ndarray]
    refs: dict[int, np.ndarray]
    metrics: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)


class TimedEncoder(FaceEncoder):
    """FaceEncoder that times each encode() (keyframe frames apart: they are rare and cost more)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.send_ms: list[float] = []
        """encode() time of frames that sent no keyframe."""

    def encode(self, frame: np.ndarray, capture_ms: int) -> list[Packet]:
        keyframes = self.stats.keyframes
        t0 = time.perf_counter()
        packets = super().encode(frame, capture_ms)
        if self.stats.keyframes == keyframes:
            self.send_ms.append((time.perf_counter() - t0) * 1000)
        return packets


STATIC_SUFFIX = "/static"


def parse_variant(name: str) -> tuple[str, BankPolicy | None, int]:
    """'learned' -> (learned, no references, tracked keyframes); 'learned@3' -> (learned, reference
    bank at 3 dB, ...); a '/static' suffix: keyframe landmarks in MediaPipe's static-image mode, as
    the mesh profile found them before models.mesh.estimator.KEYFRAME_TRACK_PASSES."""
    static = name.endswith(STATIC_SUFFIX)
    model, _, threshold = name.removesuffix(STATIC_SUFFIX).partition("@")
    bank = BankPolicy(threshold_db=float(threshold)) if threshold else None
    return model, bank, 0 if static else KEYFRAME_TRACK_PASSES


def run_model(frames: list[np.ndarray], fps: float, variant: str) -> ModelRun:
    model_name, bank, passes = parse_variant(variant)
    model = expression.get(model_name)
    clock = driver.TickClock()
    enc = TimedEncoder(
        "mesh",
        SIZE,
        fps,
        estimator=MeshEstimator(SIZE, model, passes),
        model=model.model_id,
        references=bank if bank is not None else False,
    )
    dec = FaceDecoder(clock=clock)
    outputs, refs = {}, {}
    kf_bytes: list[int] = []
    stream_bytes = stream_wire = n_params = start_bytes = start_wire = params_bytes = 0
    # A message of k frames shows its first frame on arrival and the others one frame period apart:
    # what the receiver shows for frame i is on screen k - 1 ticks later; score it against frame i.
    lag = enc.batch - 1
    crops: dict[int, np.ndarray] = {}
    for df in driver.run(frames, enc, dec, fps, clock=clock, render_at=lambda i: True, drain=lag):
        if df.index < len(frames) and enc.last_crop is not None:
            crops[df.index] = enc.last_crop
        if df.output is not None and df.index - lag in crops:
            outputs[df.index - lag], refs[df.index - lag] = df.output, crops.pop(df.index - lag)
        kinds = [wire.decode(p.data) for p in df.packets]
        kf = [len(p.data) for p, k in zip(df.packets, kinds, strict=True) if isinstance(k, wire.KeyframeChunk)]
        if kf:
            kf_bytes.append(sum(kf))
        for p, k in zip(df.packets, kinds, strict=True):
            if isinstance(k, wire.Header):  # once per call: not part of the rate that scales with time
                start_bytes += len(p.data)
                start_wire += wire_rate.data_channel_wire_bytes(len(p.data))
            elif not isinstance(k, wire.KeyframeChunk):
                stream_bytes += len(p.data)
                stream_wire += wire_rate.data_channel_wire_bytes(len(p.data))
                n_params += isinstance(k, wire.Params)
                params_bytes += len(p.data) if isinstance(k, wire.Params) else 0
    send_ms = enc.send_ms
    inner = enc
    inner.close()
    duration = len(frames) / fps
    kf_wire = [wire_rate.data_channel_wire_bytes(min(b, wire.KEYFRAME_CHUNK_BYTES)) for b in kf_bytes]
    refresh_per_s = (len(kf_bytes) - 1) / duration
    mean_kf = float(np.mean(kf_bytes)) if kf_bytes else 0.0
    # References are in the stream bytes, so scaled with the call: an upper bound (a bank fills early).
    call_bytes = start_bytes + (kf_bytes[0] if kf_bytes else 0)
    call_bytes += CALL_S * (stream_bytes / duration + refresh_per_s * mean_kf)
    call_wire = (
        start_wire
        + (kf_wire[0] if kf_wire else 0)
        + CALL_S * (stream_wire / duration + refresh_per_s * (float(np.mean(kf_wire)) if kf_wire else 0))
    )
    renderer = dec.renderer
    return ModelRun(
        outputs,
        refs,
        {
            "n_expr": model.n_expr,
            "params_bytes_per_packet": params_bytes / max(n_params, 1),
            "keyframes": len(kf_bytes),
            "keyframe_bytes_mean": mean_kf,
            "call60_payload_kbps": call_bytes * 8 / 1000 / CALL_S,
            "call60_wire_kbps": call_wire * 8 / 1000 / CALL_S,
            "sender_ms_median": float(np.median(send_ms)) if send_ms else math.nan,
            "sender_ms_p90": float(np.percentile(send_ms, 90)) if send_ms else math.nan,
            "receiver_ms_median": float(np.median(dec.stats.render_ms)) if dec.stats.render_ms else math.nan,
            "receiver_ms_p90": float(np.percentile(dec.stats.render_ms, 90)) if dec.stats.render_ms else math.nan,
            "held_frames": inner.stats.held_frames,
            "references": inner.stats.references,
            "reference_bytes": inner.stats.reference_bytes,
            "reference_misses": dec.stats.reference_misses,
            "landmark_mismatches": int(getattr(renderer, "landmark_mismatches", 0)),
        },
    )


def score_clip(runs: dict[str, ModelRun], analyzer: fm.FaceAnalyzer, mesh: FaceMesh) -> dict[str, list[float]]:
    """Fills each run's metrics; returns the input's per-frame series (for the contact sheet)."""
    first = next(iter(runs.values()))
    idx = sorted(i for i in first.refs if i > 0 and all(i in r.outputs for r in runs.values()))
    refs = {i: first.refs[i] for i in idx}
    ref_lm = {i: mesh.landmarks(refs[i]) for i in idx}
    reference = fm.FaceReference(analyzer, refs)
    ref_series: dict[str, list[float]] = dict(reference.ref_series)
    ref_gaze = [gaze(ref_lm[i]) for i in idx]
    ref_series["gaze_x"], ref_series["gaze_y"] = [g[0] for g in ref_gaze], [g[1] for g in ref_gaze]
    ref_series["index"] = [float(i) for i in idx]
    for run in runs.values():
        assert all(np.array_equal(run.refs[i], refs[i]) for i in idx), "models saw different crops"
        outs = {i: run.outputs[i] for i in idx}
        s = reference.score(outs)
        run.metrics.update({k: v for k, v in s.means.items()})
        out_gaze = [gaze(mesh.landmarks(outs[i])) for i in idx]
        run.metrics["gaze_x_corr"] = corr(ref_series["gaze_x"], [g[0] for g in out_gaze])
        run.metrics["gaze_y_corr"] = corr(ref_series["gaze_y"], [g[1] for g in out_gaze])
        mouth, eyes, whole = [], [], []
        for i in idx:
            lm = ref_lm[i]
            whole.append(psnr(luma(refs[i]), luma(outs[i])))
            if lm is None:
                continue
            mouth.append(region_psnr(refs[i], outs[i], [region_box(lm, regions.LIPS)]))
            eyes.append(
                region_psnr(
                    refs[i],
                    outs[i],
                    [
                        region_box(lm, np.concatenate([regions.RIGHT_EYE, regions.RIGHT_IRIS])),
                        region_box(lm, np.concatenate([regions.LEFT_EYE, regions.LEFT_IRIS])),
                    ],
                )
            )
        run.metrics.update(
            psnr_y=float(np.mean(whole)), psnr_mouth=float(np.mean(mouth)), psnr_eyes=float(np.mean(eyes))
        )
        run.series = {f"out_{k}": v for k, v in s.per_frame.items()}
    for f, thr in INPUT_MOVES_STD.items():
        v = np.asarray(ref_series[f], np.float64)
        for run in runs.values():
            run.metrics[f"input_moves_{f}"] = bool(np.nanstd(v) >= thr) if np.isfinite(v).sum() > 3 else False
    return ref_series


def sheet_candidates(clip: str, ref_series: dict[str, list[float]]) -> list[tuple[str, float, int]]:
    """(row, strength, frame index) of this clip's strongest frown, eye closure, mouth opening, gaze
    shift. Strength: the input's deviation from its own median, in the feature's units (scale-free
    already: eye distances, eye aspect ratio), so the row shows the clip that moves the most, not the
    one whose few frames of noise are the most standard deviations away."""
    idx = [int(i) for i in ref_series["index"]]

    def dev(key: str, sign: int) -> np.ndarray:
        v = np.asarray(ref_series[key], np.float64)
        if np.isfinite(v).sum() < 4:
            return np.full(len(v), np.nan)
        return sign * (v - np.nanmedian(v))

    rows = (
        ("frown", fm.frown_strength(ref_series["brow_gap"], ref_series["brow_raise"])),
        ("eyes closed", dev("eye_open", -1)),
        ("mouth open", dev("mouth_open", 1)),
        ("gaze shift", np.abs(dev("gaze_x", 1))),
    )
    out = []
    for row, strength in rows:
        if not np.isfinite(strength).any():
            continue
        j = int(np.nanargmax(strength))
        out.append((row, float(strength[j]), idx[j]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", default=list(fit.HELD_OUT), help="paths under ../shared/data/raw")
    ap.add_argument("--frames", type=int, default=150, help="frames per clip")
    ap.add_argument(
        "--models",
        nargs="+",
        default=[gaussian.MODEL_ID + STATIC_SUFFIX, gaussian.MODEL_ID, "learned", "learned@3", "learned@5"],
        help="expression models, MODEL@DB: with the reference bank at that threshold (codec.bank);"
        f" a {STATIC_SUFFIX} suffix: keyframe landmarks as MediaPipe's static-image mode finds them",
    )
    ap.add_argument("--out", type=Path, default=REPO / "results" / "expr")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"real clips absent: {DATA} (see shared/data/MANIFEST.md)")
    if not fm.available():
        sys.exit("dlib or face-recognition-models missing: make install (the bench extra)")
    args.out.mkdir(parents=True, exist_ok=True)
    analyzer, mesh, detector = fm.FaceAnalyzer(), FaceMesh(video=False), FaceDetector()
    per_clip: dict[str, dict[str, dict]] = {}
    best: dict[str, tuple[float, str, dict[str, np.ndarray]]] = {}
    for clip in args.clips:
        path = DATA / clip
        c = load_clip(path, DATA, args.frames, detector) if path.is_file() else None
        if c is None:
            print(f"{clip}: missing or no face", file=sys.stderr)
            continue
        runs = {m: run_model(c.frames, c.fps, m) for m in args.models}
        ref_series = score_clip(runs, analyzer, mesh)
        per_clip[clip] = {m: r.metrics for m, r in runs.items()}
        for m, r in runs.items():
            (args.out / f"{clip.replace('/', '__')}__{m.replace('/', '-')}.json").write_text(
                json.dumps({"clip": clip, "model": m, "frames": len(c.frames), "metrics": r.metrics}, indent=1)
            )
        for row, strength, i in sheet_candidates(clip, ref_series):
            if row not in best or strength > best[row][0]:
                first = next(iter(runs.values()))
                best[row] = (
                    strength,
                    f"{clip} #{i}",
                    {"input": first.refs[i], **{m: r.outputs[i] for m, r in runs.items()}},
                )
        line = " | ".join(
            f"{m}: akd {r.metrics['akd68']:.2f} brow {r.metrics['brow_raise_corr']:.2f}"
            f" eye {r.metrics['eye_open_corr']:.2f}"
            f" mouth {r.metrics['mouth_open_corr']:.2f} gaze {r.metrics['gaze_x_corr']:.2f}"
            f" mouthdB {r.metrics['psnr_mouth']:.2f} {r.metrics['call60_payload_kbps']:.2f} kb/s"
            for m, r in runs.items()
        )
        print(f"{clip}: {line}", flush=True)
        del runs
    summary = summarize(per_clip, args.models)
    summary["clips"] = list(per_clip)
    summary["frames_per_clip"] = args.frames
    summary["cpu"] = f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end"
    (args.out / "summary.json").write_text(json.dumps({"summary": summary, "per_clip": per_clip}, indent=1))
    print_summary(summary, args.models)
    if best:
        rows = []
        for row in SHEET_ROWS:
            if row not in best:
                continue
            _, where, imgs = best[row]
            tiles = [label(imgs["input"], f"input: {row}")]
            tiles += [label(imgs[m], f"{m}") for m in args.models]
            rows.append(np.concatenate(tiles, 1))
            print(f"contact sheet {row}: {where}")
        sheet = np.concatenate(rows, 0)
        cv2.imwrite(str(args.out / "contact_sheet.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        print(f"wrote {args.out / 'contact_sheet.png'}")


def summarize(per_clip: dict[str, dict[str, dict]], models: list[str]) -> dict:
    out: dict = {}
    for m in models:
        rows = [c[m] for c in per_clip.values()]
        s = {}
        for k in rows[0]:
            vals = [r[k] for r in rows if isinstance(r[k], int | float) and not isinstance(r[k], bool)]
            vals = [v for v in vals if math.isfinite(v)]
            if vals:
                s[k] = float(np.mean(vals))
        for f in INPUT_MOVES_STD:
            moving = [r[f"{f}_corr"] for r in rows if r.get(f"input_moves_{f}") and math.isfinite(r[f"{f}_corr"])]
            s[f"{f}_corr_where_moving"] = float(np.mean(moving)) if moving else math.nan
            s[f"{f}_clips_moving"] = len(moving)
            s[f"{f}_corr_min_where_moving"] = float(np.min(moving)) if moving else math.nan
        out[m] = s
    return out


def print_summary(summary: dict, models: list[str]) -> None:
    keys = [
        "akd68",
        "id_dist",
        "face_missing",
        "brow_raise_corr_where_moving",
        "brow_gap_corr_where_moving",
        "eye_open_corr_where_moving",
        "mouth_open_corr_where_moving",
        "gaze_x_corr_where_moving",
        "gaze_y_corr",
        "psnr_y",
        "psnr_mouth",
        "psnr_eyes",
        "params_bytes_per_packet",
        "keyframe_bytes_mean",
        "call60_payload_kbps",
        "call60_wire_kbps",
        "references",
        "reference_bytes",
        "reference_misses",
        "sender_ms_median",
        "sender_ms_p90",
        "receiver_ms_median",
        "receiver_ms_p90",
    ]
    print(f"\n{'metric (mean over clips)':34s}" + "".join(f"{m:>14s}" for m in models))
    for k in keys:
        print(f"{k:34s}" + "".join(f"{summary[m].get(k, math.nan):14.3f}" for m in models))


if __name__ == "__main__":
    main()
