"""The status line: rates over the last interval, never negative when a new call restarts the counters."""

from __future__ import annotations

import asyncio

import pytest

from codec.rate import RateMeter
from codec.stats import EncoderStats
from peer import receiver, stats
from peer.signaling import Endpoint
from peer.wirecount import WireCount


def test_rates_restart_with_a_new_call(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(stats.time, "monotonic", lambda: now[0])
    line = stats.StatusLine("recv")
    first = RateMeter()
    for _ in range(25):
        first.add(30)
    now[0] = 1.0
    wire = WireCount(tx_bytes=3000 - 28 * 10, tx_packets=10)
    line.update(25, first, wire)
    second = RateMeter()  # the call dropped and a new one began
    second.add(30)
    now[0] = 2.0
    line.update(1, second, WireCount(tx_bytes=100, tx_packets=1))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[recv]  25.0 fps | payload   6.00 kbit/s | wire up  24.00 down   0.00 kbit/s")
    assert out[1].startswith("[recv]   1.0 fps | payload   0.24 kbit/s")
    assert "-" not in out[1]


def test_a_stale_latency_is_not_shown_as_current(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(receiver.time, "monotonic", lambda: now[0])

    async def run() -> list[str]:
        call = receiver.Call(
            receiver.RecvOptions(Endpoint("127.0.0.1", 0), status=False), [], stats.StatusLine("recv", False)
        )
        try:
            call.decoder.stats.latency_ms.extend([20.0, 22.0, 24.0])
            fresh = call._extra()
            now[0] += 3.0  # nothing new for 3 s
            stale = call._extra()
            return [fresh, stale]
        finally:
            await call.conn.close()

    fresh, stale = asyncio.run(run())
    assert fresh.startswith(" | latency   22 ms")
    assert stale.startswith(" | latency -- (nothing for 3 s)")


def test_reference_pictures_and_headers_are_not_counted_as_parameters() -> None:
    s = EncoderStats(params_sent=10, references=1, reference_bytes=500, header_bytes=300)
    s.rate.add(300)  # the session header
    s.rate.add(2000, keyframe=True)
    s.rate.add(500)  # the reference
    s.rate.add(100)  # ten frames of parameters
    out = stats.sender_summary(s, 1.0, 10)
    assert out["payload_bytes_per_frame"] == 10.0
    assert (out["references"], out["reference_bytes"]) == (1, 500)
