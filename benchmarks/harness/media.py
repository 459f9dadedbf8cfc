"""Pictures at matched rates, per clip: a contact sheet PNG and a side-by-side mp4.

Columns: the input crop | fvcall's default setting | plain real-time x264 (x264-medium at full
size) at the nearest rate at or above fvcall's | the conventional envelope's best point at that
rate (highest PSNR-Y among all conventional points at or below it). Rates are those of a 60 s call.
Rows of the sheet: the scored frames where the input has its eyes most closed, its inner brows
closest (a frown), its mouth most open, and a typical (median-PSNR) frame.

The chosen points are encoded again here (deterministic encoders: the same bytes as in the run).
These files show third-party faces: they stay in the results folder, never in the repository.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from . import anchors as anc
from . import face_metrics as fm
from .fvcall import DEFAULT_SETTING
from .rate import call_kbps

MEDIA_DIR = "media"
LEAD_CALL_S = 60.0
PLAIN_ANCHOR = "x264-medium"  # the configuration a caller gets without tuning
ENVELOPE_METRIC = "psnr_y"
VIDEO_SECONDS = 10.0  # side-by-side length: enough to judge motion, cheap to render
VIDEO_CRF = 16  # the comparison video itself must not add visible artefacts
LABEL_H = 22  # px band above each column
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.36


def sheet_path(out: Path, clip_id: str) -> Path:
    return out / MEDIA_DIR / f"{clip_id}__sheet.png"


def video_path(out: Path, clip_id: str) -> Path:
    return out / MEDIA_DIR / f"{clip_id}__side_by_side.mp4"


def done(out: Path, clip_id: str) -> bool:
    return sheet_path(out, clip_id).is_file() and video_path(out, clip_id).is_file()


def _docs(out: Path, clip_id: str) -> list[dict[str, Any]]:
    docs = []
    for p in sorted((out / "runs").glob(f"{clip_id}__*.json")):
        try:
            d = json.loads(p.read_text())
        except ValueError:
            continue
        if d.get("clip") == clip_id:
            docs.append(d)
    return docs


def choose_points(docs: list[dict[str, Any]], profile: str) -> dict[str, Any] | None:
    """The fvcall default point, the plain x264 point at or above its rate, and the envelope's best there."""
    fv_point = next(
        (
            p
            for d in docs
            if d["kind"] == "fvcall" and d["family"] == profile
            for p in d["points"]
            if p["label"] == DEFAULT_SETTING.label()
        ),
        None,
    )
    if fv_point is None:
        return None
    rate = call_kbps(fv_point["rate"], LEAD_CALL_S)
    conv = [(d, p, call_kbps(p["rate"], LEAD_CALL_S)) for d in docs if d["kind"] == "anchor" for p in d["points"]]
    plain = [c for c in conv if c[0]["name"] == PLAIN_ANCHOR]
    if not plain:
        return None
    above = [c for c in plain if c[2] >= rate]
    pick = min(above, key=lambda c: c[2]) if above else max(plain, key=lambda c: c[2])
    budget = pick[2]
    within = [c for c in conv if c[2] <= budget and c[1]["metrics"].get(ENVELOPE_METRIC) is not None]
    best = max(within, key=lambda c: c[1]["metrics"][ENVELOPE_METRIC]) if within else pick
    return {"fv": (profile, fv_point, rate), "plain": pick, "best": best}


def _anchor_cfg(doc: dict[str, Any], anchors: list[anc.AnchorConfig]) -> anc.AnchorConfig:
    return next(a for a in anchors if a.name == doc["name"])


