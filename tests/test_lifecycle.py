"""The call lifecycle in one process: hanging up at every end of a source, one recording per call,
pre-authentication limits under idle sockets and a flood, malformed offers.

Transport: real aiortc data channels and TCP signaling on 127.0.0.1, both peers in this process
(what runs as a separate process, signals, is in test_signals.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import clip_path, read_frames

from codec import keyframe, wire
from codec.decoder import FaceDecoder
from codec.encoder import FaceEncoder
from codec.params import QuantSpec
from models.types import ModelMismatchError
from peer import sender as sender_mod
from peer import signaling
from peer.admission import Admission
from peer.receiver import Call, RecvOptions, recording_path, serve
from peer.sender import SendOptions, run_sender
from peer.sources import ArraySource, FileSource
from peer.stats import StatusLine, write_json

FPS = 25.0
TOKEN = "lifecycle token"
CALL_TIMEOUT_S = 90.0
IDLE_SOCKETS = 80  # more than the admission bound (64)
FLOOD = 200  # quick connect/close pairs
TRUNCATE_AT = 0.4  # of the clip's bytes: a file that fails to decode part-way


def _exception_log(loop: asyncio.AbstractEventLoop) -> list[str]:
    """What would reach asyncio's 'Unhandled exception' log (a traceback for the user)."""
    seen: list[str] = []
    loop.set_exception_handler(
        lambda _loop, ctx: seen.append(str(ctx.get("message")) + " " + repr(ctx.get("exception")))
    )
    return seen


async def _listen(opts: RecvOptions, stop: asyncio.Event, summaries: list[dict]) -> tuple[asyncio.Task, int]:
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(opts, [], ready=port.set_result, on_summary=summaries.append, stop=stop))
    return task, await asyncio.wait_for(port, 10)


class OtherModelRenderer:
    """A renderer whose keyframes all come coded with a model this side does not have."""

    def set_keyframe(self, image: np.ndarray, aux: bytes) -> None:
        raise ModelMismatchError("keyframe rig: coded with face-shape model 01234567, this receiver has 89abcdef")

    def render(self, params: object) -> np.ndarray:
        raise AssertionError("nothing renders without a keyframe")


def test_a_keyframe_of_another_model_ends_the_call_with_a_bye_and_one_line() -> None:
    size = 64

    async def run() -> tuple[Call, list[bytes]]:
        call = Call(RecvOptions(signaling.Endpoint("127.0.0.1", 0), status=False), [], StatusLine("recv", False))
        call.decoder = FaceDecoder(renderer_factory=lambda h: OtherModelRenderer())
        sent: list[bytes] = []
        call.conn.send = lambda data, reliable: sent.append(data) or True  # type: ignore[method-assign]
        image = np.zeros((size, size, 3), np.uint8)
        kf = wire.pack_keyframe(wire.Keyframe(keyframe.encode(image), b"rig"))
        msgs = [wire.encode(wire.Header("mesh", size, FPS, 2, QuantSpec().to_list()))]
        msgs += [wire.encode(c) for c in wire.split_keyframe(0, kf)]
        render = asyncio.create_task(call._render_loop())
        try:
            for m in msgs:
                call._after(call.decoder.receive(m))
            await asyncio.wait_for(call._done.wait(), 10)
            await asyncio.wait_for(render, 10)  # the render loop ends with the call
        finally:
            render.cancel()
            await call.conn.close()
        return call, sent

    call, sent = asyncio.run(run())
    assert call.error == (
        "cannot render this call: keyframe rig: coded with face-shape model 01234567, this receiver has 89abcdef"
    )
    codes = [wire.decode(d).code for d in sent]
    assert codes == [wire.Control.KEYFRAME_ACK, wire.Control.BYE]  # and never a keyframe request
    assert call.decoder.poll() == []


