"""The sender's reference bank: which reference pictures the receiver holds, and which one each
region of a frame is drawn from.

One keyframe cannot show what it does not contain: teeth and the inside of an open mouth, closed
eyes. The sender holds the receiver's renderer (codec.refresh.ErrorMonitor's), so every
`errors_every`-th frame it measures a region (eyes, mouth, in turn) as the receiver will draw it
against the camera crop (models.types.ReferenceRenderer.region_errors). The first `reference_s`
after a keyframe set what the keyframe achieves in each region (near its best); when a region then
stays `threshold_db` worse for `hold_s` (a blink is a few frames), the current crop becomes a
reference picture for that region, in a free slot of the bank or in the one left unused longest,
and only once it has gone unused for `quiet_s` (so no packet still in flight names its old
picture). The threshold is the rate knob: lower, more references, more bytes, more faithful regions.

Both sides hold the same bounded bank, and keep it through keyframes: a reference is placed by its
own landmarks, so it serves the next keyframe's frames as well (a hand-held call refreshes its
keyframe every few seconds, and an emptied bank would be sent again after each). Only a receiver
that lost its bank (it asked for a keyframe holding none) has it emptied. References travel on
the reliable channel and the receiver acknowledges each; PARAMS name only acknowledged ones, so the
sender's renderer draws exactly what the receiver draws, and a reference that is late or never
arrives costs nothing but its use. On each measured frame and region, the sender draws the region
from every acknowledged source that covers it (the keyframe is slot 0), compares each with the
camera crop and names the one with the smallest error, with hysteresis against flicker; the frames
in between keep that choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from codec.metrics import psnr_of_mse

THRESHOLD_DB = 3.0  # a region this much worse than after the keyframe ...
HOLD_S = 0.1  # ... for this long (3 frames at 25 fps: a blink) calls for a reference
REFERENCE_S = 1.0  # what the keyframe achieves in a region: its frames in this long after it ...
LEVEL_PERCENTILE = 90  # ... near their best (a caller who talks in that second must not lower the bar)
SLOTS = 8  # references held (each ~0.3-1 KB on the wire, ~1 MB of memory at 256x256)
MIN_INTERVAL_S = 1.0  # at most one reference per this long
QUIET_S = 1.0  # a slot is reused only after going unused this long
# Frames between two measurements: each measures one region, in turn (a region ~2.4 ms at 256x256 on
# a CPU; both on one frame made it the sender's slowest after the keyframe check), so with two
# regions each is measured every second frame.
ERRORS_EVERY = 1
SWITCH = 0.8  # a region changes source only for one with this share of the current one's error (~1 dB)


@dataclass(frozen=True)
class BankPolicy:
    """The knobs of the reference bank."""

    threshold_db: float = THRESHOLD_DB
    """dB a region's rendering must stay below its level after the keyframe to call for a reference."""
    hold_s: float = HOLD_S
    """Seconds the drop must last."""
    reference_s: float = REFERENCE_S
    """Seconds after a keyframe whose frames set each region's level."""
    slots: int = SLOTS
    """References held (1..15)."""
    min_interval_s: float = MIN_INTERVAL_S
    """Seconds between two references."""
    quiet_s: float = QUIET_S
    """Seconds a slot must go unused before a new reference replaces it."""
    switch: float = SWITCH
    """A region moves to another source only when that one's error is below this share of the current one's."""
    errors_every: int = ERRORS_EVERY
    """Frames between two measurements, each of one region in turn (a choice holds in between)."""

    def __post_init__(self) -> None:
        if not 1 <= self.slots <= 15:
            raise ValueError("reference slots must be 1..15")
        if self.errors_every < 1:
            raise ValueError("the regions must be measured every 1 or more frames")
        if not self.threshold_db > 0 or not math.isfinite(self.threshold_db):
            raise ValueError("the reference threshold must be a positive number of dB")


@dataclass
class Slot:
    """One reference of the bank, as the sender knows it."""

    regions: int
    """Bit mask of the regions it holds."""
    sent_s: float
    """When it was sent (capture clock, s)."""
    acked: bool = False
    """The receiver holds it: frames may name it."""
    last_used_s: float = -math.inf
    """When a frame last drew a region from it."""
    kf_id: int = 0
    """The keyframe (modulo 256) current when it was sent: its acknowledgement names it."""


