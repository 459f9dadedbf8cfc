"""What loss, reordering, duplication and delay on the parameter channel do to the picture, frame by frame.

    python benchmarks/loss.py --clip ../shared/data/raw/DPE/s.mp4 --frames 150 --out results/loss

The clip is encoded once through codec.driver (mesh profile, lossless link: the reference
output). The packets the encoder sent are then replayed, tick by tick (driver.replay), through
codec.driver.LossyLink under each impairment into a fresh decoder (an impairment of the
unordered parameter channel does not change what the encoder sends; the keyframe request
path is exercised in tests/test_loss.py). Per setting it prints frames rendered, dropped
(parameter packets never rendered), recovered (frames whose output equals the lossless
output again right after one that did not), identical frames, and mean PSNR against the
lossless output (identical frames count as PSNR_CAP_DB). It writes loss_frames.csv and
loss.png (per-frame PSNR) to --out.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from codec import driver, keyframe, wire
from codec.api import Packet
from codec.decoder import FaceDecoder
from codec.driver import Impairment, LossyLink, TickClock
from codec.encoder import DEFAULT_BATCH, FaceEncoder
from codec.metrics import psnr

DEFAULT_CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "raw" / "DPE" / "s.mp4"
DEFAULT_FRAMES = 150
PSNR_CAP_DB = 60.0  # identical frames: a finite value so means stay meaningful
SEED = 11

SETTINGS: dict[str, Impairment] = {
    "loss 0%": Impairment(seed=SEED),
    "loss 5%": Impairment(loss=0.05, seed=SEED),
    "loss 10%": Impairment(loss=0.10, seed=SEED),
    "loss 20%": Impairment(loss=0.20, seed=SEED),
    "loss 30%": Impairment(loss=0.30, seed=SEED),
    "burst 8/50": Impairment(burst_every=50, burst_len=8, seed=SEED),  # 0.32 s outage every 2 s
    "reorder 20%": Impairment(reorder=0.2, reorder_ticks=2, seed=SEED),
    "duplicate 20%": Impairment(duplicate=0.2, seed=SEED),
    "delay 2 + jitter 0-2": Impairment(delay_ticks=2, jitter_ticks=2, seed=SEED),
    "all: 10% loss, reorder, dup, jitter": Impairment(loss=0.1, reorder=0.1, duplicate=0.1, jitter_ticks=1, seed=SEED),
}


@dataclass
class Result:
    """One setting's figures."""

    name: str
    """Setting label."""
    rendered: int
    """Frames the decoder rendered."""
    dropped: int
    """Parameter packets sent but never rendered."""
    recovered: int
    """Frames equal to the lossless output right after a frame that was not."""
    identical: int
    """Frames equal to the lossless output."""
    psnr_db: float
    """Mean PSNR against the lossless output (identical frames count as PSNR_CAP_DB)."""
    psnr: list[float]
    """Per-frame PSNR."""
    own: list[bool]
    """Per frame: the receiver shows what the lossless call shows at this tick."""
    wrong: int = 0
    """Frames shown that differ from the lossless call's frame for the same capture time (must be 0)."""


def read(clip: Path, n: int) -> tuple[list[np.ndarray], float]:
    with av.open(str(clip)) as c:
        rate = c.streams.video[0].average_rate
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(n), c.decode(video=0), strict=False)]
    return frames, float(rate) if rate else 25.0


def dec_size(frames: list[driver.DriverFrame]) -> int:
    """The codec resolution of a call, from what its receiver showed."""
    return next(f.output.shape[0] for f in frames if f.output is not None)


def sent_keyframes(sent: list[list[Packet]], size: int) -> list[np.ndarray]:
    """Every keyframe picture the sender sent, decoded as the receiver decodes it."""
    assembler, out = wire.KeyframeAssembler(), []
    for packets in sent:
        for p in packets:
            msg = wire.decode(p.data)
            if isinstance(msg, wire.KeyframeChunk) and (payload := assembler.add(msg)) is not None:
                out.append(keyframe.decode(wire.unpack_keyframe(payload).h264, size))
    return out


