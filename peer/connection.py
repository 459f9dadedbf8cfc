"""The WebRTC peer connection: two data channels over DTLS/SCTP (aiortc).

"ctrl": reliable and ordered, for the header, keyframes and control messages.
"params": unordered, no retransmits, for per-frame parameters (a late one is useless).

Liveness: SCTP in aiortc sends no heartbeats and ICE consent takes ~30 s to fail, so a
network drop would go unnoticed. Both peers send something at least every KEEPALIVE_S
(the codec's own messages, or a keepalive when idle) and a watchdog declares the
connection dead after PEER_SILENCE_S without a single message from the other side.

Closing: aiortc's RTCPeerConnection.close() marks the connection closed before it stops the
transports, and a close() cancelled half-way leaves that mark unresolved, so every later
close() waits on it forever (the hang on Ctrl-C). Connection.close() therefore runs the
close as one task that is never cancelled, and waits for it at most CLOSE_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable

import aioice.ice
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)

from peer.wirecount import WireCount, count_wire

CTRL_LABEL = "ctrl"
PARAMS_LABEL = "params"
CHANNEL_OPEN_TIMEOUT_S = 15.0
PARAMS_MAX_BUFFERED_BYTES = 4096  # params queued beyond this are dropped, not delayed
KEEPALIVE_S = 1.0  # send something at least this often, even with nothing to say
PEER_SILENCE_S = 3.0  # no message for this long: the connection is dead (3 missed keepalives)
WATCHDOG_TICK_S = 0.25  # how often the watchdog looks
CLOSE_TIMEOUT_S = 1.0  # a peer connection that takes longer to close is left to the garbage collector
ICE_SCHEMES = ("stun", "turn", "turns")
ICE_POLICIES = ("all", "relay")

_original_host_addresses = aioice.ice.get_host_addresses


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def use_loopback_candidates(enabled: bool) -> None:
    """Offer only 127.0.0.1 as ICE host candidate (aioice skips loopback by default).

    Used when the signaling peer is on this machine: the call then never leaves loopback."""
    aioice.ice.get_host_addresses = (
        (lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []) if enabled else _original_host_addresses
    )


def parse_ice_server(url: str) -> RTCIceServer:
    """stun:host[:port] or turn[s]:user:pass@host[:port][?transport=udp|tcp]; ValueError (one line) otherwise."""
    scheme, _, rest = url.partition(":")
    if scheme not in ICE_SCHEMES or not rest:
        raise ValueError(f"bad --ice-server {url!r}: expected stun:HOST:PORT or turn:USER:PASS@HOST:PORT")
    user = password = None
    if scheme in ("turn", "turns"):
        cred, at, hostport = rest.rpartition("@")
        user, _, password = cred.partition(":")
        if not at or not user or not password:
            raise ValueError(f"bad --ice-server {url!r}: a TURN server needs USER:PASS@ before its address")
        rest = hostport
    host, colon, port = rest.partition("?")[0].rpartition(":")
    if not colon:
        host, port = port, "3478"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad --ice-server {url!r}: expected HOST:PORT after the scheme")
    return RTCIceServer(urls=f"{scheme}:{rest}", username=user, credential=password)


def ice_configuration(urls: list[str], policy: str = "all") -> RTCConfiguration:
    """STUN/TURN servers from URLs like stun:host:port or turn:user:pass@host:port; policy 'relay'
    limits ICE to candidates relayed by a TURN server."""
    if policy not in ICE_POLICIES:
        raise ValueError(f"bad ICE transport policy {policy!r}: expected one of {', '.join(ICE_POLICIES)}")
    if policy == "relay" and not any(u.startswith("turn") for u in urls):
        raise ValueError("--ice-transport-policy relay needs a TURN server (--ice-server turn:USER:PASS@HOST:PORT)")
    return RTCConfiguration(
        iceServers=[parse_ice_server(u) for u in urls], iceTransportPolicy=RTCIceTransportPolicy(policy)
    )


class Connection:
    """An RTCPeerConnection with fvcall's two channels."""

    def __init__(self, ice_servers: list[str], silence_s: float = PEER_SILENCE_S, ice_policy: str = "all") -> None:
        self.pc = RTCPeerConnection(ice_configuration(ice_servers, ice_policy))
        self.wire = WireCount()
        """Datagrams this side sent and received, counted at its sockets."""
        self._closing: asyncio.Task[None] | None = None
        self.ctrl: RTCDataChannel | None = None
        self.params: RTCDataChannel | None = None
        self.closed = asyncio.Event()
        self.silence_s = silence_s
        self.drop_reason = ""
        """Why the connection closed, when it was not closed by this side ('' otherwise)."""
        self._open = asyncio.Event()
        self._last_rx = self._last_tx = time.monotonic()
        self._watchdog: asyncio.Task[None] | None = None

        @self.pc.on("connectionstatechange")
        async def _state() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                self._drop(f"peer connection {self.pc.connectionState}")

    def _drop(self, reason: str) -> None:
        if not self.closed.is_set():
            self.drop_reason = reason
            self.closed.set()

    def _watch(self, ch: RTCDataChannel) -> None:
        ch.on("close", lambda: self._drop(f"data channel {ch.label!r} closed"))
        ch.on("message", self._touch)
        if ch.readyState == "open":
            self._maybe_open()
        else:
            ch.on("open", self._maybe_open)

    def _touch(self, _message: object = None) -> None:
        self._last_rx = time.monotonic()

    def _maybe_open(self) -> None:
        if all(c is not None and c.readyState == "open" for c in (self.ctrl, self.params)) and not self._open.is_set():
            self._open.set()
            self._last_rx = self._last_tx = time.monotonic()
            self._watchdog = asyncio.get_running_loop().create_task(self._watch_silence())

    async def _watch_silence(self) -> None:
        last = time.monotonic()
        while not self.closed.is_set():
            await asyncio.sleep(WATCHDOG_TICK_S)
            now = time.monotonic()
            stall = now - last - WATCHDOG_TICK_S
            last = now
            if stall > WATCHDOG_TICK_S:
                # This loop was blocked (a heavy renderer set-up, an overloaded machine): whatever the
                # other side sent meanwhile is still unread in the socket, so the stall is not its silence.
                self._last_rx += stall
                continue
            if self.silent_s() > self.silence_s:
                self._drop(f"nothing received for {self.silence_s:g} s")

    def route(self) -> str:
        """The ICE pair in use, e.g. 'relay 10.0.0.1:49152 -> relay 10.0.1.1:49153' ('' before one is chosen)."""
        try:
            nominated = self.pc.sctp.transport.transport._connection._nominated  # aioice, no public API
            pair = nominated.get(1)
        except AttributeError:
            return ""
        if pair is None:
            return ""
        local, remote = pair.local_candidate, pair.remote_candidate
        return f"{local.type} {local.host}:{local.port} -> {remote.type} {remote.host}:{remote.port}"

    def silent_s(self) -> float:
        """Seconds since the last message from the other side."""
        return time.monotonic() - self._last_rx

    def idle_s(self) -> float:
        """Seconds since this side last sent a message."""
        return time.monotonic() - self._last_tx

    async def make_offer(self) -> str:
        self.ctrl = self.pc.createDataChannel(CTRL_LABEL, ordered=True)
        self.params = self.pc.createDataChannel(PARAMS_LABEL, ordered=False, maxRetransmits=0)
        self._watch(self.ctrl)
        self._watch(self.params)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.wire = count_wire(self.pc)  # the sockets exist once candidates are gathered
        return self.pc.localDescription.sdp

    async def accept(self, sdp: str, on_channel: Callable[[RTCDataChannel], None] | None = None) -> str:
        @self.pc.on("datachannel")
        def _channel(ch: RTCDataChannel) -> None:
            if ch.label == CTRL_LABEL:
                self.ctrl = ch
            elif ch.label == PARAMS_LABEL:
                self.params = ch
            else:
                ch.close()
                return
            if on_channel:
                on_channel(ch)
            self._watch(ch)

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self.wire = count_wire(self.pc)
        return self.pc.localDescription.sdp

    async def finish_offer(self, answer_sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))

    async def wait_open(self, timeout: float = CHANNEL_OPEN_TIMEOUT_S, abort: asyncio.Event | None = None) -> bool:
        """Wait for both channels; False when abort was set first. ConnectionError on timeout."""
        waits = [asyncio.ensure_future(self._open.wait())]
        if abort is not None:
            waits.append(asyncio.ensure_future(abort.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if self._open.is_set():
            return True
        if abort is not None and abort.is_set():
            return False
        raise ConnectionError(
            f"data channels did not open within {timeout:.0f} s: no ICE route between "
            "the peers (a firewall or NAT in between: try --ice-server)"
        )

    def send(self, data: bytes, reliable: bool) -> bool:
        """Queue one message; False when it was dropped (channel closed or params congested)."""
        ch = self.ctrl if reliable else self.params
        if ch is None or ch.readyState != "open":
            return False
        if not reliable and ch.bufferedAmount > PARAMS_MAX_BUFFERED_BYTES:
            return False
        ch.send(data)
        self._last_tx = time.monotonic()
        return True

    async def close(self) -> None:
        """Close once; safe to call again, and from a task being cancelled (see the module notes)."""
        self.closed.set()
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.pc.close())
        try:
            await asyncio.wait_for(asyncio.shield(self._closing), CLOSE_TIMEOUT_S)
        except TimeoutError:
            pass
