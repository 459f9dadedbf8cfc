"""`fvcall send`: frames from a source, through the encoder, over WebRTC to a receiver.

When the connection drops (the watchdog hears nothing from the receiver, or the peer
connection fails) the sender calls again over signaling, with a new peer connection, and
the encoder starts over with a header and a new keyframe; frames captured meanwhile are
encoded and discarded so the source keeps its pace. A receiver's bye ends the call for good.

Hanging up: at the end of the source, after --max-frames, on a read error in the middle of
a file (a one-line warning: the file ends there) and when the stop event is set (SIGINT,
SIGTERM), the sender says bye and waits for it to leave before closing. A busy receiver is
called again with back-off until connect_timeout_s has passed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from codec import wire
from codec.api import Encoder
from peer import signaling
from peer.connection import KEEPALIVE_S, PEER_SILENCE_S, Connection, is_loopback, use_loopback_candidates
from peer.sources import FrameSource, SourceError
from peer.stats import StatusLine, sender_summary
from peer.wirecount import WireCount

BYE_FLUSH_S = 1.0  # wait this long for queued reliable messages before closing
RECONNECT_WINDOW_S = 60.0  # keep calling again for this long after a drop, then give up
RECONNECT_RETRY_S = 0.5  # pause between attempts (a busy receiver may still be winding the old call down)
BUSY_BACKOFF_S = (0.5, 1.0, 2.0, 4.0)  # waits between calls to a busy receiver; the last one repeats


@dataclass
class SendOptions:
    """How to reach the receiver."""

    peer: signaling.Endpoint
    """Receiver's signaling address."""
    token: str | None = None
    """Shared secret, if the receiver wants one."""
    ice_servers: list[str] = field(default_factory=list)
    """STUN/TURN URLs."""
    max_frames: int | None = None
    """Stop after this many frames."""
    connect_timeout_s: float = 30.0
    """How long to retry reaching the receiver."""
    reconnect: bool = True
    """Set the call up again after a network drop."""
    status: bool = True
    """Print the live status line."""
    silence_s: float = PEER_SILENCE_S
    """The connection has dropped when nothing arrives from the receiver for this long."""
    reconnect_window_s: float = RECONNECT_WINDOW_S
    """How long to keep calling again after a drop."""
    ice_policy: str = "all"
    """ICE candidates to use: 'all', or 'relay' (TURN only)."""


class CallEnded(Exception):
    """The receiver said bye."""


class Stopped(Exception):
    """The stop event was set while the call was being set up."""


async def _until_stopped(coro: Awaitable[Connection], stop: asyncio.Event) -> Connection:
    task = asyncio.ensure_future(coro)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass
    raise Stopped()


async def _establish(
    opts: SendOptions,
    on_ctrl: Callable[[bytes], None],
    on_retry: Callable[[str], None] = lambda _: None,
    timeout_s: float | None = None,
) -> Connection:
    use_loopback_candidates(is_loopback(opts.peer.host))
    conn = Connection(opts.ice_servers, opts.silence_s, opts.ice_policy)
    try:
        # The offer first (ICE gathering, TURN allocation): the receiver then hears from us at once.
        sdp = await conn.make_offer()
        chan = await signaling.connect(opts.peer, opts.connect_timeout_s if timeout_s is None else timeout_s, on_retry)
        try:
            answer = await signaling.offer(chan, sdp, opts.token)
        finally:
            await chan.close()
        await conn.finish_offer(answer)
    except BaseException:
        await conn.close()
        raise
    assert conn.ctrl is not None
    conn.ctrl.on("message", lambda m: on_ctrl(m) if isinstance(m, bytes) else None)
    try:
        await conn.wait_open()
    except BaseException:
        await conn.close()
        raise
    return conn


async def _call(opts: SendOptions, on_ctrl: Callable[[bytes], None], status: StatusLine, window_s: float) -> Connection:
    """_establish, calling again with back-off while the receiver is busy or cuts us off, for window_s."""
    deadline = time.monotonic() + window_s
    attempt = 0
    while True:
        try:
            return await _establish(opts, on_ctrl, status.message, max(0.1, deadline - time.monotonic()))
        except signaling.SignalingError as exc:
            left = deadline - time.monotonic()
            if not exc.retry or left <= 0:
                raise
            wait = BUSY_BACKOFF_S[min(attempt, len(BUSY_BACKOFF_S) - 1)]
            attempt += 1
            status.message(f"{exc}: calling {opts.peer} again in {wait:g} s (retrying for {left:.0f} s)")
            await asyncio.sleep(min(wait, left))


async def _keepalive(holder: list[Connection], encoder: Encoder) -> None:
    """Tell the receiver we are alive when the encoder has nothing to send (no face, no keyframe yet).

    FACE_LOST repeats the current face state, which is what an idle sender has to say."""
    while True:
        await asyncio.sleep(KEEPALIVE_S / 4)
        conn = holder[0]
        if conn.idle_s() >= KEEPALIVE_S and not conn.closed.is_set():
            conn.send(wire.encode(wire.ControlMessage(wire.Control.FACE_LOST, int(encoder.face_lost))), True)