def run_setting(
    name: str,
    imp: Impairment,
    sent: list[list[Packet]],
    lossless: list[driver.DriverFrame],
    fps: float,
    frames_sent: int,
) -> Result:
    clock = TickClock()
    dec = FaceDecoder(clock=clock)
    out = list(driver.replay(sent, dec, fps, LossyLink(imp), clock))
    by_capture = {f.shown_capture_ms: f.output for f in lossless if f.shown_capture_ms is not None}
    # no parameters shown: a keyframe's own picture (the first, or a new one before its parameters)
    keyframe_pictures = sent_keyframes(sent, dec_size(lossless))
    scores, own, identical, recovered, wrong = [], [], 0, 0, 0
    prev_same = True
    for f, ref in zip(out, lossless, strict=True):
        same = f.output is not None and np.array_equal(f.output, ref.output)
        scores.append(psnr(f.output, ref.output, PSNR_CAP_DB) if f.output is not None else 0.0)
        own.append(f.shown_capture_ms == ref.shown_capture_ms)
        # What is shown must be exactly what the lossless call showed for the same frame (no
        # parameters shown: one of the keyframe pictures the lossless call showed).
        wants = [by_capture.get(f.shown_capture_ms)] if f.shown_capture_ms is not None else keyframe_pictures
        wrong += f.output is not None and not any(w is not None and np.array_equal(f.output, w) for w in wants)
        identical += same
        recovered += same and not prev_same
        prev_same = same
    rendered = dec.stats.rendered - dec.stats.keyframe_pictures  # frames of parameters
    return Result(
        name,
        rendered,
        frames_sent - rendered,
        recovered,
        identical,
        float(np.mean(scores)),
        scores,
        own,
        wrong,
    )


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(10, 1.3 * len(results)), sharex=True)
    for ax, r in zip(np.atleast_1d(axes), results, strict=True):
        ax.plot(r.psnr, lw=0.8)
        lost = [i for i, o in enumerate(r.own) if not o]
        ax.scatter(lost, [PSNR_CAP_DB + 3] * len(lost), s=4, c="red", marker="|")
        ax.set_ylim(10, PSNR_CAP_DB + 6)
        ax.set_ylabel("dB", fontsize=7)
        ax.set_title(
            f"{r.name}: mean {r.psnr_db:.1f} dB, {r.recovered} recoveries (red: frame not shown)",
            fontsize=8,
            loc="left",
        )
        ax.tick_params(labelsize=7)
    np.atleast_1d(axes)[-1].set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    ap.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    ap.add_argument("--out", type=Path, default=Path("results/loss"))
    ap.add_argument("--frames-per-message", type=int, default=DEFAULT_BATCH, choices=range(1, 5))
    a = ap.parse_args(argv)
    if not a.clip.is_file():
        print(f"loss: no clip at {a.clip}", file=sys.stderr)
        return 1
    frames, fps = read(a.clip, a.frames)
    encoder, clock = FaceEncoder(fps=fps, batch=a.frames_per_message), TickClock()
    lossless = list(driver.run(frames, encoder, FaceDecoder(clock=clock), fps, clock=clock, drain=encoder.batch - 1))
    encoder.close()
    sent = [f.packets for f in lossless]
    if any(f.output is None for f in lossless):
        print("loss: the lossless run shows nothing for some frames (no face?)", file=sys.stderr)
        return 1
    n = encoder.stats.params_sent
    results = [run_setting(name, imp, sent, lossless, fps, n) for name, imp in SETTINGS.items()]
    print(
        f"{len(frames)} frames of {a.clip.name} at {fps:g} fps; {encoder.stats.keyframes} keyframe(s); "
        f"{encoder.batch} frames per message; every shown frame equals the lossless call's for that frame"
    )
    print(
        f"{'setting':38s} {'rendered':>8s} {'dropped':>8s} {'recovered':>9s} {'identical':>9s} {'PSNR dB':>8s} "
        f"{'wrong':>5s}"
    )
    for r in results:
        print(
            f"{r.name:38s} {r.rendered:8d} {r.dropped:8d} {r.recovered:9d} {r.identical:9d} {r.psnr_db:8.2f} "
            f"{r.wrong:5d}"
        )
    a.out.mkdir(parents=True, exist_ok=True)
    with (a.out / "loss_frames.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", "frame", "own_params_shown", "psnr_db"])
        for r in results:
            w.writerows([r.name, i, int(o), f"{p:.3f}"] for i, (o, p) in enumerate(zip(r.own, r.psnr, strict=True)))
    plot(results, a.out / "loss.png")
    print(f"wrote {a.out / 'loss_frames.csv'} and {a.out / 'loss.png'}")
    return 1 if any(r.wrong for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
