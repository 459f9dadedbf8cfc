"""Fit the parameter stream's probability models (and the keyframe rig's shape model) on real clips.

    python benchmarks/fit_entropy.py                     # extract what is not cached, fit, write the models
    python benchmarks/fit_entropy.py --clips DIR --frames 300 --out codec/entropy_models

Step 1 (slow, once per clip, cached under results/entropy/params/): every clip under --clips goes
through the real sender (codec.encoder.FaceEncoder, default settings); per frame it keeps the
unquantized parameters the estimator produced, whether the encoder sent them, the keyframe they are
relative to, the landmarks, and per keyframe its original crop, landmarks and v1 sizes.
Step 2 (seconds): persons are split into a fitting set and a held-out set (every HOLDOUT_EVERY-th
person of MANIFEST.md, by label); the models are fitted on the fitting set only and scored on both.
The models are parametric in physical units (degrees, crop widths), so one file serves every
quantization step. Rerun after changing the estimator or its expression basis: the model file is
keyed by (profile, n_expr, basis id); a sender without a matching file uses the generic model, and
the receiver always uses the model the session header carries.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.harness.param_cache import (
    DEFAULT_CACHE,
    DEFAULT_CLIPS,
    DEFAULT_FRAMES,
    HOLDOUT_EVERY,
    ClipData,
    load_all,
    sequences,
    split,
)
from codec import entropy, profiles
from codec.params import QuantSpec
from codec.profiles import DEFAULT_PROFILE
from models.mesh import shape


def _tracked(d: ClipData) -> np.ndarray:
    lm = d.arrays["landmarks"].astype(np.float64)
    ok = np.isfinite(lm).all(axis=(1, 2))
    return lm[ok][::3] / 256.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=Path, default=DEFAULT_CLIPS, help="folder of real clips (MANIFEST.md beside it)")
    ap.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="frames per clip")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where extracted sequences are cached")
    ap.add_argument("--out", type=Path, default=entropy.MODEL_DIR, help="folder the model files go to")
    ap.add_argument("--extract-only", action="store_true")
    a = ap.parse_args(argv)
    if not a.clips.is_dir():
        print(f"fit_entropy: no clips at {a.clips}", file=sys.stderr)
        return 1
    data = load_all(a.clips, a.cache, a.frames)
    if a.extract_only:
        return 0
    fit_set, held = split(data)
    n_expr = int(data[0].arrays["n_expr"])
    provenance = {
        "clips": [d.clip for d in fit_set],
        "held_out_clips": [d.clip for d in held],
        "frames_per_clip_max": a.frames,
        "frames": int(sum(d.arrays["sent"].sum() for d in fit_set)),
        "split": f"persons by MANIFEST.md label; every {HOLDOUT_EVERY}th label (sorted) held out",
        "extracted_with": "codec.encoder.FaceEncoder defaults (benchmarks/fit_entropy.py)",
        "date": time.strftime("%Y-%m-%d"),
    }
    basis = profiles.get(DEFAULT_PROFILE).basis_id()
    model = entropy.fit(sequences(fit_set), n_expr, DEFAULT_PROFILE, basis, provenance)
    path = entropy.save(model, a.out)
    print(f"wrote {path}")
    shapes = np.concatenate([_tracked(d) for d in fit_set])
    rig_model = shape.fit(shapes, provenance | {"frames": len(shapes), "what": "every 3rd tracked frame"})
    print(f"wrote {shape.MODEL_PATH} ({len(shapes)} landmark sets)")
    for name, part in (("fit", fit_set), ("held-out", held)):
        kfs = [(lm, d) for d in part for lm in d.arrays["kf_landmarks"]]
        sizes, errs = [], []
        for lm, _ in kfs:
            data = shape.encode(lm, 256, rig_model)
            sizes.append(len(data))
            errs.append(np.abs(shape.decode(data, 256, rig_model) - lm))
        err = np.concatenate(errs)
        print(
            f"rig {name}: {len(kfs)} keyframes, {np.mean(sizes):.0f} B mean (max {max(sizes)}), "
            f"v1 {np.mean([d.arrays['kf_aux_bytes'].mean() for d in part]):.0f} B; error RMS "
            f"{np.sqrt((err[:, :2] ** 2).mean()):.3f} px (x, y), max {err.max():.2f} px"
        )
    for name, part in (("fit", fit_set), ("held-out", held)):
        seqs = sequences(part)
        print(f"{name}: {len(part)} clips, {sum(len(s) for s in seqs)} frames")
        for scale in (1.0, 2.0, 4.0):
            bits = entropy.estimate_bits(model, seqs, QuantSpec().scaled(scale))
            print(f"  quant x{scale:g}: " + ", ".join(f"{k} {v:.1f} bits/frame" for k, v in bits.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
