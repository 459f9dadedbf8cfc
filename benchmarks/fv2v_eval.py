"""fv2v quality on held-out clips: self-reenactment with the first frame as the keyframe, against `mesh`.

For each clip of ../shared/data/raw (default: three people that training must hold out), the first N
frames are face-cropped the way a call does it (codec.encoder.FaceEncoder: one FaceDetector box from
the first frame). Rows of the table, all measured against the real crops at the fv2v resolution R
(the weights' image_size), frame 0 (the keyframe itself) excluded:

- ``fv2v``    the trained networks directly: keyframe = first crop (F, L, H, Δ once), then H+Δ on each
              real crop and M+G render it. No wire quantization, no H.264 on the keyframe.
- ``mesh``    the `mesh` profile through the real codec at its own size (default 256): FaceEncoder ->
              codec.driver.run -> FaceDecoder (H.264 keyframe, int8 wire values); its output and the
              reference crop (FaceEncoder.last_crop) are downscaled to R with INTER_AREA, exactly as the
              fv2v training crops were made.
- ``static``  the unchanged first crop shown for every frame (the floor any renderer must beat).
- ``mesh@S``  the mesh rows again at the codec's own size S (MS-SSIM available there), for reference.
- ``fv2v+codec`` (--fv2v-codec) fv2v through the real codec at R like mesh (H.264 keyframe, int8 wire
              values, keyframe refreshes), against the codec's own crops at R.

Metrics: PSNR-Y (BT.601 luma, dB), SSIM (RGB, 11x11 Gaussian, pytorch_msssim), MS-SSIM (pytorch_msssim;
None below 160 px, where 5-scale MS-SSIM is undefined: SSIM is the figure there), and keypoint distance:
mean 2D distance between MediaPipe FaceMesh landmarks (468) of the output and of the real crop, in
pixels at the row's resolution (both images upscaled to 256 px for MediaPipe, which misses small
faces; frames where either has no face are counted in `kp_missing`, not in the mean).

    .venv/bin/python benchmarks/fv2v_eval.py --weights runs/RUN/model.safetensors \\
        [--clips DPE/s.mp4 EAMM/happy.mp4 styletalk/KristiNoem.mp4] [--frames 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import torch

from codec import driver
from codec.decoder import FaceDecoder
from codec.encoder import FaceEncoder
from codec.metrics import psnr_y
from models.face import FaceMesh
from models.fv2v import weights as W
from models.fv2v.model import select_runtime

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "raw"

DEFAULT_CLIPS = ("DPE/s.mp4", "EAMM/happy.mp4", "styletalk/KristiNoem.mp4")  # P14, N18, N07
MS_SSIM_MIN = 161  # pytorch_msssim's 5-scale MS-SSIM with an 11 px window needs sides > 160
LANDMARK_SIZE = 256  # px: images are upscaled to this for MediaPipe
LUMA = np.array([0.299, 0.587, 0.114])  # BT.601
METRICS = ("psnr_y", "ssim", "ms_ssim", "kp_px")


def read_frames(path: Path, n: int) -> tuple[list[np.ndarray], float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(n), container.decode(stream), strict=False)]
    return frames, fps


def down(img: np.ndarray, size: int) -> np.ndarray:
    return img if img.shape[0] == size else cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def _tensor(imgs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.0


def ssim_scores(outs: list[np.ndarray], refs: list[np.ndarray]) -> tuple[list[float], list[float] | None]:
    """Per-frame SSIM and MS-SSIM (None below MS_SSIM_MIN px)."""
    from pytorch_msssim import ms_ssim, ssim

    x, y = _tensor(outs), _tensor(refs)
    s = ssim(x, y, data_range=1.0, size_average=False).tolist()
    ms = ms_ssim(x, y, data_range=1.0, size_average=False).tolist() if x.shape[-1] >= MS_SSIM_MIN else None
    return s, ms


class Landmarks:
    """MediaPipe FaceMesh landmarks (x, y) at the image's own pixel scale; independent per image."""

    def __init__(self) -> None:
        self.mesh = FaceMesh(video=False)

    def __call__(self, img: np.ndarray) -> np.ndarray | None:
        side = img.shape[0]
        big = (
            img
            if side >= LANDMARK_SIZE
            else cv2.resize(img, (LANDMARK_SIZE, LANDMARK_SIZE), interpolation=cv2.INTER_CUBIC)
        )
        lm = self.mesh.landmarks(big)
        return None if lm is None else lm[:, :2] * (side / big.shape[0])

    def close(self) -> None:
        self.mesh.close()


