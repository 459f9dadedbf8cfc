"""Soak: a long loopback call (real aiortc, both peers in this process) watching memory and latency.

    python benchmarks/soak.py                       # 30 minutes on the embedded sample, looped
    python benchmarks/soak.py --minutes 10 --clip ../shared/data/raw/DPE/s.mp4 --out results/soak

Every interval (default a minute) it prints the process RSS, the capture-to-render latency
p50/p95 of the frames rendered in that interval and the rendered frame rate. At the end it
fits a line to RSS and to latency p50 (the first interval, warm-up, left out) and says
whether either grew beyond noise over the run: the fitted growth must exceed both an
absolute floor and twice the spread of the samples around the line.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from codec.encoder import FaceEncoder
from peer import signaling
from peer.receiver import Call, RecvOptions, serve
from peer.sender import SendOptions, run_sender
from peer.sources import ArraySource, FileSource, FrameSource

DEFAULT_MINUTES = 30.0
INTERVAL_S = 60.0
SAMPLE_SECONDS = 8.0  # length of the embedded sample loop
RSS_FLOOR_MB = 8.0  # RSS growth below this over the whole run is noise (allocator, caches)
LATENCY_FLOOR_MS = 15.0  # latency p50 growth below this over the run is noise (scheduling)
NOISE_SIGMAS = 2.0  # growth must also exceed this many residual standard deviations
SERVER_START_S = 10.0


@dataclass
class Sample:
    """One interval of the soak."""

    t_min: float
    """Minutes since the call started (end of the interval)."""
    rss_mb: float
    """Resident set size of this process (both peers), MiB."""
    latency_p50_ms: float
    """Median capture-to-render latency of the frames rendered in the interval."""
    latency_p95_ms: float
    """95th percentile of the same."""
    fps: float
    """Frames rendered per second in the interval."""


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, where /proc is absent


def trend(t: np.ndarray, y: np.ndarray, floor: float) -> tuple[float, float, bool]:
    """(slope per minute, growth over the run, grew beyond noise)."""
    if len(t) < 3:
        return float("nan"), float("nan"), False
    slope, intercept = np.polyfit(t, y, 1)
    residual = float(np.std(y - (slope * t + intercept)))
    growth = float(slope * (t[-1] - t[0]))
    return float(slope), growth, growth > max(floor, NOISE_SIGMAS * residual)


class TimedSource(FrameSource):
    """Ends the source after a wall-clock time (a slow machine encodes fewer frames, not for longer)."""

    def __init__(self, inner: FrameSource, seconds: float) -> None:
        self.inner, self.fps, self.deadline = inner, inner.fps, time.monotonic() + seconds

    def read(self) -> np.ndarray | None:
        return None if time.monotonic() >= self.deadline else self.inner.read()


async def soak(source: FrameSource, minutes: float, interval_s: float, profile: str) -> list[Sample]:
    calls: list[Call] = []
    seen = [0]  # frames of the current call already reported
    encoder = FaceEncoder(profile=profile, fps=source.fps)

    def new_latencies() -> list[float]:
        """Latencies of the frames rendered since the last look (the decoder keeps recent ones)."""
        if not calls:
            return []
        stats = calls[-1].decoder.stats
        n, seen[0] = stats.rendered - seen[0], stats.rendered
        return stats.latency_ms[-n:] if n > 0 else []

    def on_call(call: Call) -> None:
        calls.append(call)
        seen[0] = 0

    def on_summary(summary: dict) -> None:
        if summary["ended"] != "bye":
            print(f"[soak] call {len(calls)} {summary['ended']}: {summary['drop_reason']}", flush=True)

    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        serve(
            RecvOptions(signaling.Endpoint("127.0.0.1", 0), once=True, status=False),
            [],
            ready=port.set_result,
            on_call=on_call,
            on_summary=on_summary,
        )
    )
    opts = SendOptions(signaling.Endpoint("127.0.0.1", await asyncio.wait_for(port, SERVER_START_S)), status=False)
    sender = asyncio.create_task(run_sender(TimedSource(source, minutes * 60), encoder, opts))
    samples: list[Sample] = []
    t0 = time.monotonic()
    try:
        while not sender.done():
            await asyncio.wait([sender], timeout=interval_s)
            lat = new_latencies()
            n = len(lat)
            elapsed = time.monotonic() - t0
            prev = samples[-1].t_min * 60 if samples else 0.0
            s = Sample(
                elapsed / 60,
                rss_mb(),
                float(np.percentile(lat, 50)) if lat else float("nan"),
                float(np.percentile(lat, 95)) if lat else float("nan"),
                n / max(elapsed - prev, 1e-9),
            )
            samples.append(s)
            print(
                f"[soak] {s.t_min:6.2f} min | RSS {s.rss_mb:7.1f} MiB | latency p50 {s.latency_p50_ms:6.1f} ms "
                f"p95 {s.latency_p95_ms:6.1f} ms | {s.fps:5.1f} fps rendered | calls {len(calls)}",
                flush=True,
            )
        summary = sender.result()
        print(
            f"[soak] sender: {summary['frames']} frames, {summary['keyframes']} keyframes, "
            f"{summary['reconnects']} reconnects",
            flush=True,
        )
        await asyncio.wait_for(server, 30)
    finally:
        server.cancel()
        encoder.close()
    return samples


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=DEFAULT_MINUTES)
    ap.add_argument("--interval", type=float, default=INTERVAL_S, help="seconds between reports")
    ap.add_argument("--clip", type=Path, help="video file to loop (default: the embedded sample)")
    ap.add_argument("--profile", default="mesh")
    ap.add_argument("--out", type=Path, help="folder for soak.csv and soak.json")
    a = ap.parse_args(argv)
    if a.clip is not None:
        source: FrameSource = FileSource(a.clip, loop=True)
    else:
        from models import sample

        source = ArraySource(list(sample.frames(SAMPLE_SECONDS)), sample.SAMPLE_FPS, loop=True)
    print(
        f"[soak] {a.minutes:g} min call over loopback, {a.clip or 'embedded sample'} looped, "
        f"report every {a.interval:g} s; start RSS {rss_mb():.1f} MiB",
        flush=True,
    )
    samples = asyncio.run(soak(source, a.minutes, a.interval, a.profile))
    source.close()
    steady = [s for s in samples[1:] if np.isfinite(s.latency_p50_ms)]  # the first interval is warm-up
    t = np.array([s.t_min for s in steady])
    rss_slope, rss_growth, rss_grew = trend(t, np.array([s.rss_mb for s in steady]), RSS_FLOOR_MB)
    lat_slope, lat_growth, lat_grew = trend(t, np.array([s.latency_p50_ms for s in steady]), LATENCY_FLOOR_MS)
    verdict = {
        "rss_slope_mb_per_min": rss_slope,
        "rss_growth_mb": rss_growth,
        "rss_grew": rss_grew,
        "latency_slope_ms_per_min": lat_slope,
        "latency_growth_ms": lat_growth,
        "latency_grew": lat_grew,
        "intervals": len(samples),
    }
    print(
        f"[soak] RSS {rss_slope:+.3f} MiB/min ({rss_growth:+.1f} MiB over the run, {rss_slope * 60:+.0f} MiB/h "
        "if it kept on): "
        f"{'GREW beyond noise' if rss_grew else 'flat within noise'}"
    )
    print(
        f"[soak] latency p50 {lat_slope:+.3f} ms/min ({lat_growth:+.1f} ms over the run): "
        f"{'GREW beyond noise' if lat_grew else 'flat within noise'}"
    )
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        with (a.out / "soak.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(asdict(samples[0]).keys()) if samples else ["t_min"])
            w.writeheader()
            w.writerows(asdict(s) for s in samples)
        (a.out / "soak.json").write_text(
            json.dumps({"samples": [asdict(s) for s in samples], **verdict}, indent=2) + "\n"
        )
    return 1 if rss_grew or lat_grew else 0


if __name__ == "__main__":
    sys.exit(main())
