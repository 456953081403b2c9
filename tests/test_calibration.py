"""Temperature scaling, calibration scores and the acceptance rule on synthetic scores with known behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import softmax
from scipy.stats import binomtest

from prodcat.acceptance import (
    AcceptanceRule,
    bounded_threshold,
    coverage_at_precision,
    precision_lower_bound,
    risk_coverage_curve,
    selective_scores,
)
from prodcat.calibration import (
    TemperatureScaling,
    brier_score,
    calibration_scores,
    expected_calibration_error,
    fit_temperature,
    log_loss,
    reliability_bins,
    scale_temperature,
    top_label_confidence,
)


def _sample(n: int, C: int, rng: np.random.Generator, *, sharpen: float) -> tuple[np.ndarray, np.ndarray]:
    """(scores (n, C), labels (n,)): labels drawn from softmax(logits), scores = softmax(sharpen * logits)
    (sharpen > 1: over-confident, < 1: under-confident, 1: calibrated)."""
    logits = rng.normal(0, 2.0, size=(n, C))
    true = softmax(logits, axis=1)
    y = np.array([rng.choice(C, p=p) for p in true])
    return softmax(sharpen * logits, axis=1), y


def test_temperature_scaling_fixes_over_confidence_on_fresh_rows() -> None:
    rng = np.random.default_rng(0)
    P_fit, y_fit = _sample(3000, 6, rng, sharpen=2.5)
    P_new, y_new = _sample(3000, 6, rng, sharpen=2.5)
    t = fit_temperature(P_fit, y_fit)
    assert t == pytest.approx(2.5, rel=0.15)  # undoes the sharpening
    before, after = calibration_scores(P_new, y_new), calibration_scores(scale_temperature(P_new, t), y_new)
    assert (
        after["nll"] < before["nll"] and after["ece"] < before["ece"] / 2 and after["brier"] < before["brier"]
    )
    assert after["accuracy"] == before["accuracy"]  # the ranking of classes never changes


def test_temperature_below_one_sharpens_under_confident_scores() -> None:
    rng = np.random.default_rng(1)
    P, y = _sample(3000, 5, rng, sharpen=0.4)
    t = fit_temperature(P, y)
    assert t < 0.6
    assert log_loss(scale_temperature(P, t), y) < log_loss(P, y)


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 30),
    st.integers(2, 8),
    st.floats(0.05, 20),
    st.integers(0, 2**31 - 1),
)
def test_scaled_rows_are_distributions_with_the_same_argmax(n: int, C: int, t: float, seed: int) -> None:
    P = np.random.default_rng(seed).dirichlet(np.ones(C), size=n)
    Q = scale_temperature(P, t)
    np.testing.assert_allclose(Q.sum(1), 1.0, atol=1e-9)
    assert (Q.argmax(1) == P.argmax(1)).all()


def test_ece_is_small_for_calibrated_and_large_for_over_confident_scores() -> None:
    rng = np.random.default_rng(2)
    conf = rng.uniform(0.3, 1.0, 20000)
    right = rng.uniform(size=conf.size) < conf
    for strategy in ("mass", "width"):
        assert expected_calibration_error(conf, right, strategy=strategy) < 0.02
        assert expected_calibration_error(np.sqrt(conf), right, strategy=strategy) > 0.05


def test_reliability_bins_count_every_row_once_and_equal_mass_bins_are_balanced() -> None:
    rng = np.random.default_rng(3)
    conf = rng.beta(8, 1, 3000)  # piled up near 1, like a good classifier
    right = rng.uniform(size=conf.size) < conf
    mass = reliability_bins(conf, right, n_bins=10, strategy="mass")
    width = reliability_bins(conf, right, n_bins=10, strategy="width")
    assert mass["count"].sum() == width["count"].sum() == 3000
    assert mass["count"].max() - mass["count"].min() <= 2
    assert width["count"].max() > 5 * width["count"].min()
    with pytest.raises(ValueError, match="strategy"):
        reliability_bins(conf, right, strategy="log")


def test_brier_score_bounds() -> None:
    y = np.array([0, 1, 2, 1])
    assert brier_score(np.eye(3)[y], y) == 0.0
    assert brier_score(np.full((4, 3), 1 / 3), y) == pytest.approx(2 / 3)
    assert brier_score(np.eye(3)[(y + 1) % 3], y) == pytest.approx(2.0)


def test_top_label_confidence_follows_the_given_prediction() -> None:
    P = np.array([[0.6, 0.4], [0.2, 0.8]])
    np.testing.assert_allclose(top_label_confidence(P), [0.6, 0.8])
    np.testing.assert_allclose(top_label_confidence(P, np.array([1, 0])), [0.4, 0.2])


@pytest.mark.parametrize(("method", "scipy_method"), [("clopper-pearson", "exact"), ("wilson", "wilson")])
def test_lower_bound_matches_scipy_one_sided(method: str, scipy_method: str) -> None:
    for k, n in [(60, 60), (95, 100), (3, 10), (0, 5), (980, 1000)]:
        # A one-sided 95% bound is the lower end of the two-sided 90% interval.
        expected = binomtest(k, n).proportion_ci(confidence_level=0.90, method=scipy_method).low
        assert precision_lower_bound(k, n, level=0.95, method=method) == pytest.approx(expected, abs=1e-9)
    assert precision_lower_bound(0, 0) == 0.0


def test_small_sample_cannot_reach_a_high_target() -> None:
    """60 right out of 60 is 100% observed but proves only ~95% at the 95% level: no threshold for 0.98."""
    conf, right = np.linspace(0.9, 1.0, 60), np.ones(60, dtype=bool)
    assert coverage_at_precision(conf, right, 0.98)["coverage"] == 1.0  # the oracle figure is fooled
    assert bounded_threshold(conf, right, target=0.98) == np.inf
    assert bounded_threshold(conf, right, target=0.9) == conf.min()


def test_risk_coverage_curve_and_coverage_at_precision_on_a_hand_example() -> None:
    conf = np.array([0.99, 0.95, 0.95, 0.9, 0.6, 0.5])
    right = np.array([True, True, False, True, True, False])
    curve = risk_coverage_curve(conf, right)
    np.testing.assert_allclose(curve["threshold"], [0.99, 0.95, 0.9, 0.6, 0.5])  # ties form one cut
    np.testing.assert_allclose(curve["coverage"], [1 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])
    np.testing.assert_allclose(curve["precision"], [1.0, 2 / 3, 3 / 4, 4 / 5, 4 / 6])
    at = coverage_at_precision(conf, right, 0.8)
    assert at["coverage"] == pytest.approx(5 / 6) and at["threshold"] == 0.6
    assert coverage_at_precision(conf, ~right, 0.99)["coverage"] == 0.0


def _stream(
    n: int, C: int, rng: np.random.Generator, *, skew: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confidence, correct, predicted class). With ``skew``, class c is right with probability conf ** k_c,
    k_c from 4 (class 0: over-confident) down to 0.25 (last class: under-confident), so that per-class thresholds
    pay; without, every class is calibrated (right with probability conf)."""
    pred = rng.integers(0, C, n)
    conf = rng.beta(4.0, 1.0, n)
    k = np.geomspace(4.0, 0.25, C)[pred] if skew else np.ones(n)
    return conf, rng.uniform(size=n) < conf**k, pred


