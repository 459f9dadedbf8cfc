"""`fvcall recv`: listen for a caller, decode its packets, render newest-first, show or write."""

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
from codec.decoder import FaceDecoder
from codec.profiles import ProfileError
from peer import signaling
from peer.connection import Connection, is_loopback, use_loopback_candidates
from peer.stats import StatusLine, receiver_summary, write_json
from peer.view import FreeView

POLL_S = 0.25  # how often to re-ask for a missing keyframe and refresh the status line
BYE_GRACE_S = 0.3  # after bye, let the last frames render
MAX_REPORTED_ERRORS = 5  # render errors printed per call; later ones are only counted


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
    """Exit after the first call."""
    stats_path: Path | None = None
    """Where to write the summary JSON after each call."""
    status: bool = True
    """Print the live status line."""
    view: FreeView = field(default_factory=FreeView)
    """Free view offsets, changed live by the window's keys."""


Sink = Callable[[np.ndarray, int], None]


class Call:
    """One call: a peer connection, a decoder and a render loop."""

    def __init__(self, opts: RecvOptions, sinks: list[Sink], status: StatusLine) -> None:
        self.opts, self.sinks, self.status = opts, sinks, status
        self.decoder = FaceDecoder(opts.weights)
        opts.view.attach(self.decoder)
        self.conn = Connection(opts.ice_servers)
        self.error: str | None = None
        self.render_errors = 0
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="fvcall-render")

    def _on_message(self, data: object) -> None:
        if not isinstance(data, bytes):
            self.decoder.stats.bad_packets += 1
            return
        try:
            replies = self.decoder.receive(data)
        except (ProfileError, RuntimeError) as exc:  # profile not runnable here (e.g. no weights)
            self.error = f"cannot render this call: {exc}"
            self.conn.send(wire.encode(wire.ControlMessage(wire.Control.BYE, 0)), reliable=True)
            self._done.set()
            return
        for p in replies:
            self.conn.send(p.data, p.reliable)
        if self.decoder.bye:
            self._done.set()
        if self.decoder.pending():
            self._wake.set()

    def _on_channel(self, ch: RTCDataChannel) -> None:
        ch.on("message", self._on_message)

    async def answer(self, offer_sdp: str, peer_host: str) -> str:
        use_loopback_candidates(is_loopback(peer_host))
        return await self.conn.accept(offer_sdp, self._on_channel)

    async def run(self) -> dict:
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        render_task = asyncio.create_task(self._render_loop())
        try:
            await self.conn.wait_open()
            self.status.message("call connected")
            while not self._done.is_set() and not self.conn.closed.is_set():
                for p in self.decoder.poll():
                    self.conn.send(p.data, p.reliable)
                self.status.update(self.decoder.stats.rendered, self.decoder.stats.rate, self._extra())
                try:
                    await asyncio.wait_for(self._done.wait(), POLL_S)
                except TimeoutError:
                    pass
            await asyncio.sleep(BYE_GRACE_S)
        finally:
            render_task.cancel()
            try:
                await render_task
            except asyncio.CancelledError:
                pass
            await self.conn.close()
            await loop.run_in_executor(self._pool, lambda: None)  # the last render finishes first
            self._pool.shutdown(wait=True)
        summary = receiver_summary(self.decoder.stats, time.monotonic() - t0)
        if self.error:
            summary["error"] = self.error
        return summary

    def _extra(self) -> str:
        s = self.decoder.stats
        lat = s.latency_ms[-25:]
        ren = s.render_ms[-25:]
        text = f" | latency {np.median(lat):4.0f} ms" if lat else ""
        text += f" | render {np.median(ren):4.1f} ms" if ren else ""
        return text + f" | dropped {max(0, self.decoder.stats.expected - s.rendered)}"

    async def _render_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.decoder.pending():
                continue
            ms = self.decoder.latest_capture_ms
            try:
                frame = await loop.run_in_executor(self._pool, self.decoder.render)
                if frame is not None:
                    for sink in self.sinks:
                        sink(frame, ms if ms is not None else int(time.monotonic() * 1000))
            except Exception as exc:  # one bad frame must not end the call: report, go on
                self.render_errors += 1
                if self.render_errors <= MAX_REPORTED_ERRORS:
                    self.status.message(f"render failed: {type(exc).__name__}: {exc}")
            if self.decoder.pending():
                self._wake.set()


async def serve(opts: RecvOptions, sinks: list[Sink], ready: Callable[[int], None] | None = None,
                on_summary: Callable[[dict], None] | None = None) -> None:
    """Accept calls one at a time; other callers are refused while one is in progress."""
    status = StatusLine("recv", opts.status)
    busy = asyncio.Lock()
    finished = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chan = signaling.Channel(reader, writer)
        if busy.locked():
            try:
                await chan.send({"type": "error", "reason": "busy: a call is in progress"})
            except (ConnectionError, signaling.SignalingError):
                pass
            await chan.close()
            return
        async with busy:
            try:
                offer_sdp = await signaling.accept_offer(chan, opts.token)
                call = Call(opts, sinks, status)
                await chan.send({"type": "answer", "sdp": await call.answer(offer_sdp, chan.peer_host)})
            except (signaling.SignalingError, ConnectionError, ValueError) as exc:
                status.message(f"refused a caller from {chan.peer_host or '?'}: {exc}")
                await chan.close()
                return
            await chan.close()
            try:
                summary = await call.run()
            except ConnectionError as exc:
                status.message(str(exc))
                return
            if call.error:
                status.message(call.error)
            status.message(f"call ended: {summary['frames_rendered']} frames rendered, "
                           f"{summary['frames_dropped']} dropped")
            write_json(opts.stats_path, summary)
            if on_summary:
                on_summary(summary)
            if opts.once:
                finished.set()

    try:
        server = await asyncio.start_server(handle, opts.listen.host, opts.listen.port,
                                            limit=signaling.MAX_LINE_BYTES)
    except OSError as exc:
        raise signaling.SignalingError(f"cannot listen on {opts.listen}: {exc.strerror or exc}") from None
    port = server.sockets[0].getsockname()[1]
    status.message(f"listening on {opts.listen.host}:{port}")
    if ready:
        ready(port)
    async with server:
        await finished.wait()
