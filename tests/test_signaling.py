"""Signaling security: the shared-secret token, and hostile callers while a real call runs.

Transport: TCP signaling on 127.0.0.1 and, for the live test, a real aiortc call over
loopback with both peers in this process.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from conftest import read_frames

from codec import wire
from codec.encoder import FaceEncoder
from peer import signaling
from peer.connection import Connection
from peer.receiver import Call, RecvOptions, serve
from peer.sender import SendOptions, run_sender
from peer.sources import ArraySource

TOKEN = "correct horse battery staple"
_MEDIA = (
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef0123\r\n"
    "a=fingerprint:sha-256 00:11\r\n"
)
OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n" + _MEDIA
ANSWER = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\n" + _MEDIA
HANDSHAKE_S = 1.0  # the live test's handshake timeout (slowloris cut-off)
PACKAGE_DIRS = ("codec", "models", "peer")


async def _handshake(server_token: str | None, client) -> tuple[object, object]:
    """Run accept_offer on a listener and `client(endpoint)` against it; returns both outcomes."""
    result: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chan = signaling.Channel(reader, writer)
        try:
            offer = await signaling.accept_offer(chan, server_token)
            await signaling.send_answer(chan, ANSWER)
            result.set_result(offer)
        except signaling.SignalingError as exc:
            result.set_result(exc)
        await chan.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=signaling.MAX_LINE_BYTES)
    async with server:
        ep = signaling.Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])
        try:
            got = await client(ep)
        except signaling.SignalingError as exc:
            got = exc
        return got, await asyncio.wait_for(result, 5)


def _offer_with(token: str | None):
    async def client(ep: signaling.Endpoint) -> str:
        chan = await signaling.connect(ep, 5)
        try:
            return await signaling.offer(chan, OFFER, token)
        finally:
            await chan.close()

    return client


def test_good_token() -> None:
    client, server = asyncio.run(_handshake(TOKEN, _offer_with(TOKEN)))
    assert client == ANSWER and server == OFFER


def test_wrong_token() -> None:
    client, server = asyncio.run(_handshake(TOKEN, _offer_with("wrong")))
    assert str(client) == "refused by the receiver: authentication failed"
    assert str(server) == "a caller failed authentication"


def test_token_required_but_not_set() -> None:
    client, server = asyncio.run(_handshake(TOKEN, _offer_with(None)))
    assert str(client) == "the receiver needs a token: pass --token or set FVCALL_TOKEN"
    assert str(server) == "the other side closed the signaling connection"


def test_missing_token_raw_offer_is_refused() -> None:
    async def raw(ep: signaling.Endpoint) -> str:
        reader, writer = await asyncio.open_connection(ep.host, ep.port)
        await reader.readline()
        writer.write(json.dumps({"type": "offer", "sdp": OFFER}).encode() + b"\n")
        line = await reader.readline()
        writer.close()
        return json.loads(line)["reason"]

    client, server = asyncio.run(_handshake(TOKEN, raw))
    assert client == "expected 'auth', got 'offer'" and str(server) == "expected 'auth', got 'offer'"


def test_caller_with_token_refuses_an_open_receiver() -> None:
    client, server = asyncio.run(_handshake(None, _offer_with(TOKEN)))
    assert str(client) == "the receiver does not ask for a token: refusing to call it unauthenticated"
    assert str(server) == "the other side closed the signaling connection"


def test_swapped_offer_is_refused() -> None:
    """A relay that passes the caller's auth on but substitutes its own offer (and DTLS fingerprint)."""

    async def relay(ep: signaling.Endpoint) -> str:
        chan = await signaling.connect(ep, 5)
        hello = await chan.recv("hello")
        await chan.send({"type": "auth", "mac": signaling._mac(TOKEN, hello["nonce"]), "nonce": "ab" * 16})
        await chan.send(
            {
                "type": "offer",
                "sdp": OFFER + "a=fingerprint:evil\r\n",
                "mac": signaling._mac(TOKEN, hello["nonce"], "offer", OFFER),
            }
        )
        try:
            return str((await chan.recv("answer")).get("sdp"))
        finally:
            await chan.close()

    client, server = asyncio.run(_handshake(TOKEN, relay))
    assert str(client) == "refused by the receiver: authentication failed"
    assert str(server) == "a caller failed authentication"


def test_receiver_must_prove_the_token_too() -> None:
    """A listener that does not know the token cannot produce the answer MAC: the caller hangs up."""

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chan = signaling.Channel(reader, writer)
        await chan.send({"type": "hello", "version": 1, "nonce": "cd" * 16, "auth": True})
        await chan.recv("auth")
        await chan.recv("offer")
        await chan.send({"type": "answer", "sdp": ANSWER, "mac": "00" * 32})
        await chan.close()

    async def run() -> str:
        server = await asyncio.start_server(impostor, "127.0.0.1", 0)
        async with server:
            chan = await signaling.connect(signaling.Endpoint("127.0.0.1", server.sockets[0].getsockname()[1]), 5)
            try:
                with pytest.raises(signaling.SignalingError) as err:
                    await signaling.offer(chan, OFFER, TOKEN)
            finally:
                await chan.close()
            return str(err.value)

    assert asyncio.run(run()) == "the receiver failed authentication (wrong token, or a relay in between)"


