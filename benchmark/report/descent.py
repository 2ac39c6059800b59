"""Descent detection: the peaks of a noisy curve that stand out of its seed band.

A test-loss curve over model size (or training steps) that falls, rises to a peak near the
interpolation threshold and falls again shows "double descent" (Belkin et al. 2019,
arXiv:1812.11118; Nakkiran et al. 2019, arXiv:1912.02292); two peaks make "triple
descent". With a few seeds per point, every curve has local maxima; this module keeps only
the ones its 95% intervals support.

Definitions, for points ``i`` in order of x, with mean ``m`` and half-width ``h`` (of a
95% interval over seeds; ``inf`` or NaN where a point has none):

- ``i`` *rises* significantly from ``j`` (``j < i``) when ``m[i] - m[j] > h[i] + h[j]``:
  the two intervals do not overlap. ``j`` ranges over the points after the previous real
  peak (or from the start): the rise is measured from the valley since then.
- ``i`` *falls* significantly to ``k`` (``k > i``) when ``m[i] - m[k] > h[i] + h[k]``,
  with ``k`` before the next point higher than ``m[i]`` (or the end): the fall is measured
  to the valley before the curve climbs past the peak again.
- ``i`` is a *real peak* when it rises significantly from some ``j`` and falls
  significantly to some ``k``. Points are judged from left to right; after a real peak,
  the next one must rise significantly from a point after it.

Consequences: a point without an interval (one seed) is never a peak nor a witness; a
curve's first point cannot be a peak (nothing rose to it) nor its last (nothing falls
after it: a sweep that ends still climbing has not descended again); on a plateau of
equal values only its first point can be the peak, and only once; on a noisy top the
highest point is the peak (a lower point's fall is cut short by the higher one after it);
a monotone curve, however noisy, has no real peak unless its noise leaves the band.

``n_peaks`` counts the real peaks; ``n_descents = n_peaks + 1`` counts the falling
stretches the peaks separate, the papers' convention: one peak is "double descent", two
"triple descent", but only when the curve also falls significantly before its first peak
(``initial_descent``); a curve that only rises to its peak and falls back is named "rise
and fall". Without a peak, the name says what the bands support: "single descent" (it
falls significantly somewhere and never rises significantly), "rising, no peak in range"
(a sweep that ends still climbing, or a curve that falls and then rises), or "flat within
the bands". For a quality (``lower_is_better=False``: AUROC) the same judgement runs on
the loss direction and the names describe the curve as drawn: "single ascent", "double
ascent", "fall and rise", "falling, no dip in range".

The intervals are the caller's: per point, the seeds' t-interval, which
``report.curves`` floors with the runs' own test-set intervals (seeds that agree exactly
would otherwise make any wiggle significant) and which it thins to at most
``MAX_JUDGED_POINTS`` points along a step axis (each point is compared with every other,
so a long curve would show false peaks by multiplicity). With three seeds the rule is
conservative (the bands must not overlap: a difference of about 5 seed standard
deviations). A paired test (each seed's difference between two points) was tried and
dropped: it called more false peaks, the multiplicity of comparing every pair. The
measured false-peak rates: ``docs/methods/descent-ae.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DESCENT_NAMES = {1: "single", 2: "double", 3: "triple", 4: "quadruple"}
MAX_JUDGED_POINTS = 12


@dataclass(frozen=True)
class Peak:
    """One real peak: its index and x, its mean, and the points its significant rise and
    fall are measured against (the ones with the widest margin beyond the intervals)."""

    index: int
    x: float
    value: float
    rise_from: int
    fall_to: int
    rise: float  # |m[i] - m[rise_from]|, in the curve's units
    fall: float  # |m[i] - m[fall_to]|


@dataclass(frozen=True)
class Descents:
    """What ``find_descents`` found. ``judged`` is False when no two points had intervals
    (fewer than two seeds everywhere): then no peak could be real, and ``reason`` says so."""

    peaks: tuple[Peak, ...]
    judged: bool = True
    reason: str | None = None
    # Whether the bands show the curve falling before its first peak; and, for a curve
    # without a peak, whether they show it falling or rising anywhere.
    initial_descent: bool = False
    falls: bool = False
    rises: bool = False
    # A quality (AUROC, accuracy) is judged as its loss direction (-value); its names are
    # turned back so that they describe the curve as drawn ("single ascent").
    higher_is_better: bool = False

    @property
    def n_peaks(self) -> int:
        return len(self.peaks)

    @property
    def n_descents(self) -> int:
        """The falling stretches the peaks separate: ``n_peaks + 1``."""
        return self.n_peaks + 1

    @property
    def descent_type(self) -> str:
        """``single descent`` (no real peak), ``double descent`` (one), ``triple descent``
        (two), ...; ``not judged`` when there were no intervals to judge by."""
        if not self.judged:
            return "not judged"
        q = self.higher_is_better
        if not self.peaks:
            if self.rises:
                return "falling, no dip in range" if q else "rising, no peak in range"
            if not self.falls:
                return "flat within the bands"
            return "single ascent" if q else "single descent"
        if not self.initial_descent:
            if self.n_peaks == 1:
                return "fall and rise" if q else "rise and fall"
            kind = "dips, no first ascent" if q else "peaks, no first descent"
            return f"{self.n_peaks} {kind}"
        name = DESCENT_NAMES.get(self.n_descents, f"{self.n_descents}-fold")
        return f"{name} {'ascent' if q else 'descent'}"

    @property
    def peak_x(self) -> list[float]:
        return [p.x for p in self.peaks]


def _as_array(values: Sequence[float | None]) -> np.ndarray:
    return np.asarray([math.nan if v is None else float(v) for v in values], dtype=float)


def find_descents(
    x: Sequence[float],
    mean: Sequence[float | None],
    half_width: Sequence[float | None],
    *,
    lower_is_better: bool = True,
) -> Descents:
    """The real peaks of a curve (module docstring), in order of x.


    ``x`` strictly increasing; ``mean`` the mean over seeds at each x (None/NaN: the point
    is left out); ``half_width`` its 95% interval's half-width (None/NaN: no interval, as
    with one seed). ``lower_is_better`` False: the curve is a quality (accuracy, AUROC)
    and its peaks of loss are dips, so the detector runs on ``-mean`` (a peak's value is
    the curve's own; its rise and fall are sizes, positive)."""
    xs, ms, hs = _as_array(x), _as_array(mean), _as_array(half_width)
    if not (len(xs) == len(ms) == len(hs)):
        raise ValueError(
            f"x, mean and half_width differ in length: {len(xs)}, {len(ms)}, {len(hs)}"
        )
    if np.isnan(xs).any() or (np.diff(xs) <= 0).any():
        raise ValueError("x must be finite and strictly increasing")
    if (hs < 0).any():
        raise ValueError("a half-width cannot be negative")
    keep = np.isfinite(ms)
    xs, ms, hs = xs[keep], ms[keep], hs[keep]
    hs = np.where(np.isfinite(hs), hs, math.inf)
    sign = 1.0 if lower_is_better else -1.0
    m = sign * ms
    with_band = int(np.isfinite(hs).sum())
    if with_band < 2:
        reason = (
            "no point has an interval (one seed each): peaks need two or more seeds"
            if with_band == 0
            else "only one point has an interval: peaks need two or more seeds at two points"
        )
        return Descents(peaks=(), judged=False, reason=reason)

    n = len(m)
    threshold = hs[:, None] + hs[None, :]  # the bands must not overlap
    peaks: list[Peak] = []
    start = 0  # the rise is measured from points at or after this index
    for i in range(n):
        if not math.isfinite(hs[i]):
            continue
        rise_margins = [(m[i] - m[j] - threshold[i, j], j) for j in range(start, i)]
        rise = max(rise_margins, default=(-math.inf, -1))
        if not rise[0] > 0:
            continue
        higher = np.nonzero(m[i + 1 :] > m[i])[0]
        stop = i + 1 + int(higher[0]) if higher.size else n
        fall_margins = [(m[i] - m[k] - threshold[i, k], k) for k in range(i + 1, stop)]
        fall = max(fall_margins, default=(-math.inf, -1))
        if not fall[0] > 0:
            continue
        j, k = rise[1], fall[1]
        peaks.append(
            Peak(
                index=int(np.nonzero(keep)[0][i]),
                x=float(xs[i]),
                value=float(ms[i]),
                rise_from=int(np.nonzero(keep)[0][j]),
                fall_to=int(np.nonzero(keep)[0][k]),
                rise=float(m[i] - m[j]),
                fall=float(m[i] - m[k]),
            )
        )
        start = i + 1

    def significant(a: int, b: int) -> bool:  # m[a] above m[b] beyond both intervals
        return bool(m[a] - m[b] > threshold[a, b])

    if peaks:
        first = int(np.searchsorted(np.nonzero(keep)[0], peaks[0].rise_from))
        initial = any(significant(j, k) for k in range(first + 1) for j in range(k))
        return Descents(
            peaks=tuple(peaks),
            initial_descent=initial,
            falls=True,
            rises=True,
            higher_is_better=not lower_is_better,
        )
    pairs = [(j, k) for k in range(n) for j in range(k)]
    return Descents(
        peaks=(),
        falls=any(significant(j, k) for j, k in pairs),
        rises=any(significant(k, j) for j, k in pairs),
        higher_is_better=not lower_is_better,
    )