def score(
    outs: list[np.ndarray], refs: list[np.ndarray], ref_lms: list[np.ndarray | None], lms: Landmarks
) -> dict[str, Any]:
    """Mean metrics of outs vs refs (same length, same size), and per-frame lists."""
    ps = [psnr_y(o, r) for o, r in zip(outs, refs, strict=True)]
    s, ms = ssim_scores(outs, refs)
    kp, missing = [], 0
    for o, rl in zip(outs, ref_lms, strict=True):
        ol = lms(o)
        if ol is None or rl is None:
            missing += 1
            continue
        kp.append(float(np.linalg.norm(ol - rl, axis=1).mean()))
    return {
        "size": int(outs[0].shape[0]),
        "frames": len(outs),
        "psnr_y": float(np.mean(ps)),
        "ssim": float(np.mean(s)),
        "ms_ssim": float(np.mean(ms)) if ms is not None else None,
        "kp_px": float(np.mean(kp)) if kp else None,
        "kp_missing": missing,
        "per_frame": {"psnr_y": ps, "ssim": s, "kp_px": kp},
    }


def run_codec(
    profile: str, frames: list[np.ndarray], fps: float, size: int, weights: Path | None = None
) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """(real crops, outputs) at `size` through the in-memory codec driver (FaceEncoder -> FaceDecoder), and stats."""
    clock = driver.TickClock()
    enc, dec = FaceEncoder(profile, size=size, fps=fps, weights=weights, batch=1), FaceDecoder(weights, clock=clock)
    refs, outs = [], []
    t0 = time.perf_counter()
    try:
        for lf in driver.run(frames, enc, dec, fps, clock=clock):  # batch 1: frame i shows at tick i
            if enc.last_crop is None or lf.output is None:
                raise RuntimeError(f"{profile} codec showed nothing for frame {lf.index} (no face found)")
            refs.append(enc.last_crop.copy())
            outs.append(lf.output.copy())
        stats = {
            "keyframes": enc.stats.keyframes,
            "held_frames": enc.stats.held_frames,
            "no_face_frames": enc.stats.no_face_frames,
            "box": enc.box.to_list() if enc.box else None,
            "ms_per_frame": (time.perf_counter() - t0) * 1000 / len(frames),
        }
    finally:
        enc.close()
    return refs, outs, stats


