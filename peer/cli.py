"""The `fvcall` command: send, recv, demo (and prepare/train for the neural profile)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from codec import keyframe, profiles
from codec.encoder import DEFAULT_SIZE
from codec.params import QuantSpec
from codec.profiles import DEFAULT_PROFILE, PROFILES, ProfileError
from peer import signaling
from peer.sinks import SinkError, VideoFileSink, WindowSink
from peer.sources import SourceError
from peer.view import FreeView

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
SIZES = (256, 512)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run on uvloop where it is installed (faster I/O), else asyncio's own loop."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", help=f"shared secret for signaling (or set {signaling.TOKEN_ENV})")
    p.add_argument(
        "--ice-server",
        action="append",
        default=[],
        metavar="URL",
        help="STUN/TURN server, e.g. stun:stun.example.org:3478 or turn:user:pass@host:3478",
    )
    p.add_argument("--stats", type=Path, metavar="FILE.json", help="write a summary when the call ends")
    p.add_argument("--weights", type=Path, help="fv2v weights (safetensors)")
    p.add_argument("--quiet", action="store_true", help="no status line")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fvcall", description="Real-time video calls for faces at a few kbit/s.")
    sub = parser.add_subparsers(dest="command", required=True)

    send = sub.add_parser("send", help="call a receiver")
    send.add_argument("--camera", default="0", help="camera index, or a video file played at its own rate")
    send.add_argument("--peer", required=True, help="receiver's HOST:PORT")
    send.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE)
    send.add_argument("--size", type=int, choices=SIZES, default=DEFAULT_SIZE, help="codec resolution")
    send.add_argument("--keyframe-crf", type=int, default=keyframe.DEFAULT_CRF, help="x264 CRF of keyframes")
    send.add_argument("--quant-scale", type=float, default=1.0, help="scale all quantization steps")
    send.add_argument("--loop", action="store_true", help="loop a video file")
    send.add_argument("--max-frames", type=int, help="stop after N frames")
    send.add_argument("--connect-timeout", type=float, default=30.0, help="seconds to retry reaching the peer")
    send.add_argument("--no-reconnect", action="store_true", help="end the call when the connection drops")
    _common(send)

    recv = sub.add_parser("recv", help="wait for a call")
    recv.add_argument("--listen", default=f"0.0.0.0:{signaling.DEFAULT_PORT}", help="HOST:PORT to listen on")
    recv.add_argument("--out", type=Path, metavar="FILE.mp4", help="write the received video")
    recv.add_argument("--no-window", action="store_true", help="do not open a window")
    recv.add_argument(
        "--once",
        action="store_true",
        help="exit after the first call that ends with a bye (a dropped call is waited out)",
    )
    for axis in ("yaw", "pitch", "roll"):
        recv.add_argument(
            f"--{axis}",
            type=float,
            default=0.0,
            metavar="DEG",
            help=f"free view: add DEG to the caller's head {axis} (keys change it live)",
        )
    _common(recv)

    demo = sub.add_parser("demo", help="a loopback call on the embedded sample")
    demo.add_argument("--out", type=Path, default=Path("fvcall-demo.mp4"), help="side-by-side video to write")
    demo.add_argument("--no-window", action="store_true", help="do not play the result in a window")
    demo.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE)
    demo.add_argument("--seconds", type=float, default=8.0, help="length of the embedded sample")
    demo.add_argument("--camera", help="drive the demo call from this camera index or video file instead")
    demo.add_argument("--max-frames", type=int, help="with --camera: stop after N frames")
    demo.add_argument("--stats", type=Path, metavar="FILE.json", help="write the demo figures")
    demo.add_argument("--weights", type=Path, help="fv2v weights (safetensors)")
    demo.add_argument("--quiet", action="store_true", help="no status line")

    profiles.add_training_commands(sub)
    return parser


def cmd_send(a: argparse.Namespace) -> int:
    from codec.encoder import FaceEncoder
    from peer.sender import SendOptions, run_sender
    from peer.sources import open_source
    from peer.stats import write_json

    source = open_source(a.camera, a.loop)
    opts = SendOptions(
        signaling.Endpoint.parse(a.peer, "127.0.0.1"),
        signaling.token_from_env(a.token),
        a.ice_server,
        a.max_frames,
        a.connect_timeout,
        not a.no_reconnect,
        not a.quiet,
    )
    encoder = FaceEncoder(a.profile, a.size, source.fps, a.keyframe_crf, QuantSpec().scaled(a.quant_scale), a.weights)
    try:
        summary = _run(run_sender(source, encoder, opts))
    finally:
        encoder.close()
        source.close()
    write_json(a.stats, summary)
    print(
        f"[send] done: {summary['frames']} frames, payload {summary['payload_kbps']:.2f} kbit/s, "
        f"wire {summary['wire_kbps']:.2f} kbit/s"
    )
    return 0


def cmd_recv(a: argparse.Namespace) -> int:
    from peer.receiver import RecvOptions, serve

    sinks: list = []
    closers: list = []
    if a.out:
        file_sink = VideoFileSink(a.out)
        sinks.append(file_sink.write)
        closers.append(file_sink.close)
    view = FreeView(a.yaw, a.pitch, a.roll)
    if not a.no_window:
        window = WindowSink()

        def show(frame: Any, ms: int) -> None:
            window.write(frame, ms)
            view.key(window.key())

        sinks.append(show)
        closers.append(window.close)
    opts = RecvOptions(
        signaling.Endpoint.parse(a.listen),
        signaling.token_from_env(a.token),
        a.ice_server,
        a.weights,
        a.once,
        a.stats,
        not a.quiet,
        view=view,
    )
    profiles.get(DEFAULT_PROFILE).preload()
    try:
        _run(serve(opts, sinks))
    finally:
        for close in closers:
            close()
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from peer.demo import play, run_demo, summary_line
    from peer.sources import ArraySource, open_source

    source = open_source(a.camera) if a.camera else None
    if source is not None and a.max_frames:
        frames = []
        while len(frames) < a.max_frames and (frame := source.read()) is not None:
            frames.append(frame)
        source = ArraySource(frames, source.fps)
    result = _run(run_demo(a.out, a.profile, a.seconds, not a.quiet, a.weights, source))
    print(summary_line(result))
    if a.stats:
        a.stats.write_text(
            json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}, indent=2) + "\n"
        )
    if not a.no_window:
        play(a.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"send": cmd_send, "recv": cmd_recv, "demo": cmd_demo}
    try:
        if args.command in handlers:
            return handlers[args.command](args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (
        SourceError,
        SinkError,
        signaling.SignalingError,
        ProfileError,
        ConnectionError,
        ValueError,
        RuntimeError,
        OSError,
    ) as exc:
        print(f"fvcall: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