@dataclass
class ReferenceBank:
    """Sender-side state of the bank of the current keyframe."""

    n_regions: int
    """Regions of the profile (len(models.types.ReferenceRenderer.region_names))."""
    policy: BankPolicy = field(default_factory=BankPolicy)
    """Its knobs."""
    slots: dict[int, Slot] = field(default_factory=dict)
    """Slot number (1..policy.slots) -> reference."""
    region_db: list[float] = field(default_factory=list)
    """Per region, the PSNR (luma) of the last frame as the receiver draws it, dB."""
    region_level: list[float | None] = field(default_factory=list)
    """Per region, what the keyframe achieves there (None until measured), dB."""
    bad_regions: int = 0
    """Bit mask of the regions whose error has stayed high long enough to call for a reference."""
    low_regions: int = 0
    """Bit mask of the regions whose last measured error was high (held long enough or not)."""
    _choice: list[int] = field(default_factory=list)
    _last_sent_s: float = -math.inf
    _keyframe_s: float = 0.0
    _first: list[list[float]] = field(default_factory=list)
    _bad_since: list[float | None] = field(default_factory=list)

    def reset(self, now: float, clear: bool = False) -> None:
        """A new keyframe: its regions' levels are measured anew and every region starts from it; the
        references stay, unless `clear` (the receiver has lost them)."""
        n = self.n_regions
        if clear:
            self.slots = {}
        self._choice = [0] * n
        self._last_sent_s = now  # the keyframe itself was just sent: give it time to serve
        self._keyframe_s = now
        self.region_db, self.region_level, self._first = [math.nan] * n, [None] * n, [[] for _ in range(n)]
        self._bad_since, self.bad_regions, self.low_regions = [None] * n, 0, 0

    def choose(self, errors: list[dict[int, float]], now: float) -> tuple[int, ...]:
        """Per region, the slot to draw it from (0: the keyframe), given per region each held source's
        error for this frame (models.types.ReferenceRenderer.region_errors); a region without
        errors ({}: not measured this frame) keeps its choice."""
        if len(errors) != self.n_regions:
            return (0,) * self.n_regions
        out = []
        for r, errs in enumerate(errors):
            if not errs:
                out.append(self._hold(r, now))
                continue
            usable = {n: e for n, e in errs.items() if n == 0 or (n in self.slots and self.slots[n].acked)}
            if 0 not in usable:
                usable[0] = float("inf")
            best = min(usable, key=usable.__getitem__)
            current = self._choice[r] if self._choice[r] in usable else 0
            pick = best if usable[best] < self.policy.switch * usable[current] else current
            self._choice[r] = pick
            if pick:
                self.slots[pick].last_used_s = now
            out.append(pick)
            self._observe(r, usable[pick], now)
        return tuple(out)

    def keep(self, now: float) -> tuple[int, ...]:
        """The current choice again, for a frame that is not measured (see ERRORS_EVERY)."""
        return tuple(self._hold(r, now) for r in range(self.n_regions)) if self._choice else (0,) * self.n_regions

    def _hold(self, r: int, now: float) -> int:
        """Region r's current source again (a frame does not measure it); drawing from it is a use."""
        n = self._choice[r]
        if n:
            self.slots[n].last_used_s = now
        return n

    def _observe(self, r: int, mse: float, now: float) -> None:
        """Track region r's error as drawn; sets its bit of bad_regions when it has stayed high."""
        db = psnr_of_mse(mse)
        self.region_db[r] = db
        level = self.region_level[r]
        if now - self._keyframe_s <= self.policy.reference_s or level is None:
            self._first[r].append(db)
            self.region_level[r] = float(np.percentile(self._first[r], LEVEL_PERCENTILE))
            return
        if db > level - self.policy.threshold_db:
            self._bad_since[r] = None
            self.bad_regions &= ~(1 << r)
            self.low_regions &= ~(1 << r)
            return
        self.low_regions |= 1 << r
        since = self._bad_since[r]
        if since is None:
            self._bad_since[r] = since = now
        if now - since >= self.policy.hold_s:
            self.bad_regions |= 1 << r

    def allocate(self, now: float) -> int | None:
        """A slot for a new reference now, or None (too soon after the last one, or every slot in use)."""
        if now - self._last_sent_s < self.policy.min_interval_s:
            return None
        for n in range(1, self.policy.slots + 1):
            if n not in self.slots:
                return n
        free = [
            n
            for n, s in self.slots.items()
            if n not in self._choice and now - max(s.last_used_s, s.sent_s) >= self.policy.quiet_s
        ]
        return min(free, key=lambda n: max(self.slots[n].last_used_s, self.slots[n].sent_s)) if free else None

    def add(self, slot: int, regions: int, now: float, kf_id: int = 0) -> None:
        """A reference was sent in `slot` while keyframe `kf_id` was current; frames name it once
        acknowledged."""
        self.slots[slot] = Slot(regions, now, kf_id=kf_id)
        self._last_sent_s = now
        for r in range(self.n_regions):  # their error must build up again before another
            if regions >> r & 1:
                self._bad_since[r] = None
        self.bad_regions &= ~regions
        self.low_regions &= ~regions

    @property
    def reference_regions(self) -> int:
        """What a reference sent now covers: the regions that call for one, and with them every
        region that is drawn badly now too. Regions are measured in turn, so two that go bad
        together (a laugh: mouth and eyes) rarely call on the same frame, and a reference holds
        each one's picture for a few hundred bytes more rather than a second reference a second later."""
        return self.bad_regions | self.low_regions if self.bad_regions else 0

    def ack(self, slot: int, kf_id: int = 0) -> None:
        """The receiver holds the reference sent in `slot` under keyframe `kf_id` (an acknowledgement of
        a picture the slot no longer holds is ignored)."""
        if slot in self.slots and self.slots[slot].kf_id == kf_id:
            self.slots[slot].acked = True
