"""Who may hold a signaling connection before proving the token: limits idle or slow clients cannot exhaust.

A connection is "unproven" from accept until its caller proves the token (with no token set:
until it sends a valid offer), which an fvcall caller does within one round trip. Unproven
connections are bounded per address and in total; when a bound is reached the OLDEST unproven
connection is cut to make room, never the newcomer, so a flood or a pool of idle sockets only
churns itself and a caller who proves the token is never refused because of them. Proven
connections leave the pool. Refusals are logged with the address, at most one line per address
per LOG_INTERVAL_S (with the count), so a flood cannot flood the log.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_UNPROVEN = 64  # unproven connections held at once, all addresses together
MAX_UNPROVEN_PER_ADDRESS = 8  # ... and from one address (a NAT may hide several clients)
LOG_INTERVAL_S = 5.0


@dataclass
class _Pending:
    address: str
    cut: Callable[[], None]
    """Close this connection now."""


@dataclass
class Admission:
    """The pool of unproven signaling connections of one listener."""

    log: Callable[[str], None]
    """Where refusals are reported (one line each)."""
    max_unproven: int = MAX_UNPROVEN
    """Bound on unproven connections held at once."""
    max_per_address: int = MAX_UNPROVEN_PER_ADDRESS
    """Bound on unproven connections from one address."""
    cut_count: int = 0
    """Unproven connections cut to make room (for tests and the summary)."""
    _pending: OrderedDict[int, _Pending] = field(default_factory=OrderedDict)
    _next: int = 0
    _logged: dict[str, tuple[float, int]] = field(default_factory=dict)

    def admit(self, address: str, cut: Callable[[], None]) -> int:
        """A new connection from address; returns its ticket. May cut older unproven ones."""
        same = [k for k, p in self._pending.items() if p.address == address]
        if len(same) >= self.max_per_address:
            self._cut(same[0], f"more than {self.max_per_address} unauthenticated connections from it")
        if len(self._pending) >= self.max_unproven:
            self._cut(next(iter(self._pending)), f"more than {self.max_unproven} unauthenticated connections")
        self._next += 1
        self._pending[self._next] = _Pending(address, cut)
        return self._next

    def proven(self, ticket: int) -> None:
        """The caller proved the token (or sent a valid open offer): no longer subject to the limits."""
        self._pending.pop(ticket, None)

    def leave(self, ticket: int) -> None:
        """The connection ended."""
        self._pending.pop(ticket, None)

    def cut_all(self) -> None:
        """Close every unproven connection (the listener is shutting down)."""
        while self._pending:
            _, p = self._pending.popitem(last=False)
            p.cut()

    def unproven(self) -> int:
        return len(self._pending)

    def refused(self, address: str, reason: str) -> None:
        """Log a refusal, rate-limited per address."""
        now = time.monotonic()
        last, count = self._logged.get(address, (-LOG_INTERVAL_S, 0))
        if now - last < LOG_INTERVAL_S:
            self._logged[address] = (last, count + 1)
            return
        more = f" (and {count} more refusals in the last {now - last:.0f} s)" if count else ""
        self._logged[address] = (now, 0)
        if len(self._logged) > 4 * self.max_unproven:  # forget quiet addresses; keep the dict small
            self._logged = {a: v for a, v in self._logged.items() if now - v[0] < LOG_INTERVAL_S}
        self.log(f"refused a caller from {address or '?'}: {reason}{more}")

    def _cut(self, ticket: int, reason: str) -> None:
        p = self._pending.pop(ticket)
        self.cut_count += 1
        self.refused(p.address, f"cut: {reason}")
        p.cut()
