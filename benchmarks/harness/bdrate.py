"""Bjøntegaard delta rate and bitrate ratios at equal quality.

BD-rate: log-rate as a piecewise-cubic Hermite (PCHIP) function of quality for both curves,
integrated over the quality range the two curves share; the mean log difference becomes a
percentage (negative: the test curve needs fewer bits). PCHIP instead of the original cubic
polynomial fit: it passes through every point and never overshoots between them (ITU-T VCEG-AL22
and later JVET practice).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator

MIN_POINTS = 2  # a curve needs a segment to interpolate on
MIN_OVERLAP = 1e-9  # quality units: curves touching in one point share no range


def lower_envelope(rates: Sequence[float], qualities: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The points no other point beats (lower-or-equal rate AND higher quality), by rising rate.

    The result rises strictly in both rate and quality, so quality -> log-rate is a function."""
    r = np.asarray(rates, dtype=np.float64)
    q = np.asarray(qualities, dtype=np.float64)
    ok = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[ok], q[ok]
    order = np.lexsort((-q, r))  # rising rate; at equal rate the best quality first
    keep_r: list[float] = []
    keep_q: list[float] = []
    for i in order:
        if not keep_q or q[i] > keep_q[-1]:
            if keep_r and r[i] == keep_r[-1]:
                continue  # same rate, worse quality than the one kept
            keep_r.append(float(r[i]))
            keep_q.append(float(q[i]))
    return np.array(keep_r), np.array(keep_q)


def _log_rate_of_quality(rates: np.ndarray, qualities: np.ndarray) -> PchipInterpolator:
    return PchipInterpolator(qualities, np.log10(rates), extrapolate=False)


def bd_rate(
    anchor_rates: Sequence[float], anchor_q: Sequence[float], test_rates: Sequence[float], test_q: Sequence[float]
) -> float | None:
    """Average rate difference of test vs anchor in percent at equal quality, or None without overlap.

    Each curve is first reduced to its lower envelope (a real codec's sweep is monotone up to noise)."""
    ar, aq = lower_envelope(anchor_rates, anchor_q)
    tr, tq = lower_envelope(test_rates, test_q)
    if len(ar) < MIN_POINTS or len(tr) < MIN_POINTS:
        return None
    lo, hi = max(aq[0], tq[0]), min(aq[-1], tq[-1])
    if hi - lo <= MIN_OVERLAP:
        return None
    fa, ft = _log_rate_of_quality(ar, aq), _log_rate_of_quality(tr, tq)
    mean_diff = (ft.integrate(lo, hi) - fa.integrate(lo, hi)) / (hi - lo)
    return float((10.0**mean_diff - 1.0) * 100.0)


def rate_at_quality(rates: Sequence[float], qualities: Sequence[float], quality: float) -> float | None:
    """Rate the envelope of (rates, qualities) needs for `quality`; None outside its quality range."""
    r, q = lower_envelope(rates, qualities)
    if len(r) == 0 or not np.isfinite(quality) or quality < q[0] or quality > q[-1]:
        return None
    if len(r) == 1:
        return float(r[0])
    return float(10.0 ** _log_rate_of_quality(r, q)(quality))


def ratio_at_equal_quality(
    anchor_rates: Sequence[float], anchor_q: Sequence[float], rate: float, quality: float
) -> tuple[float | None, str]:
    """(anchor rate at `quality`) / rate, and a note saying why it is None when the curves do not meet."""
    r, q = lower_envelope(anchor_rates, anchor_q)
    if len(r) == 0:
        return None, "no anchor points"
    if not np.isfinite(quality):
        return None, "no quality value for the test point"
    if quality < q[0]:
        return None, (
            f"quality {quality:.4g} is below the anchors' worst {q[0]:.4g} "
            f"(their lowest rate {r[0]:.3g} kbit/s already does better)"
        )
    if quality > q[-1]:
        return None, f"quality {quality:.4g} is above the anchors' best {q[-1]:.4g} at {r[-1]:.3g} kbit/s"
    needed = rate_at_quality(r, q, quality)
    assert needed is not None
    return needed / rate, ""
