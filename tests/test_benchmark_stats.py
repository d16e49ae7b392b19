"""The benchmarks' interval and multiplicity helpers (benchmarks/phantom_eval.py): the paired t-interval is scipy's
paired t-test read as an interval, Holm's adjustment is the textbook step-down."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from phantom_eval import holm, paired_t  # noqa: E402


def test_paired_t_matches_scipy_and_covers_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.8, 0.02, 10), rng.normal(0.79, 0.02, 10)
    ci = paired_t(a, b)
    ref = stats.ttest_rel(a, b)
    low, high = ref.confidence_interval(0.95)
    assert ci["p"] == pytest.approx(ref.pvalue) and (ci["lo"], ci["hi"]) == pytest.approx((low, high))
    intervals = [paired_t(d, np.zeros(5)) for d in rng.normal(0, 1, (400, 5))]
    hits = sum(c["lo"] <= 0 <= c["hi"] for c in intervals)
    assert 0.92 <= hits / 400 <= 0.98  # 5 units: the t-interval covers ~0.95 (a percentile bootstrap ~0.84)
    assert np.isnan(paired_t([0.5], [0.4])["lo"])


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, float("nan"), 0.001])[2] == pytest.approx(0.002) and np.isnan(holm([float("nan")])[0])
