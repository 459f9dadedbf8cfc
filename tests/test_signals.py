"""Signals mid-call: `fvcall recv` and `fvcall send` as real processes, the other side in this process.

SIGINT and SIGTERM end the call cleanly within STOP_LIMIT_S: a bye to the other side, the
recording finished, the stats written. kill -9 cannot be handled: the fragmented recording
must still play up to its last second.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import pytest
from conftest import clip_path, read_frames

from codec.encoder import FaceEncoder
from peer import cli, signaling
from peer.receiver import Call, RecvOptions, serve
from peer.sender import SendOptions, run_sender
from peer.sinks import FRAGMENT_S
from peer.sources import ArraySource

FPS = 25.0
STOP_LIMIT_S = 2.0
MID_CALL_FRAMES = 40  # rendered before the signal
CALL_TIMEOUT_S = 90.0
START_TIMEOUT_S = 60.0  # a process importing torch and MediaPipe on a loaded 2-core machine
IN_FLIGHT_S = 0.5  # captured but not yet rendered at the kill (latency on a loaded machine)


def fvcall(*args: str) -> list[str]:
    exe = Path(sys.executable).with_name("fvcall")
    return [str(exe), *args] if exe.exists() else [sys.executable, "-c", "from peer.cli import run; run()", *args]


def _wait_for_line(proc: subprocess.Popen, needle: str, timeout: float) -> list[str]:
    """Lines of proc's output up to the one containing needle (the rest stays readable)."""
    assert proc.stdout is not None
    lines: list[str] = []
    box: list[str] = []

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            box.append(line.rstrip("\n"))
            if needle in line:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    lines += box
    if not lines or needle not in lines[-1]:
        raise AssertionError(f"no {needle!r} in the output within {timeout:g} s: {lines}")
    return lines


