"""Sanity checks of the perceptual metric (vmaf-torch) on real crops: run with --validate-vmaf.

1. identical input and output -> close to 100;
2. x264 at rising CRF -> falling VMAF (monotone);
3. the same ranking of those points as PSNR-Y (Spearman rank correlation 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from codec import metrics as met
from models.face import FaceDetector, FaceMesh

from . import anchors as anc
from . import clips as clp

CHECK_CRFS = (18, 26, 34, 42, 51)
CHECK_FRAMES = 60
CHECK_SCORED = 16
IDENTICAL_MIN = 95.0  # VMAF of a perfect copy (the v0.6.1 model tops out just below 100 on static content)


def validate(paths: list[Path], root: Path, size: int) -> dict[str, object]:
    det = FaceDetector()
    mesh = FaceMesh(video=False)
    rows: list[dict[str, object]] = []
    try:
        for path in paths:
            clip = clp.load_clip(path, root, CHECK_FRAMES, det)
            if clip is None:
                continue
            crops = clp.crops(clip.frames, [clip.box] * len(clip.frames), size)
            scored = met.choose_frames(len(crops), CHECK_SCORED, 0)
            ref = met.Reference(crops, scored, mesh)
            identical = float(np.mean(ref.vmaf({i: crops[i] for i in scored})))
            cfg = anc.AnchorConfig("x264-medium", values=CHECK_CRFS)
            vm, ps = [], []
            for crf in CHECK_CRFS:
                run = anc.encode_point(crops, clip.fps, cfg, crf, set(scored))
                vm.append(float(np.mean(ref.vmaf(run.outputs))))
                ps.append(float(np.mean([met.psnr(ref.y[i], met.luma(run.outputs[i])) for i in scored])))
            rho = float(spearmanr(vm, ps).statistic)
            rows.append(
                {
                    "clip": clip.clip_id,
                    "identical": identical,
                    "crf": list(CHECK_CRFS),
                    "vmaf": vm,
                    "psnr_y": ps,
                    "monotone": bool(np.all(np.diff(vm) < 0)),
                    "spearman_vs_psnr": rho,
                }
            )
    finally:
        det.close()
        mesh.close()
    ok = bool(rows) and all(
        r["identical"] >= IDENTICAL_MIN and r["monotone"] and r["spearman_vs_psnr"] > 0.99 for r in rows
    )
    return {"ok": ok, "clips": rows}
