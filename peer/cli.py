"""The `fvcall` command: send, recv, demo (and prepare/train for the neural profile).

Every option is checked before a call connects (bad values are one-line errors, exit 2).
SIGINT and SIGTERM end a call cleanly: the sender or receiver hangs up with a bye, finishes
its recording and writes its stats, and the process exits with 128 + the signal number. A
second signal, or a shutdown that takes longer than STOP_DEADLINE_S, exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from codec import bank, keyframe, profiles
from codec.encoder import DEFAULT_SIZE
from codec.params import QuantSpec
from codec.profiles import DEFAULT_PROFILE, PROFILES, ProfileError
from peer import signaling
from peer.connection import ICE_POLICIES, parse_ice_server
from peer.sinks import SinkError, WindowSink, check_writable
from peer.sources import SourceError
from peer.view import MAX_DEG, FreeView

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
SIZES = (256, 512)
STOP_DEADLINE_S = 1.8  # after a signal: hang up, finish files, exit; past this the process exits anyway
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
QUANT_SCALE_RANGE = (0.05, 20.0)  # beyond: every frame a keyframe (too fine), or no motion left (too coarse)
MAX_CONNECT_TIMEOUT_S = 3600.0
MAX_REFERENCE_THRESHOLD_DB = 40.0  # beyond this no region ever calls for a reference: use off
N = TypeVar("N", int, float)


class Stop:
    """The first SIGINT/SIGTERM sets event (a clean hang-up); a second one, or STOP_DEADLINE_S, exits at once."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.signum: int | None = None
        """The signal that asked to stop."""

    def __call__(self, signum: int) -> None:
        if self.signum is not None:
            os._exit(128 + signum)
            return  # (os._exit does not return; a test's stand-in does)
        self.signum = signum
        print(f"\n[fvcall] {signal.Signals(signum).name}: hanging up (again to quit at once)", file=sys.stderr)
        self.event.set()
        timer = threading.Timer(STOP_DEADLINE_S, self._too_slow)
        timer.daemon = True
        timer.start()

    def _too_slow(self) -> None:
        print(f"[fvcall] did not stop within {STOP_DEADLINE_S:g} s: exiting", file=sys.stderr)
        os._exit(128 + (self.signum or signal.SIGINT))

    def exit_code(self, normal: int = 0) -> int:
        return normal if self.signum is None else 128 + self.signum


def _run(make: Callable[[asyncio.Event], Coroutine[Any, Any, Any]], stop: Stop) -> Any:
    """Run on uvloop where it is installed (faster I/O), else asyncio's own loop; signals set stop."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        loop = runner.get_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop, sig)
        try:
            return runner.run(make(stop.event))
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)


class _Parser(argparse.ArgumentParser):
    """Errors in one line (no usage dump), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number_in(kind: type[N], low: N, high: N | None = None, low_open: bool = False) -> Callable[[str], N]:
    """argparse type: a `kind` (int or float) from low (excluded with low_open) up to high (None: no limit)."""
    noun = "an integer" if kind is int else "a number"
    if kind is int:
        bounds = f"{low}..{high if high is not None else ''}"
    else:
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if (
            (kind is float and not math.isfinite(value))  # math.isfinite overflows on a huge int
            or value < low
            or (low_open and value == low)
            or (high is not None and value > high)
        ):
            shown = value if kind is int else text  # an int as read (5 for +5), a float as typed
            raise argparse.ArgumentTypeError(f"{shown} is out of range ({bounds})")
        return value

    return parse


def _reference_threshold(text: str) -> float | None:
    """--reference-threshold: dB, or 'off'."""
    if text.strip().lower() == "off":
        return None
    return _number_in(float, 0, MAX_REFERENCE_THRESHOLD_DB, low_open=True)(text)


