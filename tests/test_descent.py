"""Descent detection: real peaks are the ones whose rise and fall leave the seed band."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from benchmark.report.descent import find_descents


def flat(n: int, hw: float = 0.1) -> list[float]:
    return [hw] * n


def test_one_peak_is_double_descent_at_the_right_x() -> None:
    x = [1, 2, 4, 8, 16, 32, 64, 128]
    mean = [3.0, 2.5, 2.0, 2.6, 3.2, 2.4, 1.8, 1.5]
    d = find_descents(x, mean, flat(8))
    assert d.judged
    assert d.n_peaks == 1 and d.n_descents == 2
    assert d.descent_type == "double descent"
    assert d.peak_x == [16.0]
    (peak,) = d.peaks
    assert peak.index == 4 and peak.value == 3.2
    # The widest margins: from the valley at x=4, to the lowest point after the peak.
    assert (peak.rise_from, peak.fall_to) == (2, 7)
    assert peak.rise == pytest.approx(1.2) and peak.fall == pytest.approx(1.7)


def test_two_peaks_are_triple_descent() -> None:
    x = [1, 2, 3, 4, 5, 6]
    mean = [3.0, 2.0, 2.8, 1.8, 2.5, 1.2]
    d = find_descents(x, mean, flat(6))
    assert d.n_peaks == 2 and d.n_descents == 3
    assert d.descent_type == "triple descent"
    assert d.peak_x == [3.0, 5.0]


def test_a_peak_within_the_noise_is_not_real() -> None:
    # A local maximum (2.15) rises 0.15 over its valley: less than the combined 0.2.
    x = [1, 2, 3, 4, 5]
    mean = [3.0, 2.0, 2.15, 2.0, 1.5]
    d = find_descents(x, mean, flat(5))
    assert d.n_peaks == 0 and d.descent_type == "single descent"
    # The same curve with narrow bands has the peak: the interval, not the shape, decides.
    assert find_descents(x, mean, flat(5, 0.05)).peak_x == [3.0]


def test_rise_without_a_significant_fall_is_not_a_peak() -> None:
    d = find_descents([1, 2, 3, 4], [1.0, 2.0, 3.0, 2.9], flat(4))
    assert d.n_peaks == 0


def test_combined_interval_is_the_sum_of_both_half_widths() -> None:
    # Rise and fall of 1.0; the peak's half-width 0.95 plus 0.1 exceeds it, 0.85 does not.
    assert find_descents([1, 2, 3], [1.0, 2.0, 1.0], [0.1, 0.95, 0.1]).n_peaks == 0
    assert find_descents([1, 2, 3], [1.0, 2.0, 1.0], [0.1, 0.85, 0.1]).n_peaks == 1
    # The valley's own band counts too.
    assert find_descents([1, 2, 3], [1.0, 2.0, 1.0], [0.95, 0.1, 0.1]).n_peaks == 0


def test_monotone_noisy_curve_with_realistic_bands_has_no_peak() -> None:
    # A falling loss that flattens out, three seeds with noise sd 0.05 (this draw leaves
    # two local maxima that rise and fall in the mean: a detector without the band sees
    # them, one with the seeds' t-interval must not).
    rng = np.random.default_rng(119)
    x = np.geomspace(8, 1024, 12)
    truth = 1.0 + 2.0 * np.exp(-x / 100)
    seeds = truth[None, :] + rng.normal(0, 0.05, size=(3, x.size))
    mean = seeds.mean(axis=0)
    hw = stats.t.ppf(0.975, 2) * seeds.std(axis=0, ddof=1) / math.sqrt(3)
    assert find_descents(x, mean, np.zeros(x.size)).n_peaks == 2
    d = find_descents(x, mean, hw)
    assert d.judged and d.n_peaks == 0 and d.descent_type == "single descent"


def test_plateau_top_is_one_peak_at_its_first_point() -> None:
    d = find_descents([1, 2, 3, 4, 5, 6], [3.0, 1.0, 4.0, 4.0, 4.0, 1.0], flat(6))
    assert d.n_peaks == 1 and d.peak_x == [3.0]


def test_plateau_on_a_falling_curve_is_no_peak() -> None:
    d = find_descents(range(7), [5.0, 4.0, 3.0, 3.0, 3.0, 2.0, 1.0], flat(7))
    assert d.n_peaks == 0


def test_noisy_top_gives_one_peak_at_the_highest_point() -> None:
    # 5.0 falls only 0.3 (< 0.4) before the curve climbs past it: the peak is 5.2.
    d = find_descents(range(5), [1.0, 5.0, 4.7, 5.2, 1.0], flat(5, 0.2))
    assert d.n_peaks == 1 and d.peak_x == [3.0]


def test_after_a_peak_the_rise_is_measured_from_its_valley() -> None:
    # 3.3 stands 2.3 over the start but only 0.3 over the valley after the real peak.
    d = find_descents(range(5), [1.0, 5.0, 3.0, 3.3, 1.0], flat(5, 0.2))
    assert d.n_peaks == 1 and d.peak_x == [1.0]


def test_the_ends_are_never_peaks() -> None:
    # Highest at the start: nothing rose to it; the real peak is inside.
    d = find_descents(range(5), [5.0, 3.0, 1.0, 3.5, 1.0], flat(5))
    assert d.peak_x == [3.0]
    # Highest at the end: nothing falls after it (the sweep ends climbing).
    d = find_descents(range(5), [1.0, 3.0, 1.0, 2.0, 5.0], flat(5))
    assert d.peak_x == [1.0]
    assert find_descents(range(3), [1.0, 2.0, 3.0], flat(3)).n_peaks == 0


def test_one_seed_everywhere_is_not_judged() -> None:
    d = find_descents(range(5), [1.0, 9.0, 1.0, 9.0, 1.0], [None] * 5)
    assert not d.judged and d.n_peaks == 0 and d.descent_type == "not judged"
    assert "two or more seeds" in (d.reason or "")
    # A point without a band can neither be a peak nor the valley a peak is measured from.
    d = find_descents(range(5), [1.0, 9.0, 1.0, 9.0, 1.0], [0.1, None, 0.1, 0.1, 0.1])
    assert d.peak_x == [3.0]


def test_quality_curves_peak_downwards() -> None:
    acc = [0.9, 0.8, 0.6, 0.85, 0.9]
    d = find_descents(range(5), acc, flat(5, 0.02), lower_is_better=False)
    assert d.peak_x == [2.0] and d.peaks[0].value == 0.6
    assert d.peaks[0].rise == pytest.approx(0.3) and d.peaks[0].fall == pytest.approx(0.3)
    assert find_descents(range(5), acc, flat(5, 0.02)).n_peaks == 0


def test_missing_means_are_skipped_and_indices_kept() -> None:
    d = find_descents(range(6), [3.0, None, 1.0, 3.0, math.nan, 1.0], flat(6))
    assert [p.index for p in d.peaks] == [3]
    assert (d.peaks[0].rise_from, d.peaks[0].fall_to) == (2, 5)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        find_descents([1, 1, 2], [1.0, 2.0, 1.0], flat(3))
    with pytest.raises(ValueError, match="negative"):
        find_descents([1, 2, 3], [1.0, 2.0, 1.0], [0.1, -0.1, 0.1])
    with pytest.raises(ValueError, match="length"):
        find_descents([1, 2], [1.0, 2.0, 1.0], flat(3))


def test_names_say_what_the_bands_support() -> None:
    small = [0.05] * 5
    # Falls, peaks, falls: double descent.
    assert find_descents(range(5), [3, 1, 3, 1, 0.5], small).descent_type == "double descent"
    # Only rises to a peak and falls back: not a double descent.
    rf = find_descents(range(5), [1, 2, 3, 2, 1], small)
    assert rf.n_peaks == 1 and not rf.initial_descent and rf.descent_type == "rise and fall"
    # No peak: falling, still rising at the end, or nothing beyond the bands.
    assert find_descents(range(4), [4, 3, 2, 1], small[:4]).descent_type == "single descent"
    rising = find_descents(range(4), [1, 2, 3, 4], small[:4])
    assert rising.descent_type == "rising, no peak in range"
    dip_then_rise = find_descents(range(4), [3, 1, 2, 3], small[:4])
    assert dip_then_rise.descent_type == "rising, no peak in range"
    flat = find_descents(range(4), [1, 1.01, 0.99, 1], [0.1] * 4)
    assert flat.descent_type == "flat within the bands"


def test_a_quality_curve_is_named_as_drawn() -> None:
    small = [0.01] * 5
    up = find_descents(range(4), [0.5, 0.7, 0.9, 0.99], small[:4], lower_is_better=False)
    assert up.descent_type == "single ascent"
    best_then_worse = find_descents(
        range(4), [0.5, 0.95, 0.7, 0.6], small[:4], lower_is_better=False
    )
    assert best_then_worse.descent_type == "falling, no dip in range"
    dip = find_descents(range(5), [0.5, 0.9, 0.6, 0.95, 0.99], small, lower_is_better=False)
    assert dip.n_peaks == 1 and dip.descent_type == "double ascent"
