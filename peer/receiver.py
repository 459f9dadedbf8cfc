"""`fvcall recv`: listen for a caller, decode its packets, render newest-first, show or write.

The receiver keeps listening for the whole session: a call that drops (the watchdog hears
nothing for a few seconds, or the peer connection fails) ends, and the same caller, or
another, may call again. `--once` exits after the first call that ends with a bye (sent by
the caller, or by this side when it cannot render the call), never after a drop: a
dropped caller is expected back. Callers arrive one at a time: while a call is in
progress, another caller is refused ("busy"), unless the call in progress has gone silent,
in which case an authenticated newcomer replaces it (that is how a dropped caller gets
back in before this side's watchdog has even fired). Before a caller has proven the token
it is held to the limits of peer.admission.

Recording (--out FILE.mp4): one fragmented MP4 per call, at the size the call was sent
at: the first call goes to FILE.mp4, the next to FILE-2.mp4, FILE-3.mp4... (see
recording_path). --stats keeps every call of the session (stats.session_summary).

Stopping (SIGINT/SIGTERM through the stop event): the call in progress is hung up with a
bye, its recording finished and the stats written before serve() returns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from aiortc import RTCDataChannel

from codec import wire
from codec.api import Packet
from codec.decoder import FaceDecoder
from codec.profiles import ProfileError
from peer import signaling
from peer.admission import Admission
from peer.connection import KEEPALIVE_S, PEER_SILENCE_S, Connection, is_loopback, use_loopback_candidates
from peer.sinks import SinkError, VideoFileSink
from peer.stats import StatusLine, receiver_summary, session_summary, write_json
from peer.view import FreeView

POLL_S = 0.25  # how often to re-ask for a missing keyframe and refresh the status line
BYE_GRACE_S = 0.3  # after bye, let the last frames render
MAX_REPORTED_ERRORS = 5  # render errors printed per call; later ones are only counted
MAX_BACKLOG = 256  # messages held while a session header is set up off the loop (~10 s of frames)
MAX_PENDING_HANDSHAKES = 8  # signaling connections being authenticated at once; more are refused
PREEMPT_SILENCE_S = 1.5  # a call silent this long yields to a new authenticated caller (~40 frames missed)
STOP_FLUSH_S = 0.3  # on a local hang-up, let the bye reach the caller before closing
RENDER_DRAIN_S = 2.0  # at the end of a call, wait this long at most for the frame being rendered
STALE_LATENCY_S = 1.0  # a latency older than this is not shown as current


class EndReason:
    """Why a call ended (the summary's "ended")."""

    BYE = "bye"
    DROPPED = "dropped"
    REPLACED = "replaced"
    STOPPED = "stopped"
    """This side hung up (a signal): the caller was told with a bye."""


@dataclass
class RecvOptions:
    """How the receiver listens and what it does with frames."""

    listen: signaling.Endpoint
    """Signaling address to listen on."""
    token: str | None = None
    """Shared secret callers must prove."""
    ice_servers: list[str] = field(default_factory=list)
    """STUN/TURN URLs."""
    weights: Path | None = None
    """fv2v weights."""
    once: bool = False
    """Exit after the first call that ends with a bye (a dropped call does not count)."""
    stats_path: Path | None = None
    """Where to write the summary JSON after each call."""
    status: bool = True
    """Print the live status line."""
    view: FreeView = field(default_factory=FreeView)
    """Free view offsets, changed live by the window's keys."""
    handshake_timeout_s: float = signaling.HANDSHAKE_TIMEOUT_S
    """A caller must complete hello/auth/offer within this many seconds (slow callers are cut off)."""
    silence_s: float = PEER_SILENCE_S
    """A call with no message from the caller for this long has dropped."""
    out: Path | None = None
    """Record each call to this MP4 (later calls to numbered siblings: recording_path)."""
    ice_policy: str = "all"
    """ICE candidates to use: 'all', or 'relay' (TURN only)."""
    first_message_timeout_s: float = signaling.FIRST_MESSAGE_TIMEOUT_S
    """A new signaling connection must send its first message within this many seconds."""


Sink = Callable[[np.ndarray, int], None]


def recording_path(out: Path, call_number: int) -> Path:
    """Call 1 records to out itself, call n > 1 to out's stem + '-n': call.mp4, call-2.mp4, call-3.mp4..."""
    return out if call_number <= 1 else out.with_name(f"{out.stem}-{call_number}{out.suffix}")


class Call:
    """One call: a peer connection, a decoder and a render loop."""

    def __init__(self, opts: RecvOptions, sinks: list[Sink], status: StatusLine, recording: Path | None = None) -> None:
        self.opts, self.sinks, self.status = opts, sinks, status
        self.decoder = FaceDecoder(opts.weights)
        opts.view.attach(self.decoder)
        self.conn = Connection(opts.ice_servers, opts.silence_s, opts.ice_policy)
        self.recording = recording
        """The MP4 this call is recorded to (None: not recorded)."""
        self._file: VideoFileSink | None = None
        self._route = ""
        self._stopping = False  # the call is winding down: the render loop ends after its current frame
        self._latency_seen = (0, time.monotonic())  # (latency samples, when that count last grew)
        self.error: str | None = None
        self.render_errors = 0
        self.ended = ""
        """How the call ended (EndReason), once run() returns."""
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="fvcall-render")
        self._backlog: list[object] | None = None  # messages that wait for a header being set up

    def _on_message(self, data: object) -> None:
        if self._backlog is not None:  # keep the order behind the header being set up
            if len(self._backlog) < MAX_BACKLOG:
                self._backlog.append(data)
            return
        if not isinstance(data, bytes):
            self.decoder.stats.bad_packets += 1
            return
        if wire.is_header(data):
            # Building the renderer (models, MediaPipe) takes seconds on a slow machine: off the loop,
            # so keepalives flow and the caller's watchdog does not mistake it for a dead network.
            self._backlog = []
            asyncio.get_running_loop().create_task(self._set_up(data))
            return
        self._after(self._decode(data))

    async def _set_up(self, header: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            replies = await loop.run_in_executor(self._pool, self._decode, header)
        finally:
            backlog, self._backlog = self._backlog or [], None
        self._after(replies)
        for data in backlog:
            self._on_message(data)

    def _decode(self, data: bytes) -> list[Packet]:
        try:
            return self.decoder.receive(data)
        except (ProfileError, RuntimeError) as exc:  # the decoder reports these itself; belt and braces
            return self.decoder.fail(str(exc))

    def _after(self, replies: list[Packet]) -> None:
        for p in replies:
            self.conn.send(p.data, p.reliable)
        if self.decoder.error:  # profile not runnable here (e.g. no weights): the decoder said bye
            self.error = f"cannot render this call: {self.decoder.error}"
            self._done.set()
            return
        if self.decoder.bye:
            self._done.set()
        if self.decoder.pending():
            self._wake.set()

    def end(self, reason: str) -> None:
        """End the call from outside (a newcomer replaces it)."""
        self.ended = self.ended or reason
        self._done.set()

    def hang_up(self) -> None:
        """This side ends the call: a bye to the caller, then the call winds down."""
        if not self._done.is_set():
            self.conn.send(wire.encode(wire.ControlMessage(wire.Control.BYE, 0)), True)
        self.end(EndReason.STOPPED)

    def _record(self, frame: np.ndarray, ms: int) -> None:
        if self.recording is None:
            return
        if self._file is None:
            try:
                self._file = VideoFileSink(self.recording)
            except SinkError as exc:
                self.status.message(f"not recording this call: {exc}")
                self.recording = None
                return
        self._file.write(frame, ms)

    def _keepalive(self) -> None:
        # The caller's watchdog needs to hear from us, also while the renderer is being set up or no
        # keyframe has arrived: an ack of the keyframe in use (-1: none yet) changes nothing there.
        if self.conn.idle_s() >= KEEPALIVE_S:
            kf = -1 if self.decoder.kf_id is None else self.decoder.kf_id
            self.conn.send(wire.encode(wire.ControlMessage(wire.Control.KEYFRAME_ACK, kf)), True)

    def _on_channel(self, ch: RTCDataChannel) -> None:
        ch.on("message", self._on_message)

    async def answer(self, offer_sdp: str, peer_host: str) -> str:
        use_loopback_candidates(is_loopback(peer_host))
        return await self.conn.accept(offer_sdp, self._on_channel)

    async def run(self) -> dict:
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        render_task = asyncio.create_task(self._render_loop())
        closed = asyncio.ensure_future(self.conn.closed.wait())
        try:
            if not await self.conn.wait_open(abort=self._done):
                raise ConnectionError("the call was ended before its data channels opened")
            self._route = self.conn.route()
            self.status.message(f"call connected ({self._route or 'route unknown'})")
            while not self._done.is_set() and not self.conn.closed.is_set():
                for p in self.decoder.poll():
                    self.conn.send(p.data, p.reliable)
                self._keepalive()
                if self.decoder.fading():
                    self._wake.set()  # animate the no-face fade at the poll rate, without spinning
                self.status.update(self.decoder.stats.rendered, self.decoder.stats.rate, self.conn.wire, self._extra())
                done = asyncio.ensure_future(self._done.wait())
                await asyncio.wait([done, closed], timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
                done.cancel()
            if self.ended == EndReason.STOPPED:
                await self._flush_ctrl()
            elif self.decoder.bye or self.error:
                self.ended = self.ended or EndReason.BYE
                await asyncio.sleep(BYE_GRACE_S)
            else:
                self.ended = self.ended or EndReason.DROPPED
        finally:
            closed.cancel()
            # A render in progress finishes and reaches the sinks (a frame counted as rendered is also
            # recorded); the loop then stops. Cancelling it mid-render would drop that frame.
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(render_task, RENDER_DRAIN_S)  # cancels it on timeout
            except TimeoutError:
                pass
            await self.conn.close()
            await loop.run_in_executor(self._pool, lambda: None)  # the last render finishes first
            self._pool.shutdown(wait=True)
            if self._file is not None:
                self._file.close()
        summary = receiver_summary(self.decoder.stats, time.monotonic() - t0, self.conn.wire)
        summary["ice_route"] = self._route
        if self.recording is not None and self._file is not None:
            summary["recording"] = str(self.recording)
            summary["frames_recorded"] = self._file.frames
            summary["frames_not_recorded"] = self._file.repeats
        summary["ended"] = self.ended
        summary["drop_reason"] = self.conn.drop_reason if self.ended == EndReason.DROPPED else ""
        summary["oversize_packets"] = self.decoder.stats.oversize
        if self.error:
            summary["error"] = self.error
        return summary

    async def _flush_ctrl(self) -> None:
        deadline = time.monotonic() + STOP_FLUSH_S
        while self.conn.ctrl is not None and self.conn.ctrl.bufferedAmount > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # let SCTP put the bye on the wire

    def _capture_clock_ms(self) -> int:
        """The sender's capture clock now, for a picture without parameters (the keyframe alone).

        Sinks need capture-time stamps on one scale: the sender's session epoch where it sent one."""
        header = self.decoder.header
        if header is None or not header.epoch_ms:
            return 0
        return max(0, int(time.time() * 1000) - header.epoch_ms)

    def _extra(self) -> str:
        s = self.decoder.stats
        lat = s.latency_ms[-25:]
        ren = s.render_ms[-25:]
        now = time.monotonic()
        if len(s.latency_ms) != self._latency_seen[0]:
            self._latency_seen = (len(s.latency_ms), now)
        if lat and now - self._latency_seen[1] <= STALE_LATENCY_S:
            text = f" | latency {np.median(lat):4.0f} ms"
        else:  # nothing new: an old median would read as the current delay
            text = f" | latency -- (nothing for {now - self._latency_seen[1]:.0f} s)" if lat else ""
        text += f" | render {np.median(ren):4.1f} ms" if ren else ""
        return text + f" | dropped {max(0, self.decoder.stats.expected - s.rendered)}"

    async def _render_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            if not (self.decoder.pending() or self.decoder.fading()):
                continue
            ms = self.decoder.latest_capture_ms
            try:
                frame = await loop.run_in_executor(self._pool, self.decoder.render)
                if frame is not None:
                    self._record(frame, ms if ms is not None else self._capture_clock_ms())
                    for sink in self.sinks:
                        sink(frame, ms if ms is not None else self._capture_clock_ms())
            except Exception as exc:  # one bad frame must not end the call: report, go on
                self.render_errors += 1
                if self.render_errors <= MAX_REPORTED_ERRORS:
                    self.status.message(f"render failed: {type(exc).__name__}: {exc}")
            if self.decoder.error:  # the renderer refused what no retry fixes: send the decoder's bye, end
                self._after(self.decoder.poll())
                return
            if self.decoder.pending():
                self._wake.set()
            else:
                wait = self.decoder.next_due()  # the later frames of a message, one period apart
                if wait is not None:
                    loop.call_later(wait, self._wake.set)


async def serve(
    opts: RecvOptions,
    sinks: list[Sink],
    ready: Callable[[int], None] | None = None,
    on_summary: Callable[[dict], None] | None = None,
    on_call: Callable[[Call], None] | None = None,
    stop: asyncio.Event | None = None,
) -> list[dict]:
    """Accept calls one at a time until stop is set (or, with opts.once, a call ends with a bye).

    Returns the summaries of every call. on_call sees each call as it starts (its decoder's
    stats, for tests and the soak)."""
    status = StatusLine("recv", opts.status)
    gate = Admission(status.message)
    busy = asyncio.Lock()
    finished = asyncio.Event()
    stop = stop or asyncio.Event()
    current: list[Call] = []  # the call in progress, if any
    summaries: list[dict] = []
    waiting = False  # a newcomer is waiting for a replaced call to wind down

    async def refuse(chan: signaling.Channel, reason: str) -> None:
        try:
            await chan.send({"type": "error", "reason": reason})
        except (ConnectionError, signaling.SignalingError):
            pass
        await chan.close()

    async def handshake(chan: signaling.Channel) -> str | None:
        """hello .. offer under the admission limits; the offer SDP, or None (refused and logged)."""
        ticket = gate.admit(chan.peer_host, chan.writer.transport.abort)
        try:
            return await asyncio.wait_for(
                signaling.accept_offer(chan, opts.token, opts.first_message_timeout_s, lambda: gate.proven(ticket)),
                opts.handshake_timeout_s,
            )
        except (signaling.SignalingError, ConnectionError, ValueError, TimeoutError) as exc:
            timeout = isinstance(exc, TimeoutError)
            reason = f"no offer within {opts.handshake_timeout_s:g} s" if timeout else str(exc)
            if not chan.writer.transport.is_closing():  # not cut by the gate (which logged it)
                gate.refused(chan.peer_host, reason)
            if timeout:
                await refuse(chan, reason)
            else:
                await chan.close()  # accept_offer has told the caller why
            return None
        finally:
            gate.leave(ticket)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await take_call(signaling.Channel(reader, writer))
        except Exception as exc:  # one caller must never take the listener down, nor print a traceback
            status.message(f"signaling connection failed: {type(exc).__name__}: {exc}")
            writer.transport.abort()

    async def take_call(chan: signaling.Channel) -> None:
        nonlocal waiting
        if stop.is_set():
            await refuse(chan, "busy: the receiver is shutting down")
            return
        offer_sdp = await handshake(chan)
        if offer_sdp is None:
            return
        if busy.locked() or stop.is_set():
            call_now = current[0] if current else None
            if waiting or call_now is None or stop.is_set() or call_now.conn.silent_s() < PREEMPT_SILENCE_S:
                gate.refused(chan.peer_host, "a call is in progress")
                await refuse(chan, "busy: a call is in progress")
                return
            status.message(
                f"the call in progress went silent {call_now.conn.silent_s():.1f} s ago: a new call replaces it"
            )
            call_now.end(EndReason.REPLACED)
            waiting = True
        async with busy:
            waiting = False
            if stop.is_set():
                await refuse(chan, "busy: the receiver is shutting down")
                return
            recording = recording_path(opts.out, len(summaries) + 1) if opts.out else None
            call = Call(opts, sinks, status, recording)
            current[:] = [call]
            if on_call:
                on_call(call)
            try:
                await signaling.send_answer(chan, await call.answer(offer_sdp, chan.peer_host))
            except (signaling.SignalingError, ConnectionError, ValueError) as exc:
                status.message(f"refused a caller from {chan.peer_host or '?'}: {exc}")
                current.clear()
                await chan.close()
                await call.conn.close()
                return
            await chan.close()
            try:
                summary = await call.run()
            except ConnectionError as exc:
                status.message(f"call from {chan.peer_host or '?'} failed: {exc}")
                return
            finally:
                current.clear()
            if call.error:
                status.message(call.error)
            how = {
                EndReason.BYE: "call ended",
                EndReason.REPLACED: "call replaced",
                EndReason.STOPPED: "call hung up",
            }.get(call.ended, f"call dropped ({call.conn.drop_reason}), still listening")
            rec = f", recorded to {call.recording}" if "recording" in summary else ""
            status.message(
                f"{how}: {summary['frames_rendered']} frames rendered, {summary['frames_dropped']} dropped{rec}"
            )
            summaries.append(summary)
            write_json(opts.stats_path, session_summary(summaries))
            if on_summary:
                on_summary(summary)
            if opts.once and call.ended == EndReason.BYE:
                finished.set()

    try:
        server = await asyncio.start_server(handle, opts.listen.host, opts.listen.port, limit=signaling.MAX_LINE_BYTES)
    except OSError as exc:
        raise signaling.SignalingError(f"cannot listen on {opts.listen}: {exc.strerror or exc}") from None
    port = server.sockets[0].getsockname()[1]
    status.message(f"listening on {opts.listen.host}:{port}")
    if ready:
        ready(port)
    try:
        ends = [asyncio.ensure_future(finished.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for e in ends:
                e.cancel()
    finally:
        server.close()
        stop.set()  # proven callers still in a handshake are refused as busy...
        gate.cut_all()  # ...and unproven ones cut
        if current:
            current[0].hang_up()
        async with busy:  # the call in progress finishes its recording and stats
            pass
    return summaries
