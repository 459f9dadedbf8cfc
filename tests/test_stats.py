"""The status line: rates over the last interval, never negative when a new call restarts the counters."""

from __future__ import annotations

import pytest

from codec.rate import RateMeter
from peer import stats
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