async def _stopped(proc: subprocess.Popen, sig: int) -> float:
    t0 = time.monotonic()
    proc.send_signal(sig)
    while proc.poll() is None and time.monotonic() - t0 < 10:
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["INT", "TERM", "KILL"])
def test_receiver_signalled_mid_call(sig: int, tmp_path: Path) -> None:
    frames = read_frames("DPE/s.mp4", 50)
    out, stats = tmp_path / "call.mp4", tmp_path / "recv.json"
    recv = subprocess.Popen(
        fvcall("recv", "--listen", "127.0.0.1:0", "--no-window", "--out", str(out), "--stats", str(stats)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        port = int(_wait_for_line(recv, "listening on", START_TIMEOUT_S)[-1].rsplit(":", 1)[1])
        sent, took, at_signal_ms = asyncio.run(_call_then_signal(recv, port, frames, sig))
        rest = recv.stdout.read() if recv.stdout else ""
    finally:
        recv.kill()
    with av.open(str(out)) as c:
        start_ms = int(c.metadata["comment"].split("=")[1])  # CAPTURE_START_KEY
        times = [float(f.time) for f in c.decode(video=0)]
    recorded = len(times)
    # Seconds of the call (on the sender's capture clock) missing from the end of the recording.
    lost_s = at_signal_ms / 1000 - (start_ms / 1000 + times[-1])
    print(
        f"\nrecv {signal.Signals(sig).name}: exit {recv.returncode} after {took:.2f} s; sender ended "
        f"{sent['ended']!r} after {sent['frames']} frames; {recorded} frames in the recording, "
        f"the last {lost_s:.2f} s before the signal missing"
    )
    if sig == signal.SIGKILL:
        assert recv.returncode == -signal.SIGKILL and not stats.exists() and sent["ended"] == "dropped"
        # Up to the last complete fragment: at most FRAGMENT_S lost, plus what was still in flight.
        assert lost_s <= FRAGMENT_S + IN_FLIGHT_S and recorded > 0
        return
    assert took < STOP_LIMIT_S and recv.returncode == 128 + sig, rest
    assert sent["ended"] == "bye_received", sent  # the receiver hung up with a bye
    got = json.loads(stats.read_text())
    assert [c["ended"] for c in got["calls"]] == ["stopped"]
    # Every rendered frame is in the file, up to the signal (how many render depends on the machine's load),
    # but for re-renders of a capture time already written (a hold, a fade).
    assert got["frames_recorded"] == recorded > 0 and lost_s <= IN_FLIGHT_S
    assert got["frames_recorded"] + got["frames_not_recorded"] == got["frames_rendered"]
    assert "Traceback" not in rest and "Task was destroyed" not in rest, rest


async def _call_then_signal(recv: subprocess.Popen, port: int, frames: list, sig: int) -> tuple[dict, float, int]:
    """Returns the sender's summary, the receiver's exit time and the sender's capture clock at the signal."""
    encoder = FaceEncoder(fps=FPS)
    last_ms = [0]
    opts = SendOptions(signaling.Endpoint("127.0.0.1", port), status=False, reconnect=False, silence_s=1.5)
    task = asyncio.create_task(
        run_sender(ArraySource(frames, FPS, loop=True), encoder, opts, lambda ms, _crop: last_ms.__setitem__(0, ms))
    )
    try:
        while encoder.stats.frames < MID_CALL_FRAMES + 10:  # a few frames of slack for the renderer
            assert not task.done(), task
            await asyncio.sleep(0.02)
        at_signal = last_ms[0]
        took = await _stopped(recv, sig)
        return await asyncio.wait_for(task, CALL_TIMEOUT_S), took, at_signal
    finally:
        task.cancel()
        encoder.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_sender_signalled_mid_call(sig: int, tmp_path: Path) -> None:
    """The sender hangs up with a bye; a `recv --once` would exit after it (here: serve returns)."""
    asyncio.run(_serve_then_signal(sig, tmp_path))


async def _serve_then_signal(sig: int, tmp_path: Path) -> None:
    summaries: list[dict] = []
    calls: list[Call] = []
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    opts = RecvOptions(signaling.Endpoint("127.0.0.1", 0), once=True, status=False, out=tmp_path / "call.mp4")
    server = asyncio.create_task(
        serve(opts, [], ready=port.set_result, on_summary=summaries.append, on_call=calls.append)
    )
    stats = tmp_path / "send.json"
    send = subprocess.Popen(
        fvcall("send", "--camera", str(_clip()), "--loop", "--peer", f"127.0.0.1:{await port}", "--stats", str(stats)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (calls and calls[0].decoder.stats.rendered >= MID_CALL_FRAMES):
            assert time.monotonic() < deadline and send.poll() is None, "the call did not get going"
            await asyncio.sleep(0.1)
        took = await _stopped(send, sig)
        await asyncio.wait_for(server, 15)  # once=True: serve returns after a call that ended with a bye
        rest = send.stdout.read() if send.stdout else ""
    finally:
        send.kill()
        server.cancel()
    sent = json.loads(stats.read_text())
    print(
        f"\nsend {signal.Signals(sig).name}: exit {send.returncode} after {took:.2f} s; {sent['frames']} frames; "
        f"receiver: {summaries[0]['ended']}, {summaries[0]['frames_recorded']} frames recorded"
    )
    assert took < STOP_LIMIT_S and send.returncode == 128 + sig, rest
    assert sent["ended"] == "stopped" and [s["ended"] for s in summaries] == ["bye"]
    with av.open(str(tmp_path / "call.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == summaries[0]["frames_recorded"] > 0
    assert "Traceback" not in rest, rest


def _clip() -> Path:
    return clip_path("DPE/s.mp4")


def test_a_second_signal_or_a_slow_shutdown_exits_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process: the handler the event loop calls (no process is killed here; os._exit is recorded)."""
    exits: list[int] = []
    monkeypatch.setattr(cli.os, "_exit", exits.append)
    monkeypatch.setattr(cli, "STOP_DEADLINE_S", 0.2)

    async def run() -> cli.Stop:
        stop = cli.Stop()
        stop(signal.SIGINT)
        assert stop.event.is_set() and exits == []  # the first one asks for a clean hang-up
        stop(signal.SIGTERM)
        return stop

    stop = asyncio.run(run())
    assert exits == [128 + signal.SIGTERM]  # the second one: at once
    time.sleep(0.5)
    assert exits == [128 + signal.SIGTERM, 128 + signal.SIGINT]  # the deadline: a shutdown that hangs ends anyway
    assert stop.exit_code() == 128 + signal.SIGINT
