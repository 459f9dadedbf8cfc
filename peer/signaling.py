"""Signaling over TCP with explicit roles: the receiver listens, the sender connects (and retries).

One JSON object per line, each at most MAX_LINE_BYTES. The listener speaks first:

    recv -> send  {"type": "hello", "version": 1, "nonce": N, "auth": bool}
    send -> recv  {"type": "auth", "mac": MAC("fvcall" + N), "nonce": C}                 (when auth)
    send -> recv  {"type": "offer", "sdp": OFFER, "mac": MAC("offer" + N + OFFER)}      (mac when auth)
    recv -> send  {"type": "answer", "sdp": ANSWER, "mac": MAC("answer" + C + ANSWER)}  (mac when auth)
                  or {"type": "error", "reason": ...}

MAC is HMAC-SHA256 keyed with the shared token; N and C are fresh random nonces. The token
never travels and every MAC is compared in constant time. Both sides prove the token, and
the MACs bind the SDPs (which carry the DTLS certificate fingerprints) to the session, so a
relay in the middle can neither replay an old handshake nor swap an offer or answer. A
caller with a token refuses a receiver that does not ask for one. A listener that is busy
with a call, or gets a bad line, answers with an error and closes that connection only.

The caller prepares its offer before it connects, so its first message follows the hello
at once: the listener gives it FIRST_MESSAGE_TIMEOUT_S, and an offer that cannot set up
a data channel (no ICE credentials, no DTLS fingerprint) is refused before any work.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 64 * 1024  # an SDP with candidates is ~2-5 KB
HANDSHAKE_TIMEOUT_S = 10.0
FIRST_MESSAGE_TIMEOUT_S = 3.0  # hello -> first message; a caller's offer is ready before it connects
SDP_REQUIRED = (
    ("m=application ", "no data channel"),
    ("a=ice-ufrag:", "no ICE credentials"),
    ("a=ice-pwd:", "no ICE credentials"),
    ("a=fingerprint:", "no DTLS fingerprint"),
)
BUSY_PREFIX = "busy"  # refusals that say this are worth calling again
CONNECT_RETRY_S = 0.5
CONNECT_ATTEMPT_S = 3.0  # one TCP connect attempt (a host that drops SYNs would take the kernel ~2 min)
DEFAULT_PORT = 8765
TOKEN_ENV = "FVCALL_TOKEN"


class SignalingError(RuntimeError):
    """The other side is not a well-behaved fvcall peer; the message is one line."""

    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry
        """Calling again later may succeed (a busy receiver, a connection it cut)."""


@dataclass(frozen=True)
class Endpoint:
    """Where signaling listens or connects."""

    host: str
    """Host name or address."""
    port: int
    """TCP port."""

    @classmethod
    def parse(cls, text: str, default_host: str = "0.0.0.0", any_port: bool = False) -> Endpoint:
        """HOST:PORT, HOST (the default port) or :PORT; any_port admits port 0 (listen on a free one)."""
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, str(DEFAULT_PORT)
        host = host.strip("[]") or default_host
        if not port.isdigit() or not (0 if any_port else 1) <= int(port) < 65536:
            raise ValueError(f"bad port in {text!r}: expected HOST:PORT")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def token_from_env(token: str | None) -> str | None:
    return token if token else (os.environ.get(TOKEN_ENV) or None)


def _mac(token: str, nonce: str, label: str = "fvcall", sdp: str = "") -> str:
    return hmac.new(token.encode(), (label + nonce + sdp).encode(), hashlib.sha256).hexdigest()


def _valid_mac(mac: object, expected: str) -> bool:
    return isinstance(mac, str) and hmac.compare_digest(mac.encode(), expected.encode())


def _nonce(value: object) -> str:
    if not isinstance(value, str) or not 16 <= len(value) <= 128:
        raise SignalingError("malformed signaling message: bad nonce")
    return value


class Channel:
    """Line-delimited JSON over one TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.token: str | None = None
        """Shared secret of an authenticated handshake on this connection."""
        self.peer_nonce = ""
        """The caller's nonce: the listener's answer MAC covers it."""

    @property
    def peer_host(self) -> str:
        info = self.writer.get_extra_info("peername")
        return str(info[0]) if info else ""

    async def send(self, msg: dict) -> None:
        data = json.dumps(msg, separators=(",", ":")).encode() + b"\n"
        if len(data) > MAX_LINE_BYTES:
            raise SignalingError(f"signaling message too large ({len(data)} bytes)")
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (RuntimeError, OSError) as exc:  # uvloop: "unable to perform operation on <TCPTransport closed>"
            raise ConnectionError(f"signaling connection lost: {exc}") from None

    async def recv(self, expect: str, timeout: float = HANDSHAKE_TIMEOUT_S) -> dict:
        try:
            line = await asyncio.wait_for(self.reader.readuntil(b"\n"), timeout)
        except asyncio.LimitOverrunError:
            raise SignalingError("signaling message too large") from None
        except asyncio.IncompleteReadError:
            raise SignalingError("the other side closed the signaling connection", retry=True) from None
        except TimeoutError:
            raise SignalingError(f"no {expect!r} message within {timeout:g} s", retry=expect == "hello") from None
        except (ConnectionError, OSError) as exc:
            raise SignalingError(f"signaling connection lost: {exc}", retry=True) from None
        try:
            msg = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            raise SignalingError("malformed signaling message: not JSON") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise SignalingError("malformed signaling message: no type")
        if msg["type"] == "error":
            reason = str(msg.get("reason", ""))[:200]
            raise SignalingError(f"refused by the receiver: {reason}", retry=reason.startswith(BUSY_PREFIX))
        if msg["type"] != expect:
            raise SignalingError(f"expected {expect!r}, got {msg['type'][:40]!r}")
        return msg

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def _sdp(msg: dict) -> str:
    sdp = msg.get("sdp")
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise SignalingError("malformed signaling message: bad SDP")
    for needle, what in SDP_REQUIRED:
        if needle not in sdp:
            raise SignalingError(f"malformed signaling message: the SDP has {what}")
    return sdp


