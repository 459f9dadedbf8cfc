"""A real call over a lossy, slow network: 10% loss and 50 ms delay each way.

Two ways, whichever this host allows:
- network namespaces: `fvcall recv` in the root namespace, `fvcall send` in a namespace
  joined by a veth pair with `tc netem loss 10% delay 50ms` on both ends (needs root,
  `ip netns` and the sch_netem qdisc; skipped with the reason otherwise);
- in-process: both peers in this process over loopback, every UDP datagram either side
  sends dropped with probability 0.1 or delayed 50 ms (peer.impair), below DTLS and SCTP.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from callrig import delete, first_failure, two_process_call
from conftest import clip_path, read_frames

from codec.encoder import FaceEncoder
from peer import impair, signaling
from peer.connection import Connection
from peer.receiver import Call, RecvOptions, serve
from peer.sender import SendOptions, run_sender
from peer.sources import ArraySource

LOSS = 0.10
DELAY_S = 0.050
FRAMES = 60
NS = "fvtest"
VETH_HOST, VETH_NS = "fvt0", "fvt1"
ADDR_HOST, ADDR_NS = "10.231.7.1", "10.231.7.2"
PORT = 8799
CALL_TIMEOUT_S = 150


def _teardown() -> None:
    delete([NS], [VETH_HOST])


def _netns_unavailable() -> str | None:
    """Why the namespace test cannot run here (None when it can); leaves nothing behind."""
    if os.geteuid() != 0:
        return "needs root for ip netns"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) not installed"
    _teardown()
    try:
        failed = first_failure(
            [
                ("ip", "netns", "add", NS),
                ("ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS),
                ("tc", "qdisc", "add", "dev", VETH_HOST, "root", "netem", "loss", "10%", "delay", "50ms"),
            ]
        )
        return None if failed is None else f"`{failed[0]}` failed here: {failed[1]}"
    finally:
        _teardown()


@pytest.fixture
def namespace() -> Iterator[None]:
    reason = _netns_unavailable()
    if reason:
        pytest.skip(
            f"network namespaces with netem unavailable ({reason}); the lossy real call is tested "
            "in-process by test_real_call_with_loss_and_delay_in_process"
        )
    try:
        failed = first_failure(
            [
                ("ip", "netns", "add", NS),
                ("ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS),
                ("ip", "link", "set", VETH_NS, "netns", NS),
                ("ip", "addr", "add", f"{ADDR_HOST}/24", "dev", VETH_HOST),
                ("ip", "link", "set", VETH_HOST, "up"),
                ("tc", "qdisc", "add", "dev", VETH_HOST, "root", "netem", "loss", "10%", "delay", "50ms"),
            ]
        )
        assert failed is None, failed
        failed = first_failure(
            [
                ("ip", "addr", "add", f"{ADDR_NS}/24", "dev", VETH_NS),
                ("ip", "link", "set", VETH_NS, "up"),
                ("ip", "link", "set", "lo", "up"),
                ("tc", "qdisc", "add", "dev", VETH_NS, "root", "netem", "loss", "10%", "delay", "50ms"),
            ],
            ns=NS,
        )
        assert failed is None, failed
        yield
    finally:
        _teardown()


def test_call_across_namespaces_with_netem(namespace: None, tmp_path: Path) -> None:
    """Transport: real UDP across a veth pair between namespaces, netem loss 10% + delay 50 ms."""
    call = two_process_call(
        tmp_path,
        clip_path("DPE/s.mp4"),
        listen=f"{ADDR_HOST}:{PORT}",
        peer=f"{ADDR_HOST}:{PORT}",
        frames=FRAMES,
        timeout_s=CALL_TIMEOUT_S,
        recv_args=["--quiet"],
        send_args=["--quiet"],
        send_ns=NS,
    )
    got = call.got
    assert got["keyframes"] >= 1 and got["frames_rendered"] >= 0.3 * FRAMES and got["bad_packets"] == 0, got


def test_real_call_with_loss_and_delay_in_process() -> None:
    """Transport: real aiortc over 127.0.0.1, both peers in this process; every datagram
    either side sends is lost with probability 0.1 or delayed 50 ms (peer.impair)."""
    frames = read_frames("DPE/s.mp4", FRAMES)
    asyncio.run(_lossy_call(frames))


async def _lossy_call(frames: list[np.ndarray]) -> None:
    summaries: list[dict] = []
    link_stats: list[impair.ImpairStats] = []

    def on_call(call: Call) -> None:
        def opened() -> None:
            link_stats.append(impair.impair(call.conn, LOSS, DELAY_S, seed=1))

        asyncio.get_running_loop().create_task(_when_open(call.conn, opened))

    def on_connection(conn: Connection) -> None:
        link_stats.append(impair.impair(conn, LOSS, DELAY_S, seed=2))

    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        serve(
            RecvOptions(signaling.Endpoint("127.0.0.1", 0), once=True, status=False),
            [],
            ready=port.set_result,
            on_summary=summaries.append,
            on_call=on_call,
        )
    )
    encoder = FaceEncoder(fps=25.0)
    try:
        opts = SendOptions(
            signaling.Endpoint("127.0.0.1", await asyncio.wait_for(port, 10)), status=False, max_frames=FRAMES
        )
        t0 = time.monotonic()
        sent = await asyncio.wait_for(
            run_sender(ArraySource(frames, 25.0), encoder, opts, on_connection=on_connection), CALL_TIMEOUT_S
        )
        await asyncio.wait_for(server, 30)
        duration = time.monotonic() - t0
    finally:
        server.cancel()
        encoder.close()
    got = summaries[-1]
    lost = sum(s.lost for s in link_stats)
    total = sum(s.sent for s in link_stats)
    print(
        f"\nin-process lossy call: {total} datagrams, {lost} lost; {sent['frames_sent']} params sent, "
        f"{got['frames']} received, {got['frames_rendered']} rendered in {duration:.1f} s, "
        f"latency p50 {got['latency_ms_p50']}"
    )
    assert len(link_stats) == 2 and all(s.sent > 10 for s in link_stats) and 0.03 < lost / total < 0.2
    assert got["ended"] == "bye" and got["keyframes"] >= 1 and got["bad_packets"] == 0
    assert got["frames"] < sent["frames_sent"]  # the loss shows on the unordered channel...
    assert got["frames_rendered"] >= 0.3 * sent["frames_sent"]  # ...and the call goes on
    assert got["latency_ms_p50"] is not None and got["latency_ms_p50"] >= DELAY_S * 1000


async def _when_open(conn: Connection, then: Callable[[], None]) -> None:
    await conn.wait_open()  # ICE has its sockets (and a pair) by then
    then()