def test_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(signaling.TOKEN_ENV, "from-env")
    assert signaling.token_from_env(None) == "from-env" and signaling.token_from_env("flag") == "flag"
    monkeypatch.delenv(signaling.TOKEN_ENV)
    assert signaling.token_from_env(None) is None


def test_no_pickle_anywhere_in_the_package() -> None:
    """Weights load from safetensors only: no torch.load, pickle or numpy pickles in the source."""
    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(
        r"torch\.load\(|\bimport pickle\b|\bfrom pickle\b|\bcPickle\b|allow_pickle\s*=\s*True|"
        r"\bdill\b|joblib\.load"
    )
    hits = [
        f"{p.relative_to(root)}:{i}"
        for d in PACKAGE_DIRS
        for p in (root / d).rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == []
    assert "safetensors" in (root / "models" / "fv2v" / "weights.py").read_text()


async def _hostile(port: int, payload: bytes | None) -> str:
    """Connect, read the hello, send payload (None: nothing, a slowloris), return the error reason."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        hello = json.loads(await reader.readline())
        assert hello["type"] == "hello" and hello["auth"] is True
        if payload is not None:
            writer.write(payload)
            await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
        return json.loads(line)["reason"] if line else "(closed)"
    finally:
        writer.close()


def test_hostile_signaling_and_oversize_messages_do_not_disturb_a_call() -> None:
    frames = read_frames("DPE/s.mp4", 50)
    asyncio.run(_live(frames))


async def _live(frames: list) -> None:
    calls: list[Call] = []
    conns: list[Connection] = []
    summaries: list[dict] = []
    port_f: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    opts = RecvOptions(
        signaling.Endpoint("127.0.0.1", 0), token=TOKEN, once=True, status=False, handshake_timeout_s=HANDSHAKE_S
    )
    server = asyncio.create_task(
        serve(opts, [], ready=port_f.set_result, on_summary=summaries.append, on_call=calls.append)
    )
    port = await asyncio.wait_for(port_f, 10)
    source = ArraySource(frames, 25.0, loop=True)
    encoder = FaceEncoder(fps=25.0)
    stop = asyncio.Event()

    class Source(ArraySource):
        def read(self):
            return None if stop.is_set() else source.read()

    sender = asyncio.create_task(
        run_sender(
            Source([], 25.0),
            encoder,
            SendOptions(signaling.Endpoint("127.0.0.1", port), token=TOKEN, status=False),
            on_connection=conns.append,
        )
    )
    try:
        deadline = time.monotonic() + 60
        while not (calls and calls[0].decoder.stats.rendered >= 5):
            assert time.monotonic() < deadline, "the call did not start"
            await asyncio.sleep(0.1)
        before = calls[0].decoder.stats.rendered
        hostile = {
            "garbage": b"\x00\xff\xfe garbage \x81\n",
            "huge line": b"x" * (signaling.MAX_LINE_BYTES + 10),
            "not json": b"hello there\n",
            "wrong type": b'{"type": 5}\n',
            "a list": b"[1, 2, 3]\n",
            "offer without auth": json.dumps({"type": "offer", "sdp": OFFER}).encode() + b"\n",
            "bad mac": b'{"type": "auth", "mac": "00"}\n',
            "slowloris": None,
        }
        t0 = time.monotonic()
        reasons = dict(zip(hostile, await asyncio.gather(*(_hostile(port, p) for p in hostile.values())), strict=True))
        slow_s = time.monotonic() - t0
        assert reasons == {
            "garbage": "malformed signaling message: not JSON",
            "huge line": "signaling message too large",
            "not json": "malformed signaling message: not JSON",
            "wrong type": "malformed signaling message: no type",
            "a list": "malformed signaling message: no type",
            "offer without auth": "expected 'auth', got 'offer'",
            "bad mac": "authentication failed",
            "slowloris": f"no offer within {HANDSHAKE_S:g} s",
        }
        assert slow_s < HANDSHAKE_S + 5
        # A well-behaved second caller is told the line is busy.
        chan = await signaling.connect(signaling.Endpoint("127.0.0.1", port), 5)
        with pytest.raises(signaling.SignalingError) as busy:
            await signaling.offer(chan, OFFER, TOKEN)
        await chan.close()
        assert str(busy.value) == "refused by the receiver: busy: a call is in progress"
        # Data-channel messages above the size limit are dropped and counted; so are text messages.
        conns[0].send(b"\x00" * (wire.MAX_MESSAGE_BYTES + 1), reliable=True)
        assert conns[0].ctrl is not None
        conns[0].ctrl.send("a text message")
        deadline = time.monotonic() + 20
        while calls[0].decoder.stats.oversize < 1 or calls[0].decoder.stats.rendered < before + 10:
            assert time.monotonic() < deadline, "the call stopped rendering"
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(sender, 30)
        await asyncio.wait_for(server, 15)
    finally:
        stop.set()
        sender.cancel()
        server.cancel()
        encoder.close()
    assert len(calls) == 1 and [s["ended"] for s in summaries] == ["bye"]
    assert summaries[0]["oversize_packets"] == 1 and summaries[0]["bad_packets"] == 2  # oversize + text