def _noop() -> None:
    pass


async def accept_offer(
    chan: Channel,
    token: str | None,
    first_timeout: float = FIRST_MESSAGE_TIMEOUT_S,
    on_proof: Callable[[], None] = _noop,
) -> str:
    """Listener side of the handshake up to the offer; returns the offer SDP.

    on_proof runs as soon as the caller has proven the token (with no token: sent a valid offer),
    so limits meant for unproven clients stop applying to it. Any failure is answered with an
    error message (best effort) before SignalingError is raised."""
    nonce = secrets.token_hex(16)
    await chan.send({"type": "hello", "version": PROTOCOL_VERSION, "nonce": nonce, "auth": token is not None})
    try:
        if token is None:
            sdp = _sdp(await chan.recv("offer", first_timeout))
            on_proof()
            return sdp
        auth = await chan.recv("auth", first_timeout)
        if _valid_mac(auth.get("mac"), _mac(token, nonce)):
            chan.token, chan.peer_nonce = token, _nonce(auth.get("nonce"))
            on_proof()
            offer_msg = await chan.recv("offer")
            sdp = _sdp(offer_msg)
            if _valid_mac(offer_msg.get("mac"), _mac(token, nonce, "offer", sdp)):
                return sdp
    except SignalingError as exc:
        await _tell(chan, str(exc))
        raise
    except ConnectionError as exc:
        raise SignalingError(str(exc)) from None
    await _tell(chan, "authentication failed")
    raise SignalingError("a caller failed authentication")


async def send_answer(chan: Channel, sdp: str) -> None:
    """Listener side: the answer, with its MAC when the handshake was authenticated."""
    msg = {"type": "answer", "sdp": sdp}
    if chan.token is not None:
        msg["mac"] = _mac(chan.token, chan.peer_nonce, "answer", sdp)
    await chan.send(msg)


async def _tell(chan: Channel, reason: str) -> None:
    try:
        await chan.send({"type": "error", "reason": reason})
    except (ConnectionError, SignalingError):
        pass


async def connect(endpoint: Endpoint, timeout: float, on_retry: Callable[[str], None] = lambda _: None) -> Channel:
    """Connect to a listener, retrying until it is up or timeout seconds pass.

    on_retry hears, once, why the first attempt failed and for how long it keeps trying."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    told = False
    while True:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(endpoint.host, endpoint.port, limit=MAX_LINE_BYTES),
                max(0.1, min(CONNECT_ATTEMPT_S, deadline - loop.time())),
            )
            return Channel(reader, writer)
        except (OSError, TimeoutError) as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            if loop.time() >= deadline:
                raise SignalingError(f"cannot reach a receiver at {endpoint}: {why}") from None
            if not told:
                on_retry(f"receiver at {endpoint} not answering ({why}), retrying for {deadline - loop.time():.0f} s")
                told = True
            await asyncio.sleep(CONNECT_RETRY_S)


async def offer(chan: Channel, sdp: str, token: str | None) -> str:
    """Caller side: hello, auth, offer; returns the answer SDP."""
    hello = await chan.recv("hello")
    if hello.get("version") != PROTOCOL_VERSION:
        raise SignalingError(f"receiver speaks signaling version {hello.get('version')!r}, this is {PROTOCOL_VERSION}")
    if not hello.get("auth"):
        if token is not None:
            raise SignalingError("the receiver does not ask for a token: refusing to call it unauthenticated")
        await chan.send({"type": "offer", "sdp": sdp})
        return _sdp(await chan.recv("answer", timeout=HANDSHAKE_TIMEOUT_S * 3))
    if token is None:
        raise SignalingError(f"the receiver needs a token: pass --token or set {TOKEN_ENV}")
    nonce, mine = _nonce(hello.get("nonce")), secrets.token_hex(16)
    await chan.send({"type": "auth", "mac": _mac(token, nonce), "nonce": mine})
    await chan.send({"type": "offer", "sdp": sdp, "mac": _mac(token, nonce, "offer", sdp)})
    answer = await chan.recv("answer", timeout=HANDSHAKE_TIMEOUT_S * 3)
    answer_sdp = _sdp(answer)
    if not _valid_mac(answer.get("mac"), _mac(token, mine, "answer", answer_sdp)):
        raise SignalingError("the receiver failed authentication (wrong token, or a relay in between)")
    return answer_sdp
