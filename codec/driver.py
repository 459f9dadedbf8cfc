"""The call without a network: encoder -> link -> decoder in memory, one tick per frame period.

The one in-memory driver of the codec: the bandwidth and loss benchmarks and the tests run
calls through it. It drives the Encoder/Decoder contract (codec.api) the way the peer does:
each tick the encoder's packets go into the link, what the link delivers goes to the decoder,
the decoder is polled, its replies go straight back to the encoder, and the decoder renders
when it says something changed (or at the ticks the caller asks for).

The link is pluggable (Link). LossyLink does loss (random, bursts), reordering, duplication
and delay from a seed, so a test or a benchmark sees exactly the same pattern every run:

    link = LossyLink(Impairment(loss=0.1, seed=3))
    for frame in driver.run(frames, encoder, decoder, fps, link): ...

LossyLink() with no impairment delivers everything at its tick, in order. Reliable messages
(header, keyframe, control) are delivered in order at their tick, as SCTP would, unless their
index is listed in Impairment.lose_reliable (a keyframe that never arrives, for tests of
keyframe requests). Each unreliable packet draws the same number of random values whatever
the settings, so two impairments with the same seed lose, delay and duplicate the same
packets where they overlap.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from codec.api import Decoder, Encoder, Packet


class Link(Protocol):
    """Sender -> receiver channel of an in-memory call, in ticks (frame periods)."""

    def send(self, data: bytes, reliable: bool, tick: int) -> None:
        """Hand one message to the link at this tick."""

    def due(self, tick: int) -> list[bytes]:
        """Messages arriving at this tick (or earlier and not yet taken), in arrival order."""


@dataclass(frozen=True)
class Impairment:
    """What the link does to parameter packets (the unordered, no-retransmit channel)."""

    loss: float = 0.0
    """Probability that a packet is lost, independently of the others."""
    burst_every: int = 0
    """Start a loss burst every this many ticks (frames); 0: no bursts."""
    burst_len: int = 0
    """Ticks (frames) each burst lasts: every packet sent during one is lost."""
    reorder: float = 0.0
    """Probability that a packet is held back by reorder_ticks, so later ones overtake it."""
    reorder_ticks: int = 2
    """How far a reordered packet is held back, in ticks."""
    duplicate: float = 0.0
    """Probability that a packet arrives twice (the copy one tick later)."""
    delay_ticks: int = 0
    """Fixed extra delay of every packet, in ticks."""
    jitter_ticks: int = 0
    """Uniform random extra delay, 0..jitter_ticks ticks."""
    lose_reliable: frozenset[int] = frozenset()
    """1-based indices of reliable messages that are lost (e.g. the first keyframe's chunks)."""
    seed: int = 0
    """Seed of the pattern."""


@dataclass
class LinkStats:
    """What the link did."""

    sent: int = 0
    """Unreliable packets handed to the link."""
    lost: int = 0
    """Unreliable packets dropped (random or burst)."""
    reordered: int = 0
    """Unreliable packets held back."""
    duplicated: int = 0
    """Unreliable packets delivered twice."""
    reliable_lost: int = 0
    """Reliable messages dropped (Impairment.lose_reliable)."""


class TickClock:
    """A fake clock for the decoder: seconds of the current tick (set by run())."""

    t: float
    """Seconds."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class LossyLink:
    """A Link with a deterministic impairment; one tick per frame."""

    def __init__(self, impairment: Impairment | None = None) -> None:
        self.impairment = impairment or Impairment()
        self.stats = LinkStats()
        self._rng = np.random.default_rng(self.impairment.seed)
        self._queue: list[tuple[int, int, bytes]] = []  # (due tick, send order, data)
        self._order = 0
        self._reliable = 0

    def _push(self, tick: int, data: bytes) -> None:
        heapq.heappush(self._queue, (tick, self._order, data))
        self._order += 1

    def send(self, data: bytes, reliable: bool, tick: int) -> None:
        imp = self.impairment
        if reliable:
            self._reliable += 1
            if self._reliable in imp.lose_reliable:
                self.stats.reliable_lost += 1
            else:
                self._push(tick, data)
            return
        self.stats.sent += 1
        u_loss, u_reorder, u_dup, u_jitter = self._rng.random(4)  # always four draws: patterns line up
        in_burst = imp.burst_every > 0 and tick % imp.burst_every >= imp.burst_every - imp.burst_len
        if in_burst or u_loss < imp.loss:
            self.stats.lost += 1
            return
        due = tick + imp.delay_ticks + int(u_jitter * (imp.jitter_ticks + 1))
        if u_reorder < imp.reorder:
            self.stats.reordered += 1
            due += imp.reorder_ticks
        self._push(due, data)
        if u_dup < imp.duplicate:
            self.stats.duplicated += 1
            self._push(due + 1, data)

    def due(self, tick: int) -> list[bytes]:
        out = []
        while self._queue and self._queue[0][0] <= tick:
            out.append(heapq.heappop(self._queue)[2])
        return out


@dataclass
class DriverFrame:
    """One tick of an in-memory call: the frame sent and what the receiver showed after it."""

    index: int
    """Frame number in the input (= tick)."""
    capture_ms: int
    """Capture time given to the encoder."""
    output: np.ndarray | None
    """What the receiver shows after this tick (the last frame shown if nothing new)."""
    shown_capture_ms: int | None
    """Capture time of the parameters the receiver holds (None before any): which frame it shows."""
    fresh: bool
    """The receiver rendered something new at this tick."""
    sent_bytes: int = 0
    """Bytes the encoder emitted for this frame."""
    replies: list[bytes] = field(default_factory=list)
    """Messages the receiver sent back at this tick (keyframe requests, acks)."""
    packets: list[Packet] = field(default_factory=list)
    """What the encoder emitted for this frame (empty on ticks it was not given a frame)."""


def run(
    frames: Iterable[np.ndarray],
    encoder: Encoder,
    decoder: Decoder,
    fps: float,
    link: Link | None = None,
    clock: TickClock | None = None,
    every: int = 1,
    render_at: Callable[[int], bool] | None = None,
    poll: bool = True,
    drain: int = 0,
) -> Iterator[DriverFrame]:
    """Encode each frame, pass its packets through the link (default: lossless), deliver what is
    due, render.

    clock: set to each tick's time; give the same one to the decoder (FaceDecoder(clock=clock)) so
    its rate limits and fades run in frame time. every: the encoder gets every k-th frame only (a
    lower parameter rate; the receiver holds in between). render_at: render exactly at the ticks
    it accepts, whether or not anything changed (scoring what the receiver shows at frame i);
    None renders when the decoder says something changed, like the peer. poll: ask the decoder
    each tick for control packets of its own (keyframe requests), like the peer. drain: ticks after
    the last frame (no input; the encoder flushes the frames waiting for a message partner at the
    first), so frames still waiting to be shown are: a message of k frames shows its last k - 1
    frames one tick apart after it arrives."""
    n_frames = [0]

    def emit(i: int, frame: np.ndarray | None, ms: int) -> list[Packet]:
        if frame is None:  # a drain tick
            return encoder.flush() if i == n_frames[0] else []
        n_frames[0] = i + 1
        return encoder.encode(frame, ms) if i % every == 0 else []

    ticks = itertools.chain(frames, itertools.repeat(None, drain))
    return _drive(ticks, emit, encoder.receive, decoder, fps, link, clock, render_at, poll)


def replay(
    sent: Sequence[list[Packet]],
    decoder: Decoder,
    fps: float,
    link: Link | None = None,
    clock: TickClock | None = None,
) -> Iterator[DriverFrame]:
    """The packets of an earlier run (DriverFrame.packets, tick by tick) into another decoder,
    through another link; the receiver's replies go nowhere. For impairments of the unordered
    channel, which do not change what the encoder sends."""

    def emit(i: int, frame: object, ms: int) -> list[Packet]:
        return sent[i]

    return _drive([None] * len(sent), emit, lambda data: [], decoder, fps, link, clock, None, True)


def _drive(
    frames: Iterable,
    emit: Callable[[int, object, int], list[Packet]],
    upstream: Callable[[bytes], list[Packet]],
    decoder: Decoder,
    fps: float,
    link: Link | None,
    clock: TickClock | None,
    render_at: Callable[[int], bool] | None,
    poll: bool,
) -> Iterator[DriverFrame]:
    link = link if link is not None else LossyLink()
    shown: np.ndarray | None = None
    for i, frame in enumerate(frames):
        if clock is not None:
            clock.t = i / fps
        ms = int(round(i * 1000 / fps))
        packets = emit(i, frame, ms)
        for p in packets:
            link.send(p.data, p.reliable, i)
        replies: list[bytes] = []
        for data in link.due(i):
            replies += [r.data for r in decoder.receive(data)]
        if poll:
            replies += [r.data for r in decoder.poll()]
        for r in replies:
            upstream(r)
        if render_at is None:
            pending = decoder.pending()
            out = decoder.render() if pending or decoder.fading() else None  # render only what changes
            fresh = pending and out is not None
        else:
            out = decoder.render() if render_at(i) else None
            fresh = out is not None
        shown = out if out is not None else shown
        yield DriverFrame(
            i, ms, shown, decoder.latest_capture_ms, fresh, sum(len(p.data) for p in packets), replies, packets
        )