def label(img: np.ndarray, text: str) -> np.ndarray:
    """img with a black band above it that carries text (contact sheets: the picture stays whole)."""
    band = np.zeros((LABEL_H, img.shape[1], 3), np.uint8)
    cv2.putText(band, text, (3, LABEL_H - 7), FONT, FONT_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([band, img])


def _rows(scorer: Any, scored: list[int]) -> list[tuple[int, str]]:
    """(frame, why) for the sheet: closed eyes, frown, open mouth, typical."""
    face = scorer.face
    picks: list[tuple[int, str]] = []
    if face is not None:
        feats = {i: f for i, f in face.features.items() if f is not None}
        if feats:
            picks.append((min(feats, key=lambda i: feats[i]["eye_open"]), "eyes most closed"))
            frames = sorted(feats)
            frown = fm.frown_strength([feats[i]["brow_gap"] for i in frames], [feats[i]["brow_raise"] for i in frames])
            if np.isfinite(frown).any():
                picks.append((frames[int(np.nanargmax(frown))], "brows closest and lowest (frown)"))
            picks.append((max(feats, key=lambda i: feats[i]["mouth_open"]), "mouth most open"))
    picks.append((scored[len(scored) // 2], "typical"))
    seen: set[int] = set()
    out = []
    for i, why in picks:
        if i not in seen:
            seen.add(i)
            out.append((i, why))
    return out


def make(
    out: Path,
    clip_id: str,
    fps: float,
    crops: list[np.ndarray],
    scored: list[int],
    scorer: Any,
    profile: str,
    render_fv: Callable[[set[int]], dict[int, np.ndarray]],
    anchors: list[anc.AnchorConfig],
) -> list[str]:
    """Write the sheet and the video of one clip; returns notes."""
    docs = _docs(out, clip_id)
    chosen = choose_points(docs, profile)
    if chosen is None:
        return [f"{clip_id}: no contact sheet (no {profile} default point or no {PLAIN_ANCHOR} points)"]
    n_video = min(len(crops), max(1, int(round(VIDEO_SECONDS * fps))))
    want = set(scored) | set(range(n_video))
    fv_rate = chosen["fv"][2]
    columns: list[tuple[str, dict[int, np.ndarray]]] = [
        ("input", {i: crops[i] for i in want}),
        (f"{profile} default {fv_rate:.3g} kbit/s", render_fv(want)),
    ]
    for key in ("plain", "best"):
        doc, pt, r = chosen[key]
        cfg = _anchor_cfg(doc, anchors)
        value = next(iter(pt["setting"].values()))
        run = anc.encode_point(crops, fps, cfg, value, want)
        columns.append((f"{doc['name']} {pt['label']} {r:.3g} kbit/s", run.outputs))
    media_dir = out / MEDIA_DIR
    media_dir.mkdir(parents=True, exist_ok=True)

    rows = []
    for i, why in _rows(scorer, scored):
        tiles = [label(c[i], f"{name}" if k else f"frame {i}: {why}") for k, (name, c) in enumerate(columns)]
        rows.append(np.hstack(tiles))
    header = np.zeros((LABEL_H, rows[0].shape[1], 3), np.uint8)
    w = crops[0].shape[1]
    for k, (name, _) in enumerate(columns):
        cv2.putText(header, name, (k * w + 3, LABEL_H - 7), FONT, FONT_SCALE, (255, 255, 0), 1, cv2.LINE_AA)
    sheet = np.vstack([header, *rows])
    cv2.imwrite(str(sheet_path(out, clip_id)), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))

    _write_video(video_path(out, clip_id), fps, [np.hstack([c[i] for _, c in columns]) for i in range(n_video)], header)
    return []


def _write_video(path: Path, fps: float, frames: list[np.ndarray], header: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as c:
        rate = _fps_fraction(fps)
        s = c.add_stream("libx264", rate=rate)
        h, w = frames[0].shape[0] + header.shape[0], frames[0].shape[1]
        s.width, s.height = w + (w % 2), h + (h % 2)
        s.pix_fmt = "yuv420p"
        s.options = {"crf": str(VIDEO_CRF), "preset": "veryfast"}
        for f in frames:
            img = np.vstack([header, f])
            img = np.pad(img, ((0, s.height - img.shape[0]), (0, s.width - img.shape[1]), (0, 0)))
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    tmp.replace(path)


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps if math.isfinite(fps) and fps > 0 else 25.0).limit_denominator(1001)