def test_admission_cuts_the_oldest_unproven_never_the_proven() -> None:
    logged: list[str] = []
    cut: list[int] = []
    gate = Admission(logged.append, max_unproven=3, max_per_address=2)
    a = gate.admit("10.0.0.1", lambda: cut.append(1))
    gate.proven(a)  # a caller that proved the token is out of reach of the limits
    gate.admit("10.0.0.2", lambda: cut.append(2))
    gate.admit("10.0.0.2", lambda: cut.append(3))
    gate.admit("10.0.0.2", lambda: cut.append(4))  # third from one address: its oldest goes
    assert cut == [2] and gate.unproven() == 2
    gate.admit("10.0.0.3", lambda: cut.append(5))
    gate.admit("10.0.0.4", lambda: cut.append(6))  # over the total: the oldest overall goes
    assert cut == [2, 3] and gate.unproven() == 3 and gate.cut_count == 2
    assert logged[0] == "refused a caller from 10.0.0.2: cut: more than 2 unauthenticated connections from it"
    assert len(logged) == 1  # the second cut was from the same address within LOG_INTERVAL_S: counted, not printed


def test_refusal_log_is_rate_limited_per_address() -> None:
    logged: list[str] = []
    gate = Admission(logged.append)
    for _ in range(50):
        gate.refused("10.0.0.9", "authentication failed")
    gate.refused("10.0.0.8", "authentication failed")
    assert logged == [
        "refused a caller from 10.0.0.9: authentication failed",
        "refused a caller from 10.0.0.8: authentication failed",
    ]


def test_malformed_offer_is_refused_at_once() -> None:
    async def run() -> tuple[str, float, list[dict]]:
        stop = asyncio.Event()
        summaries: list[dict] = []
        server, port = await _listen(RecvOptions(signaling.Endpoint("127.0.0.1", 0), status=False), stop, summaries)
        t0 = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        writer.write(b'{"type":"offer","sdp":"v=0"}\n')
        reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
        writer.close()
        took = time.monotonic() - t0
        stop.set()
        await asyncio.wait_for(server, 10)
        return reply["reason"], took, summaries

    reason, took, summaries = asyncio.run(run())
    assert reason == "malformed signaling message: the SDP has no data channel"
    assert took < 1.0 and summaries == []  # no call was set up for it


def test_idle_sockets_and_a_flood_never_lock_out_a_caller_with_the_token(tmp_path: Path) -> None:
    frames = read_frames("DPE/s.mp4", 20)
    asyncio.run(_siege(frames, tmp_path))


async def _siege(frames: list[np.ndarray], tmp_path: Path) -> None:
    errors = _exception_log(asyncio.get_running_loop())
    stop = asyncio.Event()
    summaries: list[dict] = []
    opts = RecvOptions(signaling.Endpoint("127.0.0.1", 0), token=TOKEN, status=False, first_message_timeout_s=2.0)
    server, port = await _listen(opts, stop, summaries)
    idle: list[asyncio.StreamWriter] = []

    async def hold_idle() -> None:  # the attacker's pool, renewed as the receiver cuts it
        while not stop.is_set():
            while len(idle) < IDLE_SOCKETS:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                idle.append(w)
            await asyncio.sleep(0.05)
            idle[:] = [w for w in idle if not w.transport.is_closing()]

    async def one_flood_connection() -> None:
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
        except OSError:
            pass

    attacker = asyncio.create_task(hold_idle())
    encoder = FaceEncoder(fps=FPS)
    try:
        await asyncio.sleep(0.5)
        await asyncio.gather(*(one_flood_connection() for _ in range(FLOOD)))
        t0 = time.monotonic()
        sent = await asyncio.wait_for(
            run_sender(
                ArraySource(frames, FPS),
                encoder,
                SendOptions(signaling.Endpoint("127.0.0.1", port), token=TOKEN, status=False, reconnect=False),
            ),
            CALL_TIMEOUT_S,
        )
        took = time.monotonic() - t0
        for _ in range(50):
            if summaries:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        attacker.cancel()
        for w in idle:
            w.close()
        encoder.close()
    await asyncio.wait_for(server, 15)
    print(
        f"\ncaller with the token got through {IDLE_SOCKETS} idle sockets and {FLOOD} flood connections: "
        f"call of {sent['frames']} frames in {took:.1f} s"
    )
    assert sent["frames"] == len(frames) and sent["ended"] == "bye_sent"
    assert [s["ended"] for s in summaries] == ["bye"]
    assert errors == []