def _endpoint(default_host: str, any_port: bool = False) -> Callable[[str], signaling.Endpoint]:
    def parse(text: str) -> signaling.Endpoint:
        try:
            return signaling.Endpoint.parse(text, default_host, any_port)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _ice_url(text: str) -> str:
    try:
        parse_ice_server(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _out_file(text: str) -> Path:
    path = Path(text)
    try:
        check_writable(path)
    except SinkError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return path


def _in_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no file {text!r}")
    return path


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", help=f"shared secret for signaling (or set {signaling.TOKEN_ENV})")
    p.add_argument(
        "--ice-server",
        action="append",
        default=[],
        metavar="URL",
        type=_ice_url,
        help="STUN/TURN server, e.g. stun:stun.example.org:3478 or turn:user:pass@host:3478",
    )
    p.add_argument(
        "--ice-transport-policy",
        choices=ICE_POLICIES,
        default="all",
        help="'relay': only candidates relayed by a TURN server (hides this host's addresses)",
    )
    p.add_argument("--stats", type=_out_file, metavar="FILE.json", help="write a summary when the call ends")
    p.add_argument("--weights", type=_in_file, help="fv2v weights (safetensors)")
    p.add_argument("--quiet", action="store_true", help="no status line")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fvcall", description="Real-time video calls for faces at a few kbit/s.")
    sub = parser.add_subparsers(dest="command", required=True)

    send = sub.add_parser("send", help="call a receiver")
    send.add_argument("--camera", default="0", help="camera index, or a video file played at its own rate")
    send.add_argument(
        "--peer",
        required=True,
        type=_endpoint("127.0.0.1"),
        help=f"receiver's HOST:PORT (port {signaling.DEFAULT_PORT} when left out)",
    )
    send.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE)
    send.add_argument("--size", type=int, choices=SIZES, default=DEFAULT_SIZE, help="codec resolution")
    send.add_argument(
        "--keyframe-crf",
        type=_number_in(int, 0, 51),
        default=keyframe.DEFAULT_CRF,
        help="x264 CRF of keyframes (0..51)",
    )
    send.add_argument(
        "--quant-scale",
        type=_number_in(float, *QUANT_SCALE_RANGE),
        default=1.0,
        help=f"scale all quantization steps ({QUANT_SCALE_RANGE[0]:g}..{QUANT_SCALE_RANGE[1]:g})",
    )
    send.add_argument(
        "--frames-per-message",
        type=int,
        choices=range(1, 5),
        default=2,
        metavar="K",
        help="frames of parameters per message (1-4; each above 1 adds one frame period of latency, default 2)",
    )
    send.add_argument(
        "--reference-threshold",
        type=_reference_threshold,
        default=bank.THRESHOLD_DB,
        metavar="DB|off",
        help="send a reference picture of the eyes or mouth when that region stays this many dB worse than "
        f"after the keyframe (lower: more references, more bits; default {bank.THRESHOLD_DB:g}; off: none)",
    )
    send.add_argument("--loop", action="store_true", help="loop a video file")
    send.add_argument("--max-frames", type=_number_in(int, 0), help="stop after N frames (0: connect and hang up)")
    send.add_argument(
        "--connect-timeout",
        type=_number_in(float, 0, MAX_CONNECT_TIMEOUT_S, low_open=True),
        default=30.0,
        help="seconds to keep calling a receiver that is not up yet, or busy",
    )
    send.add_argument("--no-reconnect", action="store_true", help="end the call when the connection drops")
    _common(send)

    recv = sub.add_parser("recv", help="wait for a call")
    recv.add_argument(
        "--listen",
        default=signaling.Endpoint("0.0.0.0", signaling.DEFAULT_PORT),
        type=_endpoint("0.0.0.0", any_port=True),
        help="HOST:PORT to listen on",
    )
    recv.add_argument(
        "--out",
        type=_out_file,
        metavar="FILE.mp4",
        help="record each call: the first to FILE.mp4, later ones to FILE-2.mp4, FILE-3.mp4...",
    )
    recv.add_argument("--no-window", action="store_true", help="do not open a window")
    recv.add_argument(
        "--once",
        action="store_true",
        help="exit after the first call that ends with a bye (a dropped call is waited out)",
    )
    for axis in ("yaw", "pitch", "roll"):
        recv.add_argument(
            f"--{axis}",
            type=_number_in(float, -MAX_DEG, MAX_DEG),
            default=0.0,
            metavar="DEG",
            help=f"free view: add DEG to the caller's head {axis} (keys change it live)",
        )
    _common(recv)

    demo = sub.add_parser("demo", help="a loopback call on the embedded sample")
    demo.add_argument("--out", type=_out_file, default=Path("fvcall-demo.mp4"), help="side-by-side video to write")
    demo.add_argument("--no-window", action="store_true", help="do not play the result in a window")
    demo.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE)
    demo.add_argument(
        "--seconds", type=_number_in(float, 0, 600, low_open=True), default=8.0, help="length of the embedded sample"
    )
    demo.add_argument("--camera", help="drive the demo call from this camera index or video file instead")
    demo.add_argument("--max-frames", type=_number_in(int, 1), help="with --camera: stop after N frames")
    demo.add_argument("--stats", type=_out_file, metavar="FILE.json", help="write the demo figures")
    demo.add_argument("--weights", type=_in_file, help="fv2v weights (safetensors)")
    demo.add_argument("--quiet", action="store_true", help="no status line")

    profiles.add_training_commands(sub)
    return parser