def run_fv2v(model: torch.nn.Module, refs: list[np.ndarray]) -> tuple[list[np.ndarray], dict]:
    """Self-reenactment: keyframe = refs[0]; every frame: H+Δ on the real crop, then M+G."""
    cache = model.keyframe(refs[0])
    outs, t_est, t_ren = [], [], []
    for r in refs:
        t0 = time.perf_counter()
        angles, t, delta = model.estimate(r)
        t1 = time.perf_counter()
        pose = torch.cat([angles[0], t[0]])
        outs.append(model.render(cache, pose, delta[0]))
        t_est.append((t1 - t0) * 1000)
        t_ren.append((time.perf_counter() - t1) * 1000)
    return outs, {"sender_ms_median": float(np.median(t_est)), "receiver_ms_median": float(np.median(t_ren))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, required=True, help="fv2v model.safetensors (with its .json card)")
    ap.add_argument("--clips", nargs="+", default=list(DEFAULT_CLIPS), help="paths under --data")
    ap.add_argument("--data", type=Path, default=DATA, help="folder of the clips (default %(default)s)")
    ap.add_argument("--frames", type=int, default=60, help="frames per clip, keyframe included")
    ap.add_argument("--mesh-size", type=int, default=256, help="the mesh codec's crop size")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--per-frame", action="store_true", help="keep per-frame values in the JSON")
    ap.add_argument(
        "--fv2v-codec", action="store_true", help="also run fv2v through the in-memory codec driver (row fv2v+codec)"
    )
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"skipped: no clip folder {args.data} (see ../shared/data/MANIFEST.md)", file=sys.stderr)
        return 0
    if args.frames < 2:
        ap.error("--frames must be at least 2")
    torch.set_num_threads(args.threads)
    card = W.read_card(args.weights)
    model = W.load(args.weights, runtime=select_runtime("cpu", "fp32"))
    size = model.cfg.image_size
    lms = Landmarks()
    results: dict[str, Any] = {
        "weights": str(args.weights),
        "model_id": W.model_id(args.weights),
        "config": card["config_name"],
        "steps": card["steps"],
        "fv2v_size": size,
        "mesh_size": args.mesh_size,
        "frames_per_clip": args.frames,
        "note": (
            f"all rows vs the real crops, frame 0 (keyframe) excluded; fv2v/mesh/static at {size} px "
            f"(mesh rendered at {args.mesh_size} px by the codec, INTER_AREA-downscaled); "
            f"mesh@{args.mesh_size} at its own size. MS-SSIM None below {MS_SSIM_MIN} px."
        ),
        "clips": {},
    }
    try:
        for clip in args.clips:
            path = args.data / clip
            if not path.is_file():
                print(f"{clip}: skipped, not found", file=sys.stderr)
                continue
            frames, fps = read_frames(path, args.frames)
            refs_big, mesh_big, stats = run_codec("mesh", frames, fps, args.mesh_size)
            refs = [down(r, size) for r in refs_big]
            fv_out, fv_stats = run_fv2v(model, refs)
            rows_in = {
                "fv2v": (fv_out, refs),
                "mesh": ([down(m, size) for m in mesh_big], refs),
                "static": ([refs[0]] * len(refs), refs),
                f"mesh@{args.mesh_size}": (mesh_big, refs_big),
            }
            extra = {"fv2v": fv_stats, "mesh": stats}
            if args.fv2v_codec:  # the whole call path: H.264 keyframe, int8 wire values, refresh logic
                c_refs, c_out, extra["fv2v+codec"] = run_codec("fv2v", frames, fps, size, args.weights)
                rows_in["fv2v+codec"] = (c_out, c_refs)
            ref_lms: dict[int, list[np.ndarray | None]] = {}
            rows = {}
            for name, (outs, rr) in rows_in.items():
                if id(rr) not in ref_lms:
                    ref_lms[id(rr)] = [lms(r) for r in rr[1:]]
                rows[name] = score(outs[1:], rr[1:], ref_lms[id(rr)], lms)
                if not args.per_frame:
                    rows[name].pop("per_frame")
                rows[name].update(extra.get(name, {}))
            results["clips"][clip] = rows
            print(f"{clip}: {len(frames)} frames done", file=sys.stderr, flush=True)
    finally:
        lms.close()
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _fmt(v: float | None, spec: str) -> str:
    return "-".rjust(int(spec.split(".")[0])) if v is None else format(v, spec)


def print_table(results: dict[str, Any]) -> None:
    print(
        f"\nfv2v {results['config']} ({results['steps']} steps, {results['model_id']}), "
        f"{results['frames_per_clip']} frames/clip, frame 0 = keyframe (excluded)"
    )
    print(f"{'clip':<28} {'row':<10} {'px':>4} {'PSNR-Y dB':>9} {'SSIM':>7} {'MS-SSIM':>7} {'kp px':>7} {'kp miss':>7}")
    means: dict[str, list[dict[str, Any]]] = {}
    for clip, rows in results["clips"].items():
        for name, r in rows.items():
            means.setdefault(name, []).append(r)
            print(
                f"{clip:<28} {name:<10} {r['size']:>4} {r['psnr_y']:9.2f} {r['ssim']:7.4f} "
                f"{_fmt(r['ms_ssim'], '7.4f')} {_fmt(r['kp_px'], '7.2f')} {r['kp_missing']:>7}"
            )
    summary = {}
    for name, rs in means.items():
        m = {k: (float(np.mean([r[k] for r in rs])) if all(r[k] is not None for r in rs) else None) for k in METRICS}
        summary[name] = m
        print(
            f"{'mean':<28} {name:<10} {rs[0]['size']:>4} {m['psnr_y']:9.2f} {m['ssim']:7.4f} "
            f"{_fmt(m['ms_ssim'], '7.4f')} {_fmt(m['kp_px'], '7.2f')}"
        )
    results["mean"] = summary


if __name__ == "__main__":
    sys.exit(main())
