"""Keyframe picture settings: bytes against PSNR-Y of the H.264 still, over real keyframe crops.

    python benchmarks/fit_entropy.py --extract-only     # once: caches the keyframe crops of every clip
    python benchmarks/keyframe_sweep.py --out results/keyframe_sweep

Every setting (x264 preset x tune x CRF) encodes the same crops (the first keyframe the real sender
cut from each clip); per setting it prints mean bytes (SEI stripped, as sent) and mean PSNR-Y against
the crop, and marks the smallest setting whose PSNR-Y is within --tolerance dB of the current default.
Writes sweep.json and sweep.png to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from codec import keyframe
from codec.metrics import psnr_y

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / "results" / "entropy" / "params"
PRESETS = ("medium", "slow", "veryslow", "placebo")
TUNES = ("stillimage", "psnr", "ssim", "")
CRFS = (30, 32, 33, 34, 35, 36, 38)  # codec.keyframe.X264_PARAMS: no macroblock tree, so higher than with it
TOLERANCE_DB = 0.3


def crops(cache: Path, limit: int | None) -> list[np.ndarray]:
    out = []
    for f in sorted(cache.glob("*.npz")):
        with np.load(f) as z:
            if len(z["kf_crops"]):
                out.append(z["kf_crops"][0])
    return out[:limit]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "keyframe_sweep")
    ap.add_argument("--limit", type=int, default=None, help="at most this many crops")
    ap.add_argument("--tolerance", type=float, default=TOLERANCE_DB)
    a = ap.parse_args(argv)
    images = crops(a.cache, a.limit)
    if not images:
        print(f"keyframe_sweep: no cached keyframe crops in {a.cache} (run fit_entropy.py first)", file=sys.stderr)
        return 1
    rows = []
    for preset in PRESETS:
        for tune in TUNES:
            for crf in CRFS:
                t0 = time.perf_counter()
                sizes, scores = [], []
                for img in images:
                    data = keyframe.encode(img, crf, preset, tune)
                    sizes.append(len(data))
                    scores.append(psnr_y(keyframe.decode(data, img.shape[0]), img))
                ms = (time.perf_counter() - t0) * 1000 / len(images)
                rows.append(
                    {
                        "preset": preset,
                        "tune": tune or "none",
                        "crf": crf,
                        "bytes": float(np.mean(sizes)),
                        "psnr_y": float(np.mean(scores)),
                        "encode_ms": ms,
                    }
                )
                print(
                    f"{preset:9s} {tune or 'none':10s} crf {crf:2d}: {rows[-1]['bytes']:7.0f} B  "
                    f"{rows[-1]['psnr_y']:6.2f} dB  {ms:5.1f} ms",
                    flush=True,
                )
    base = next(r for r in rows if (r["preset"], r["tune"], r["crf"]) == ("medium", "stillimage", 18))
    ok = [r for r in rows if r["psnr_y"] >= base["psnr_y"] - a.tolerance]
    best = min(ok, key=lambda r: r["bytes"])
    print(f"\n{len(images)} crops. today (medium, stillimage, CRF 18): {base['bytes']:.0f} B, {base['psnr_y']:.2f} dB")
    print(
        f"smallest within {a.tolerance} dB: {best['preset']}, {best['tune']}, CRF {best['crf']}: "
        f"{best['bytes']:.0f} B, {best['psnr_y']:.2f} dB, {best['encode_ms']:.0f} ms per encode"
    )
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "sweep.json").write_text(
        json.dumps({"crops": len(images), "today": base, "best": best, "rows": rows}, indent=1)
    )
    _plot(rows, a.out / "sweep.png")
    return 0


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for preset in PRESETS:
        for tune in TUNES:
            r = [x for x in rows if x["preset"] == preset and x["tune"] == (tune or "none")]
            ax.plot(
                [x["bytes"] for x in r],
                [x["psnr_y"] for x in r],
                marker=".",
                lw=0.8,
                label=f"{preset}/{tune or 'none'}",
            )
    ax.set_xlabel("keyframe picture bytes (mean)")
    ax.set_ylabel("PSNR-Y dB (mean)")
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