@pytest.mark.parametrize("bound", ["clopper-pearson", "wilson"])
@pytest.mark.parametrize("target", [0.9, 0.95])
def test_acceptance_rule_meets_the_target_on_fresh_rows(bound: str, target: float) -> None:
    rng = np.random.default_rng(4)
    rule = AcceptanceRule(target_precision=target, bound=bound, min_class_rows=500)
    conf, right, pred = _stream(6000, 4, rng)
    rule.fit(conf, right, pred, n_classes=4)
    fresh = _stream(20000, 4, rng)
    scores = selective_scores(rule.accept(fresh[0], fresh[2]), fresh[1])
    assert scores["coverage"] > 0.2
    assert scores["precision"] >= target - scores["precision_se"]
    assert rule.own_threshold_.any()  # the classes have 1,500 rows each
    np.testing.assert_array_equal(rule.accept(conf, pred), conf >= rule.thresholds_[pred])


def test_per_class_thresholds_follow_class_calibration_and_small_classes_share_one() -> None:
    rng = np.random.default_rng(5)
    conf, right, pred = _stream(8000, 4, rng)
    pred[:40] = 4  # a fifth class with 40 rows: too few for its own threshold
    rule = AcceptanceRule(target_precision=0.9, min_class_rows=300).fit(conf, right, pred, n_classes=5)
    assert not rule.own_threshold_[4] and rule.thresholds_[4] == rule.global_threshold_
    own = np.flatnonzero(rule.own_threshold_)
    assert len(own) >= 2
    # the under-confident class is accepted at a lower confidence than the over-confident one
    assert rule.thresholds_[own.max()] < rule.thresholds_[own.min()]
    assert rule.fit_scores_["coverage"] > rule.fit_scores_["coverage_one_threshold_candidate"]


