"""Wire bytes and packets as the sockets see them, both directions, for one peer connection.

Counted at the UDP datagrams aioice sends and receives for one RTCPeerConnection: ICE
checks, DTLS, SCTP (with its acks and retransmissions) and, through a TURN relay, the
TURN framing (channel headers, refreshes, channel binds) as well. IP and UDP headers are
not in a datagram, so they are added per packet (IPv4: 20 + 8 bytes). Like peer.impair it
reaches into aioice's connection object, which has no public API for this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

IPV4_UDP_HEADER_BYTES = 28  # 20 (IPv4) + 8 (UDP) per datagram, not part of what the socket counts


@dataclass
class WireCount:
    """Datagrams through this side's ICE sockets since the connection was set up."""

    tx_bytes: int = 0
    """UDP payload bytes sent (all datagrams: media, ICE, DTLS, TURN framing)."""
    tx_packets: int = 0
    """Datagrams sent."""
    rx_bytes: int = 0
    """UDP payload bytes received."""
    rx_packets: int = 0
    """Datagrams received."""

    def ip_bytes(self, direction: str) -> int:
        """Bytes on the link in one direction ('tx' or 'rx'), IPv4 and UDP headers included."""
        n, packets = (self.tx_bytes, self.tx_packets) if direction == "tx" else (self.rx_bytes, self.rx_packets)
        return n + packets * IPV4_UDP_HEADER_BYTES


def _wrap_send(obj: Any, name: str, count: WireCount, size: Callable[[Any], int]) -> None:
    inner = getattr(obj, name)

    def counted(data: Any, *args: Any) -> Any:
        count.tx_packets += 1
        count.tx_bytes += size(data)
        return inner(data, *args)

    setattr(obj, name, counted)


def _wrap_recv(obj: Any, count: WireCount) -> None:
    inner = obj.datagram_received

    def counted(data: bytes, addr: tuple[str, int]) -> None:
        count.rx_packets += 1
        count.rx_bytes += len(data)
        inner(data, addr)

    obj.datagram_received = counted


def _stun_size(message: Any) -> int:
    return len(bytes(message))


def count_wire(pc: Any) -> WireCount:
    """Start counting the datagrams of pc (an RTCPeerConnection whose local description is set)."""
    count = WireCount()
    sctp = pc.sctp
    if sctp is None:
        return count
    for proto in list(sctp.transport.transport._connection._protocols):
        turn = getattr(proto.transport, "_TurnTransport__inner_protocol", None)
        if turn is not None:  # relayed: count what the TURN client puts on its own socket
            _wrap_send(turn, "_send", count, len)
            _wrap_recv(turn, count)
        else:  # a host socket; uvloop transports are native objects, so count at the protocol
            _wrap_send_data(proto, count)
            _wrap_send(proto, "send_stun", count, _stun_size)
            _wrap_recv(proto, count)
    return count


def _wrap_send_data(proto: Any, count: WireCount) -> None:
    send_data = proto.send_data

    async def counted(data: bytes, addr: tuple[str, int]) -> None:
        count.tx_packets += 1
        count.tx_bytes += len(data)
        await send_data(data, addr)

    proto.send_data = counted
