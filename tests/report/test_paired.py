"""Paired per-image differences: the interval, McNemar's exact test, and the held / contradicted / inconclusive rule."""

import math

import pytest

from robustft.report import paired_difference, verdict


def test_one_pair_gives_the_discordant_counts_and_mcnemars_exact_p():
    better, than = "1100111000", "1000001001"  # b only: images 1, 4, 5; t only: image 9
    out = paired_difference([better], [than])
    assert out["difference"] == pytest.approx(0.2) and out["n"] == 10
    assert (out["b_only"], out["t_only"]) == (3, 1)
    assert out["p_mcnemar"] == pytest.approx(2 * (1 + 4) / 16)  # P(X <= 1), X ~ Bin(4, 1/2), doubled
    d = [0, 1, 0, 0, 1, 1, 0, 0, 0, -1]
    sd = math.sqrt(sum((x - 0.2) ** 2 for x in d) / 9)
    assert out["ci95"] == [pytest.approx(0.2 - 1.959964 * sd / math.sqrt(10)),
                           pytest.approx(0.2 + 1.959964 * sd / math.sqrt(10))]
    assert out["mdd80"] == pytest.approx((1.959964 + 0.841621) * sd / math.sqrt(10))


def test_identical_models_have_a_zero_width_interval_and_p_one():
    out = paired_difference(["0110"] * 2, ["0110"] * 3)
    assert out["ci95"] == [0.0, 0.0] and "p_mcnemar" not in out, "McNemar only for one model per side"
    assert paired_difference(["0110"], ["0110"])["p_mcnemar"] == 1.0


def test_flags_of_different_images_are_refused():
    with pytest.raises(ValueError, match="same images"):
        paired_difference(["0101"], ["010"])


@pytest.mark.parametrize("ci,tolerance,expected", [
    ((0.01, 0.05), None, "held"), ((-0.05, -0.01), None, "contradicted"), ((-0.01, 0.05), None, "inconclusive"),
    ((-0.004, 0.006), 0.01, "held"), ((0.02, 0.03), 0.01, "contradicted"), ((-0.03, -0.02), 0.01, "contradicted"),
    ((-0.004, 0.02), 0.01, "inconclusive"), ((0.0, 0.0), None, "inconclusive")])
def test_verdict_rule(ci, tolerance, expected):
    assert verdict(ci, tolerance) == expected
