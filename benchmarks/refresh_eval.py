"""Error-driven keyframe refresh (codec.refresh) against the fixed limits only, on the same frames.

    .venv/bin/python -m benchmarks.refresh_eval [--frames 200]

Cases: real clips where the picture changes in ways a warp cannot follow (a hand and pen entering,
graphics popping up, head turns), and held-out clips with a lighting change added at 3 s (+40
levels, held) — the change a real room makes when a lamp is switched on. For each: mesh profile
through the codec in memory, with the closed loop off and on: keyframes (error-driven ones apart),
PSNR-Y of what the receiver shows over the whole clip and after the event, a 60 s call's payload
rate (the clip's rates extrapolated), and the sender's check time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.harness.clips import load_clip
from codec import driver
from codec.decoder import FaceDecoder
from codec.encoder import FaceEncoder
from codec.metrics import psnr_y
from models.face import FaceDetector

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "raw"
SIZE = 256
CALL_S = 60.0
LIGHT_AT_S = 3.0  # when the added lighting change happens
LIGHT_LEVELS = 40  # how much brighter, 8-bit levels
CASES = (
    ("LivePortrait/d12.mp4", False),  # hand and pen enter, fast head motion
    ("Wav2Lip-GFPGAN/kim_7s_raw.mp4", False),  # graphics pop up at the top left
    ("first-order-model/10.mp4", False),  # head turns, moving background
    ("video-retalking/4.mp4", False),  # talking, brows, fixed camera (held out of the expression fit)
    ("EDTalk/expression_source.mp4", False),  # talking, smiling, head tilts, eye closing
    ("DPE/s.mp4", True),
    ("styletalk/KristiNoem.mp4", True),
)


def brighten(frames: list[np.ndarray], fps: float) -> list[np.ndarray]:
    at = int(LIGHT_AT_S * fps)
    return [
        f if i < at else np.clip(f.astype(np.int16) + LIGHT_LEVELS, 0, 255).astype(np.uint8)
        for i, f in enumerate(frames)
    ]


def run(frames: list[np.ndarray], fps: float, closed_loop: bool, event_s: float | None) -> dict:
    enc = FaceEncoder("mesh", SIZE, fps, closed_loop=closed_loop)
    clock = driver.TickClock()
    psnrs: list[tuple[int, float]] = []
    for df in driver.run(frames, enc, FaceDecoder(clock=clock), fps, clock=clock, render_at=lambda i: True):
        if df.index > 0 and df.output is not None and enc.last_crop is not None:
            psnrs.append((df.index, psnr_y(df.output, enc.last_crop)))
    enc.close()
    duration = len(frames) / fps
    r = enc.stats.rate
    stream = r.payload_bytes - r.keyframe_bytes
    kf_each = r.keyframe_bytes / max(enc.stats.keyframes, 1)
    call = kf_each + CALL_S * (stream / duration + (enc.stats.keyframes - 1) / duration * kf_each)
    after = [p for i, p in psnrs if event_s is not None and i >= event_s * fps]
    checks = enc.monitor.check_ms if enc.monitor is not None else []
    return {
        "keyframes": enc.stats.keyframes,
        "error_refreshes": enc.stats.error_refreshes,
        "psnr_y": float(np.mean([p for _, p in psnrs])),
        "psnr_y_after_event": float(np.mean(after)) if after else None,
        "call60_payload_kbps": call * 8 / 1000 / CALL_S,
        "check_ms_median": float(np.median(checks)) if checks else None,
        "events": [e for e in enc.events if e.startswith("rendering error")],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", help="only these cases (paths under ../shared/data/raw)")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "refresh.json")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"real clips absent: {DATA} (see shared/data/MANIFEST.md)")
    detector = FaceDetector()
    rows = {}
    print(f"{'case':46s} {'loop':>4s} {'kf':>3s} {'err':>3s} {'PSNR':>6s} {'after':>6s} {'kbit/s 60s':>10s}")
    for clip, light in CASES:
        if args.clips and clip not in args.clips:
            continue
        c = load_clip(DATA / clip, DATA, args.frames, detector) if (DATA / clip).is_file() else None
        if c is None:
            print(f"{clip}: missing or no face", file=sys.stderr)
            continue
        frames = brighten(c.frames, c.fps) if light else c.frames
        name = clip + (" +light" if light else "")
        for loop in (False, True):
            r = run(frames, c.fps, loop, LIGHT_AT_S if light else None)
            rows[f"{name} loop={loop}"] = r
            after = f"{r['psnr_y_after_event']:6.2f}" if r["psnr_y_after_event"] is not None else "     -"
            print(
                f"{name:46s} {'on' if loop else 'off':>4s} {r['keyframes']:3d} {r['error_refreshes']:3d} "
                f"{r['psnr_y']:6.2f} {after} {r['call60_payload_kbps']:10.2f}",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