def test_one_threshold_wins_when_every_class_is_calibrated() -> None:
    """Accepting the most confident rows first is then already the best order: per-class bounds only cost."""
    conf, right, pred = _stream(8000, 4, np.random.default_rng(8), skew=False)
    rule = AcceptanceRule(target_precision=0.9, min_class_rows=300).fit(conf, right, pred, n_classes=4)
    assert not rule.own_threshold_.any()
    assert (rule.thresholds_ == rule.global_threshold_).all()
    assert rule.fit_scores_["coverage"] >= rule.fit_scores_["coverage_per_class_candidate"]


def test_acceptance_rule_round_trips_and_rejects_bad_state() -> None:
    rng = np.random.default_rng(6)
    conf, right, pred = _stream(8000, 4, rng)
    rule = AcceptanceRule(target_precision=0.9, min_class_rows=300).fit(conf, right, pred, n_classes=4)
    assert rule.own_threshold_.any()
    classes = ["a", "b", "c", "d"]
    back = AcceptanceRule.from_dict(rule.to_dict(classes), classes)
    np.testing.assert_array_equal(back.thresholds_, rule.thresholds_)
    np.testing.assert_array_equal(back.accept(conf, pred), rule.accept(conf, pred))
    with pytest.raises(ValueError, match="classes the model does not have"):
        AcceptanceRule.from_dict(rule.to_dict(classes), ["z"])
    bad = rule.to_dict(classes)
    bad["global_threshold"] = "high"
    with pytest.raises(ValueError, match="threshold 'global'"):
        AcceptanceRule.from_dict(bad, classes)


def test_group_temperatures_and_round_trip() -> None:
    rng = np.random.default_rng(7)
    P1, y1 = _sample(1500, 4, rng, sharpen=3.0)  # over-confident group
    P2, y2 = _sample(1500, 4, rng, sharpen=0.5)  # under-confident group
    P, y = np.vstack([P1, P2]), np.r_[y1, y2]
    groups = np.array(["a"] * 1500 + ["b"] * 1500)
    scaler = TemperatureScaling(min_group_rows=500).fit(P, y, groups=groups)
    assert scaler.group_temperatures_["a"] > 2 > 1 > 0.7 > scaler.group_temperatures_["b"]
    grouped = scaler.transform(P, groups=groups)
    assert log_loss(grouped, y) < log_loss(scaler.transform(P), y)  # one temperature cannot fix both
    unseen = scaler.transform(P[:3], groups=np.array(["c"] * 3))
    np.testing.assert_allclose(unseen, scale_temperature(P[:3], scaler.temperature_))
    back = TemperatureScaling.from_dict(scaler.to_dict())
    np.testing.assert_allclose(back.transform(P, groups=groups), grouped)
    with pytest.raises(ValueError, match="temperature 'a'"):
        TemperatureScaling.from_dict({**scaler.to_dict(), "group_temperatures": {"a": -1.0}})


def test_fits_in_blocks_of_rows_match_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """The temperature fits and the scaling run over blocks of rows (memory at thousands of classes): the
    temperatures and calibrated probabilities are those of a single block, float32 input included."""
    import prodcat.calibration as calibration

    rng = np.random.default_rng(3)
    P, y = _sample(900, 6, rng, sharpen=2.0)
    groups = np.array(["a", "b", "c"])[rng.integers(0, 3, len(y))]
    whole = TemperatureScaling(min_group_rows=100).fit(P, y, groups=groups)
    expected = whole.transform(P, groups=groups)
    monkeypatch.setattr(calibration, "_CHUNK", 64)
    for inp in (P, P.astype(np.float32)):
        blocks = TemperatureScaling(min_group_rows=100).fit(inp, y, groups=groups)
        rtol = 1e-9 if inp.dtype == np.float64 else 1e-5
        assert blocks.temperature_ == pytest.approx(whole.temperature_, rel=rtol)
        for key, t in whole.group_temperatures_.items():
            assert blocks.group_temperatures_[key] == pytest.approx(t, rel=rtol)
        np.testing.assert_allclose(blocks.transform(inp, groups=groups), expected, rtol=rtol * 10, atol=1e-7)
    assert brier_score(P.astype(np.float32), y) == pytest.approx(brier_score(P, y), rel=1e-6)