async def run_sender(
    source: FrameSource,
    encoder: Encoder,
    opts: SendOptions,
    on_frame: Callable[[int, np.ndarray | None], None] | None = None,
    on_connection: Callable[[Connection], None] | None = None,
    stop: asyncio.Event | None = None,
) -> dict:
    """Run one call until the source ends (or max_frames, or stop is set); returns the summary.

    on_connection sees each peer connection as it opens (the first, and each after a reconnect).
    Raises Stopped when stop is set before the call is connected."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    status = StatusLine("send", opts.status)
    pool = ThreadPoolExecutor(1, thread_name_prefix="fvcall-encode")
    control: list[bytes] = []
    bye = asyncio.Event()

    def on_ctrl(data: bytes) -> None:
        try:
            msg = wire.decode(data)
        except wire.WireError:
            return
        if isinstance(msg, wire.ControlMessage) and msg.code == wire.Control.BYE:
            bye.set()
        else:
            control.append(data)  # applied on the encoder thread, between frames

    def encode(frame: np.ndarray, ms: int) -> list:
        while control:
            encoder.receive(control.pop(0))
        return encoder.encode(frame, ms)

    conn = await _until_stopped(_call(opts, on_ctrl, status, opts.connect_timeout_s), stop)
    if on_connection:
        on_connection(conn)
    wires: list[WireCount] = [conn.wire]
    holder = [conn]  # the keepalive follows reconnects
    keepalive = asyncio.create_task(_keepalive(holder, encoder))
    reconnect_s: list[float] = []
    routes = [conn.route()]
    status.message(f"connected to {opts.peer} ({routes[0] or 'route unknown'})")
    t0 = time.monotonic()
    encoder.set_epoch(int(time.time() * 1000))  # capture_ms counts from here: latency needs both ends
    frames_sent = 0
    dropped = False
    period = 1.0 / source.fps
    next_t = t0
    try:
        while not bye.is_set() and not stop.is_set():
            if opts.max_frames is not None and encoder.stats.frames >= opts.max_frames:
                break
            try:
                frame = await loop.run_in_executor(pool, source.read)
            except SourceError as exc:  # a damaged file: what was readable was the call
                status.message(f"warning: {exc}: hanging up there")
                break
            if frame is None or stop.is_set():
                break
            capture_ms = int((time.monotonic() - t0) * 1000)
            packets = await loop.run_in_executor(pool, encode, frame, capture_ms)
            if conn.closed.is_set():
                if not opts.reconnect:
                    status.message(f"the connection dropped: {conn.drop_reason or 'closed'}")
                    break
                t_drop = time.monotonic()
                control.clear()  # replies meant for the old connection's keyframe
                try:
                    conn = await _until_stopped(_reconnect(conn, opts, on_ctrl, encoder, status), stop)
                except Stopped:
                    break
                holder[0] = conn
                wires.append(conn.wire)
                routes.append(conn.route())
                if on_connection:
                    on_connection(conn)
                reconnect_s.append(time.monotonic() - t_drop)
                continue
            for p in packets:
                frames_sent += p.frames if conn.send(p.data, p.reliable) else 0
            if on_frame:
                on_frame(capture_ms, encoder.last_crop)
            for event in encoder.events:
                status.message(event)
            encoder.events.clear()
            status.update(encoder.stats.frames, encoder.stats.rate, conn.wire, _extra(encoder))
            next_t += period
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))
            if next_t < time.monotonic() - 1.0:
                next_t = time.monotonic()  # far behind (slow machine): do not burst to catch up
        if bye.is_set():
            status.message("the receiver ended the call")
        elif conn.closed.is_set():
            dropped = True
        else:
            for p in encoder.flush():  # the frame still waiting for its message partner
                frames_sent += p.frames if conn.send(p.data, p.reliable) else 0
            conn.send(wire.encode(wire.ControlMessage(wire.Control.BYE, 0)), reliable=True)
            await _flush(conn)
    finally:
        keepalive.cancel()
        await conn.close()
        pool.shutdown(wait=False)
    duration = time.monotonic() - t0
    fields = ("tx_bytes", "tx_packets", "rx_bytes", "rx_packets")
    total = WireCount(*(sum(getattr(w, f) for w in wires) for f in fields))
    summary = sender_summary(encoder.stats, duration, frames_sent, total)
    summary["ice_routes"] = routes
    summary["ended"] = (
        "bye_received" if bye.is_set() else "stopped" if stop.is_set() else "dropped" if dropped else "bye_sent"
    )
    summary["reconnects"] = len(reconnect_s)
    summary["reconnect_s"] = reconnect_s
    return summary


def _extra(encoder: Encoder) -> str:
    ms = encoder.stats.estimate_ms[-25:]
    return f" | estimate {np.median(ms):5.1f} ms" if ms else ""


async def _flush(conn: Connection) -> None:
    deadline = time.monotonic() + BYE_FLUSH_S
    while conn.ctrl is not None and conn.ctrl.bufferedAmount > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)  # let SCTP put the last message on the wire


async def _reconnect(
    old: Connection, opts: SendOptions, on_ctrl: Callable[[bytes], None], encoder: Encoder, status: StatusLine
) -> Connection:
    """A new peer connection after a drop; retries (busy receiver, receiver restarting) for a while."""
    status.message(f"connection lost ({old.drop_reason or 'closed'}): calling again")
    await old.close()
    deadline = time.monotonic() + opts.reconnect_window_s
    while True:
        try:
            conn = await _establish(opts, on_ctrl, timeout_s=max(0.1, deadline - time.monotonic()))
        except (signaling.SignalingError, ConnectionError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise ConnectionError(f"could not reconnect within {opts.reconnect_window_s:.0f} s: {exc}") from None
            await asyncio.sleep(RECONNECT_RETRY_S)
            continue
        encoder.restart()
        status.message("reconnected: new keyframe")
        return conn
