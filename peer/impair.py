"""Network trouble on demand for one peer connection, in-process: loss, delay, a hard drop.

Used by the tests where the kernel offers no netem (and no netns privileges): it
acts on the UDP datagrams aioice sends for one RTCPeerConnection, below DTLS and SCTP, so
everything above (retransmissions, the unordered channel, the watchdog) sees a real
lossy network. It reaches into aioice's connection object, which has no public API for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
from aioice.ice import StunProtocol

from peer.connection import Connection


@dataclass
class ImpairStats:
    """What the impairment did to outgoing datagrams."""

    sent: int = 0
    """Datagrams handed to the impaired link."""
    lost: int = 0
    """Datagrams dropped."""
    delays_s: list[float] = field(default_factory=list)
    """Delay given to each delivered datagram (last few thousand)."""


MAX_DELAY_SAMPLES = 4096


def _protocols(conn: Connection) -> list[StunProtocol]:
    sctp = conn.pc.sctp
    if sctp is None:
        raise RuntimeError("the peer connection has no SCTP transport yet")
    return list(sctp.transport.transport._connection._protocols)


def impair(conn: Connection, loss: float, delay_s: float, jitter_s: float = 0.0, seed: int = 0) -> ImpairStats:
    """Drop each outgoing datagram with probability `loss`, delay the rest by delay_s (+ up to jitter_s).

    Applies to this side's sends; impair both connections for a symmetric link."""
    rng = np.random.default_rng(seed)
    stats = ImpairStats()
    loop = asyncio.get_running_loop()
    for proto in _protocols(conn):
        send: Callable[[bytes, tuple[str, int]], Awaitable[None]] = proto.send_data

        async def impaired(data: bytes, addr: tuple[str, int], send=send) -> None:
            stats.sent += 1
            if rng.random() < loss:
                stats.lost += 1
                return
            delay = delay_s + jitter_s * float(rng.random())
            if len(stats.delays_s) < MAX_DELAY_SAMPLES:
                stats.delays_s.append(delay)
            loop.call_later(delay, lambda: loop.create_task(send(data, addr)))

        proto.send_data = impaired  # type: ignore[method-assign]
    return stats


def cut(conn: Connection) -> None:
    """Simulate a network drop: from now on this side's datagrams vanish, both ways, silently.

    The sockets stay open (as when a cable is pulled or a Wi-Fi roams), so neither SCTP nor
    ICE notice for tens of seconds; the connection watchdogs on both sides must."""

    async def send_nothing(data: bytes, addr: tuple[str, int]) -> None:
        return None

    for proto in _protocols(conn):
        proto.send_data = send_nothing  # type: ignore[method-assign]
        proto.send_stun = lambda message, addr: None  # type: ignore[method-assign]
        proto.datagram_received = lambda data, addr: None  # type: ignore[method-assign]
