"""Quality and speed of the `mesh` profile on real clips: warp PSNR against the static keyframe.

For each clip of ../shared/data: the first frame is the keyframe, every later frame goes
through the estimator, the wire quantization and the renderer; the table shows the mean
PSNR of the rendered frame and of the unchanged keyframe against the real frame, and the
median estimator and renderer times. Larger frames are face-cropped like a call does.

    .venv/bin/python benchmarks/mesh_quality.py --frames 150 --size 256
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import av
import numpy as np

from codec.metrics import psnr
from codec.params import QuantSpec, dequantize, quantize
from models.face import FaceDetector, crop
from models.mesh.estimator import MeshEstimator
from models.mesh.renderer import MeshRenderer

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "raw"

DEFAULT_CLIPS = (
    "DPE/s.mp4",
    "CVPR2022-DaGAN/driving.mp4",
    "LIA/driving2.mp4",
    "EAMM/happy.mp4",
    "video-retalking/4.mp4",
    "styletalk/KristiNoem.mp4",
    "EAMM/fear.mp4",
    "Thin-Plate-Spline-Motion-Model/driving.mp4",
    "video-retalking/1.mp4",
    "LivePortrait/d12.mp4",
)
PEAK = 255.0  # uint8 full scale


def measure(path: Path, frames: int, size: int) -> dict[str, float] | None:
    """Mean PSNRs (dB) and median times (ms) over one clip; None where no face is found."""
    with av.open(str(path)) as container:
        video = [f.to_ndarray(format="rgb24") for _, f in zip(range(frames), container.decode(video=0), strict=False)]
    detector = FaceDetector()
    box = detector.find(video[0])
    detector.close()
    if box is None:
        return None
    crops = [crop(f, box, size) for f in video]
    estimator, renderer = MeshEstimator(size), MeshRenderer(size)
    renderer.set_keyframe(crops[0], estimator.set_keyframe(crops[0]))
    spec = QuantSpec()
    warp, static, t_est, t_ren = [], [], [], []
    for frame in crops[1:]:
        t0 = time.perf_counter()
        params = estimator.estimate(frame)
        t1 = time.perf_counter()
        if params is None:
            continue
        out = renderer.render(dequantize(quantize(params, spec), spec))
        t2 = time.perf_counter()
        t_est.append(t1 - t0)
        t_ren.append(t2 - t1)
        warp.append(psnr(out, frame))
        static.append(psnr(crops[0], frame))
    estimator.close()
    if not warp:
        return None
    return {
        "warp": float(np.mean(warp)),
        "static": float(np.mean(static)),
        "est_ms": 1e3 * float(np.median(t_est)),
        "render_ms": 1e3 * float(np.median(t_ren)),
        "frames": len(warp),
        "src": video[0].shape[1],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", default=list(DEFAULT_CLIPS), help="paths under ../shared/data/raw")
    ap.add_argument("--frames", type=int, default=150, help="frames per clip, keyframe included")
    ap.add_argument("--size", type=int, default=256, help="crop side, px")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"real clips absent: {DATA} (see shared/data/MANIFEST.md)")
    print(
        f"{'clip':44s} {'src px':>6s} {'warp dB':>8s} {'static dB':>9s} {'gain':>6s} {'est ms':>7s} {'render ms':>9s}"
    )
    rows = []
    for clip in args.clips:
        path = DATA / clip
        r = measure(path, args.frames, args.size) if path.is_file() else None
        if r is None:
            print(f"{clip:44s} (missing or no face)")
            continue
        rows.append(r)
        print(
            f"{clip:44s} {r['src']:6d} {r['warp']:8.2f} {r['static']:9.2f} {r['warp'] - r['static']:6.2f} "
            f"{r['est_ms']:7.1f} {r['render_ms']:9.1f}",
            flush=True,
        )
    if rows:
        mean = {k: float(np.mean([r[k] for r in rows])) for k in ("warp", "static", "est_ms", "render_ms")}
        print(
            f"{'mean':44s} {'':6s} {mean['warp']:8.2f} {mean['static']:9.2f} "
            f"{mean['warp'] - mean['static']:6.2f} {mean['est_ms']:7.1f} {mean['render_ms']:9.1f}"
        )


if __name__ == "__main__":
    main()