def test_every_end_of_a_source_hangs_up_and_every_call_is_recorded(tmp_path: Path) -> None:
    clip = clip_path("DPE/s.mp4")
    broken = tmp_path / "truncated.mp4"
    data = clip.read_bytes()
    broken.write_bytes(data[: int(len(data) * TRUNCATE_AT)])
    frames512 = [np.asarray(f) for f in read_frames("DPE/s.mp4", 10)]
    asyncio.run(_calls(broken, frames512, tmp_path))


async def _calls(broken: Path, frames: list[np.ndarray], tmp_path: Path) -> None:
    stop = asyncio.Event()
    summaries: list[dict] = []
    out, stats = tmp_path / "call.mp4", tmp_path / "recv.json"
    server, port = await _listen(
        RecvOptions(signaling.Endpoint("127.0.0.1", 0), status=False, out=out, stats_path=stats), stop, summaries
    )
    ep = signaling.Endpoint("127.0.0.1", port)
    sent: list[dict] = []
    try:
        for size, source, max_frames in [
            (256, FileSource(broken), None),  # fails to decode part-way: the end of the file
            (512, ArraySource(frames, FPS), None),  # another size, recorded as it was
            (256, ArraySource(frames, FPS), 0),  # --max-frames 0: connect, hang up
        ]:
            encoder = FaceEncoder(size=size, fps=FPS)
            try:
                opts = SendOptions(ep, status=False, reconnect=False, max_frames=max_frames)
                sent.append(await asyncio.wait_for(run_sender(source, encoder, opts), CALL_TIMEOUT_S))
            finally:
                encoder.close()
                source.close()
            for _ in range(100):
                if len(summaries) == len(sent):
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(server, 15)
    assert [s["ended"] for s in sent] == ["bye_sent"] * 3
    assert 0 < sent[0]["frames"] < 228  # stopped where the file broke
    assert [s["ended"] for s in summaries] == ["bye"] * 3
    saved = json.loads(stats.read_text())
    assert [c["ended"] for c in saved["calls"]] == ["bye"] * 3  # --stats keeps every call
    for n, expect in ((1, 256), (2, 512)):
        path = recording_path(out, n)
        assert summaries[n - 1]["recording"] == str(path)
        with av.open(str(path)) as c:
            got = [f for f in c.decode(video=0)]
        assert len(got) == summaries[n - 1]["frames_recorded"] > 0
        assert (got[0].width, got[0].height) == (expect, expect)
    print(
        f"\nrecorded {len(summaries)} calls: "
        + ", ".join(f"{Path(s.get('recording', '-')).name} {s.get('frames_recorded', 0)} frames" for s in summaries)
    )


def test_recording_names_and_atomic_stats(tmp_path: Path) -> None:
    out = Path("/x/rec.mp4")
    assert [recording_path(out, n).name for n in (1, 2, 10)] == ["rec.mp4", "rec-2.mp4", "rec-10.mp4"]
    target = tmp_path / "s.json"
    write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1} and not (tmp_path / "s.json.tmp").exists()


@pytest.mark.parametrize("busy_s", [1.5])
def test_a_busy_receiver_is_called_again_with_back_off(busy_s: float) -> None:
    async def run() -> tuple[float, list[str], int]:
        said: list[str] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            chan = signaling.Channel(reader, writer)
            await chan.send({"type": "hello", "version": signaling.PROTOCOL_VERSION, "nonce": "n" * 32, "auth": False})
            await chan.send({"type": "error", "reason": "busy: a call is in progress"})
            await chan.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        status = StatusLine("send", enabled=False)
        status.message = said.append  # type: ignore[method-assign]
        t0 = time.monotonic()
        with pytest.raises(signaling.SignalingError, match="busy"):
            await sender_mod._call(
                SendOptions(signaling.Endpoint("127.0.0.1", port), status=False), lambda _: None, status, busy_s
            )
        server.close()
        return time.monotonic() - t0, said, port

    took, said, port = asyncio.run(run())
    busy = f"refused by the receiver: busy: a call is in progress: calling 127.0.0.1:{port} again in"
    assert took >= busy_s * 0.9
    assert said == [f"{busy} 0.5 s (retrying for 1 s)", f"{busy} 1 s (retrying for 1 s)"]
