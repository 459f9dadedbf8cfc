"""`fvcall demo`: a real WebRTC call over loopback, driven by the embedded sample.

Both peers run in this process (each with its own connection, signaling over TCP on
127.0.0.1); the input crops and the received frames are matched by capture time, written
side by side, and scored.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codec import profiles
from codec.encoder import FaceEncoder
from codec.metrics import psnr
from codec.profiles import DEFAULT_PROFILE
from peer import signaling
from peer.receiver import RecvOptions, serve
from peer.sender import SendOptions, run_sender
from peer.sinks import VideoFileSink, WindowSink, display_available
from peer.sources import ArraySource, FrameSource

DEMO_SECONDS = 8.0


@dataclass
class DemoResult:
    """What the demo measured."""

    frames_sent: int
    """Parameter packets the sender sent."""
    frames_rendered: int
    """Frames the receiver rendered."""
    payload_kbps: float
    """Sender payload rate, keyframe included."""
    wire_kbps: float
    """Sender's upstream rate measured at its sockets (all datagrams, IPv4/UDP headers included)."""
    keyframe_bytes: int
    """Bytes of keyframe messages."""
    references: int
    """Reference pictures the sender sent (codec.bank; their bytes are in the payload)."""
    params_bytes_per_frame: float
    """Parameter bytes per frame sent (PARAMS only: keyframes, references and headers left out)."""
    psnr_db: float
    """Mean PSNR of rendered frames against the sent crops they stand for (matched by capture time)."""
    psnr_shown_db: float
    """Mean PSNR of what the viewer saw for every sent crop (held frames where one was not rendered)."""
    estimate_ms_p50: float | None
    """Sender: median crop + landmarks + fit time per frame."""
    render_ms_p50: float | None
    """Receiver: median render time per frame."""
    latency_ms_p50: float | None
    """Median capture-to-render latency."""
    out: Path
    """The side-by-side video."""


async def run_demo(
    out: Path,
    profile: str = "mesh",
    seconds: float = DEMO_SECONDS,
    status: bool = True,
    weights: Path | None = None,
    source: FrameSource | None = None,
) -> DemoResult:
    """The call on `source` (default: the embedded sample, `seconds` long)."""
    if source is None:
        frames, fps = profiles.sample_frames(seconds)
        source = ArraySource(list(frames), fps)
    profiles.get(DEFAULT_PROFILE).preload()
    sent: dict[int, np.ndarray] = {}
    received: dict[int, np.ndarray] = {}
    summaries: list[dict] = []
    port_box: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    recv_opts = RecvOptions(signaling.Endpoint("127.0.0.1", 0), once=True, status=status, weights=weights)
    server = asyncio.create_task(
        serve(
            recv_opts,
            [lambda f, ms: received.__setitem__(ms, f)],
            ready=port_box.set_result,
            on_summary=summaries.append,
        )
    )
    port = await asyncio.wait_for(port_box, 10)
    encoder = FaceEncoder(profile=profile, fps=source.fps, weights=weights)
    send_opts = SendOptions(signaling.Endpoint("127.0.0.1", port), status=status, reconnect=False)

    def keep(ms: int, crop: np.ndarray | None) -> None:
        if crop is not None:
            sent[ms] = crop

    try:
        summary = await run_sender(source, encoder, send_opts, keep)
        await asyncio.wait_for(server, 15)
    finally:
        encoder.close()
        server.cancel()
    got = summaries[0] if summaries else {}
    scores = [psnr(received[ms], sent[ms]) for ms in sent if ms in received]
    shown_scores = _write_side_by_side(out, sent, received)
    return DemoResult(
        summary["frames_sent"],
        got.get("frames_rendered", 0),
        summary["payload_kbps"],
        summary["wire_tx_kbps"],
        summary["keyframe_bytes"],
        summary["references"],
        summary["payload_bytes_per_frame"] or 0.0,
        float(np.mean(scores)) if scores else float("nan"),
        float(np.mean(shown_scores)) if shown_scores else float("nan"),
        summary["estimate_ms_p50"],
        got.get("render_ms_p50"),
        got.get("latency_ms_p50"),
        out,
    )


def _write_side_by_side(out: Path, sent: dict[int, np.ndarray], received: dict[int, np.ndarray]) -> list[float]:
    """input | output per sent frame (the last one shown where none was rendered); PSNR of each."""
    scores = []
    sink = VideoFileSink(out)
    shown: np.ndarray | None = None
    for ms in sorted(sent):
        shown = received.get(ms, shown)
        right = shown if shown is not None else np.zeros_like(sent[ms])
        if shown is not None:
            scores.append(psnr(right, sent[ms]))
        sink.write(np.hstack([sent[ms], right]), ms)
    sink.close()
    return scores


def play(path: Path) -> None:
    """Show the written demo once in a window (where there is a display)."""
    if not display_available():
        return
    import av

    window = WindowSink("fvcall demo: input | output")
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            window.write(f.to_ndarray(format="rgb24"), 0)
            if window.key() in (27, ord("q")):
                break
    window.close()


def summary_line(r: DemoResult) -> str:
    ms = " | ".join(
        f"{name} {v:.1f} ms"
        for name, v in (("estimate", r.estimate_ms_p50), ("render", r.render_ms_p50), ("latency", r.latency_ms_p50))
        if v is not None
    )
    return (
        f"demo: {r.frames_rendered}/{r.frames_sent} frames rendered | payload {r.payload_kbps:.2f} kbit/s "
        f"(keyframe {r.keyframe_bytes} B, {r.references} references, {r.params_bytes_per_frame:.1f} B/frame)"
        f" | wire up {r.wire_kbps:.2f} kbit/s | {ms} | PSNR {r.psnr_db:.2f} dB rendered,"
        f" {r.psnr_shown_db:.2f} dB shown | wrote {r.out}"
    )