def cmd_send(a: argparse.Namespace) -> int:
    from codec.encoder import FaceEncoder
    from peer.sender import SendOptions, Stopped, run_sender
    from peer.sources import PeekedSource, open_source
    from peer.stats import write_json

    if a.ice_transport_policy == "relay" and not any(u.startswith("turn") for u in a.ice_server):
        raise ValueError("--ice-transport-policy relay needs a TURN server: --ice-server turn:USER:PASS@HOST:PORT")
    source = PeekedSource(open_source(a.camera, a.loop))  # the first frame is checked before connecting
    if source.first is None:
        source.close()
        raise SourceError(f"{a.camera}: no frames to send")
    opts = SendOptions(
        a.peer,
        signaling.token_from_env(a.token),
        a.ice_server,
        a.max_frames,
        a.connect_timeout,
        not a.no_reconnect,
        not a.quiet,
        ice_policy=a.ice_transport_policy,
    )
    try:
        encoder = FaceEncoder(
            a.profile,
            a.size,
            source.fps,
            a.keyframe_crf,
            QuantSpec().scaled(a.quant_scale),
            a.weights,
            batch=a.frames_per_message,
            references=False if a.reference_threshold is None else bank.BankPolicy(a.reference_threshold),
        )
    except BaseException:
        source.close()
        raise
    stop = Stop()
    try:
        summary = _run(lambda ev: run_sender(source, encoder, opts, stop=ev), stop)
    except Stopped:
        print("[send] stopped before the call connected", file=sys.stderr)
        return stop.exit_code()
    finally:
        encoder.close()
        source.close()
    write_json(a.stats, summary)
    print(
        f"[send] done: {summary['frames']} frames, payload {summary['payload_kbps']:.2f} kbit/s, "
        f"wire up {summary['wire_tx_kbps']:.2f} down {summary['wire_rx_kbps']:.2f} kbit/s "
        f"({summary['wire_tx_packets_per_s']:.1f} + {summary['wire_rx_packets_per_s']:.1f} packets/s)"
    )
    return stop.exit_code()


def cmd_recv(a: argparse.Namespace) -> int:
    from peer.receiver import RecvOptions, serve

    if a.ice_transport_policy == "relay" and not any(u.startswith("turn") for u in a.ice_server):
        raise ValueError("--ice-transport-policy relay needs a TURN server: --ice-server turn:USER:PASS@HOST:PORT")
    sinks: list = []
    closers: list = []
    view = FreeView(a.yaw, a.pitch, a.roll)
    if not a.no_window:
        window = WindowSink()

        def show(frame: Any, ms: int) -> None:
            window.write(frame, ms)
            view.key(window.key())

        sinks.append(show)
        closers.append(window.close)
    opts = RecvOptions(
        a.listen,
        signaling.token_from_env(a.token),
        a.ice_server,
        a.weights,
        a.once,
        a.stats,
        not a.quiet,
        view=view,
        out=a.out,
        ice_policy=a.ice_transport_policy,
    )
    profiles.get(DEFAULT_PROFILE).preload()
    stop = Stop()
    try:
        _run(lambda ev: serve(opts, sinks, stop=ev), stop)
    finally:
        for close in closers:
            close()
    return stop.exit_code()


def cmd_demo(a: argparse.Namespace) -> int:
    from peer.demo import play, run_demo, summary_line
    from peer.sources import ArraySource, open_source

    source = open_source(a.camera) if a.camera else None
    if source is not None and a.max_frames:
        frames = []
        while len(frames) < a.max_frames and (frame := source.read()) is not None:
            frames.append(frame)
        source = ArraySource(frames, source.fps)
    stop = Stop()
    result = _run(lambda _ev: run_demo(a.out, a.profile, a.seconds, not a.quiet, a.weights, source), stop)
    print(summary_line(result))
    if a.stats:
        a.stats.write_text(
            json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}, indent=2) + "\n"
        )
    if not a.no_window:
        play(a.out)
    return 0


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM before the event loop runs (loading models): end like Ctrl-C


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


def run() -> NoReturn:
    """The console entry point: main(), then exit without the interpreter's teardown.

    Everything is written and closed when main() returns; tearing down torch, MediaPipe and
    aiortc's modules afterwards takes seconds on a loaded machine, which would make a
    signalled call overstay its STOP_DEADLINE_S for nothing."""
    signal.signal(signal.SIGTERM, _terminate)
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
